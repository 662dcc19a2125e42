/**
 * A scriptable next hop for tests and the benchmark: an smtp-server on 127.0.0.1,
 * port 0, that records the RAW MAIL and RCPT command lines (so a test can check
 * `NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x` byte for byte) and the message
 * bytes exactly as received, and answers RCPT and DATA from a script. Replies are
 * printed exactly as the script gives them: `{ code: 550, text: '5.1.1 no such
 * user' }` goes out as `550 5.1.1 no such user` (ENHANCEDSTATUSCODES is not
 * advertised, so smtp-server adds no code of its own); a text with `\n` becomes a
 * multi-line reply. No per-message logging, so it can serve as a benchmark sink.
 */
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';

/** One scripted reply; `text` may carry an enhanced code and `\n` for more lines. */
export interface ScriptReply {
  readonly code: number;
  readonly text: string;
}

export interface NextHopScript {
  /** Advertise DSN (default true). */
  dsn?: boolean;
  /** Advertise PIPELINING (default true). */
  pipelining?: boolean;
  /** Advertise 8BITMIME (default true). */
  eightBitMime?: boolean;
  /** Advertise SMTPUTF8 (default true). */
  smtpUtf8?: boolean;
  /** Advertise STARTTLS with smtp-server's built-in test certificate (default false). */
  starttls?: boolean;
  /** Advertise `SIZE n` (default: not advertised). */
  size?: number;
  /** Refuse the connection at the greeting with this reply (then close). */
  connect?: () => ScriptReply | undefined;
  /** At MAIL: a 4xx/5xx reply refuses the sender; `'drop'` destroys the connection instead of answering. */
  mail?: (address: string) => ScriptReply | 'drop' | undefined;
  /** Per recipient: a 4xx/5xx reply refuses it; undefined or 2xx = `250 Accepted`. */
  rcpt?: (address: string) => ScriptReply | undefined;
  /** After the data: undefined = `250 OK: message queued`. */
  data?: (msg: ReceivedMessage) => ScriptReply | undefined;
  /** Milliseconds to wait before answering DATA (after the dot). */
  delayMs?: number;
}

export interface ReceivedMessage {
  /** Envelope sender as smtp-server parsed it ('' for `<>`). */
  readonly mailFrom: string;
  /** The raw MAIL command line, without CRLF. */
  readonly mailLine: string;
  /** Recipients accepted at RCPT, as smtp-server parsed them (domains as U-labels). */
  readonly rcptTo: string[];
  /** Every raw RCPT command line of the transaction in order, refused ones included. */
  readonly rcptLines: string[];
  /** The message exactly as received (dot-unstuffed, terminating `.` removed). */
  readonly body: Buffer;
  /** Whether the session was TLS-protected. */
  readonly secure: boolean;
}

export interface NextHopPeer {
  readonly port: number;
  /** Every message that reached the end of DATA (whatever the DATA reply was). */
  readonly messages: ReceivedMessage[];
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** Messages that reached the end of DATA (also counted when `keepMessages` is false). */
  readonly received: number;
  setScript(s: NextHopScript): void;
  /** Destroys every open client connection (as a crashed or impatient server would). */
  dropConnections(): void;
  close(): Promise<void>;
}

export interface NextHopOptions {
  /** Keep received messages in `messages` (default true; the benchmark turns it off). */
  keepMessages?: boolean;
}

interface RawLines {
  mailLine: string;
  rcptLines: string[];
}

/** Raw command lines of the current transaction, per session. */
const rawLines = new WeakMap<SMTPServerSession, RawLines>();

/**
 * Records raw MAIL/RCPT lines and prints multi-line script texts as multi-line
 * replies. Greets at once: smtp-server waits 100 ms to catch early talkers, which
 * would dominate a benchmark that opens connections.
 */
class RecordingConnection extends SMTPConnection {
  override init(): void {
    this._setListeners(() => this.connectionReady());
  }

  override handler_MAIL(command: Buffer, callback: () => void): void {
    rawLines.set(this.session, { mailLine: command.toString('utf8'), rcptLines: [] });
    const script = (this._server as NextHopServer).script;
    if (script.mail) {
      const address = this._parseAddressCommand('mail from', command);
      const r = address ? script.mail(address.address) : undefined;
      if (r === 'drop') {
        this._socket.destroy();
        return;
      }
      if (r && r.code >= 400) {
        this.send(r.code, r.text);
        return callback();
      }
    }
    super.handler_MAIL(command, callback);
  }

  override handler_RCPT(command: Buffer, callback: () => void): void {
    rawLines.get(this.session)?.rcptLines.push(command.toString('utf8'));
    super.handler_RCPT(command, callback);
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    if (typeof data === 'string' && data.includes('\n')) data = data.split(/\r?\n/);
    super.send(code, data, context);
  }
}

class NextHopServer extends SMTPServer {
  script: NextHopScript = {};

  override connect(socket: net.Socket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new RecordingConnection(this, socket, socketOptions);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}

function smtpError(r: ScriptReply): Error {
  return Object.assign(new Error(r.text), { responseCode: r.code });
}

function hideOptions(s: NextHopScript): Partial<SMTPServerOptions> {
  return {
    hideDSN: !(s.dsn ?? true),
    hidePIPELINING: !(s.pipelining ?? true),
    hide8BITMIME: !(s.eightBitMime ?? true),
    hideSMTPUTF8: !(s.smtpUtf8 ?? true),
    hideSTARTTLS: !(s.starttls ?? false),
    size: s.size ?? 0,
  };
}

export async function startNextHop(initial: NextHopScript = {}, opts: NextHopOptions = {}): Promise<NextHopPeer> {
  let script = initial;
  const keep = opts.keepMessages ?? true;
  const messages: ReceivedMessage[] = [];
  let connections = 0;
  let received = 0;

  const server = new NextHopServer({
    name: 'next-hop.test',
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    disabledCommands: ['AUTH'],
    closeTimeout: 200,
    ...hideOptions(script),
    onConnect(_session, cb) {
      connections++;
      const refuse = script.connect?.();
      if (refuse) return cb(smtpError(refuse));
      cb();
    },
    onRcptTo(address, _session, cb) {
      const r = script.rcpt?.(address.address);
      if (r && r.code >= 400) return cb(smtpError(r));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const lines = rawLines.get(session) ?? { mailLine: '', rcptLines: [] };
        const from = session.envelope.mailFrom;
        const msg: ReceivedMessage = {
          mailFrom: from ? from.address : '',
          mailLine: lines.mailLine,
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          rcptLines: lines.rcptLines,
          body: Buffer.concat(chunks),
          secure: session.secure,
        };
        received++;
        if (keep) messages.push(msg);
        const answer = (): void => {
          const r = script.data?.(msg);
          if (r && r.code >= 400) return cb(smtpError(r));
          cb(null, r?.text ?? 'OK: message queued');
        };
        if (script.delayMs) void sleep(script.delayMs).then(answer);
        else answer();
      });
    },
  });
  server.script = script;
  server.on('error', () => {}); // client misbehaviour is the test's business, not a crash

  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    messages,
    get connections() {
      return connections;
    },
    get received() {
      return received;
    },
    setScript(s: NextHopScript) {
      script = s;
      server.script = s;
      Object.assign(server.options, hideOptions(s));
    },
    dropConnections() {
      for (const c of server.connections) c._socket.destroy();
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
