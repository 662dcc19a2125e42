/**
 * A scriptable next hop for tests and the benchmark: an smtp-server on 127.0.0.1,
 * port 0, that records the RAW MAIL and RCPT command lines (so a test can check
 * `NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x` byte for byte) and the message
 * bytes exactly as received, and answers RCPT and DATA from a script. Replies are
 * printed exactly as the script gives them: `{ code: 550, text: '5.1.1 no such
 * user' }` goes out as `550 5.1.1 no such user` (ENHANCEDSTATUSCODES is not
 * advertised, so smtp-server adds no code of its own); a text with `\n` becomes a
 * multi-line reply. No per-message logging, so it can serve as a benchmark sink.
 *
 * The extensions of protocols.md, as a server would speak them: advertises any
 * subset of CONNEG, DRUCOF, INLINE-DSN and PRDR (their parameters refused when
 * not advertised: 504 5.5.4 for CONNEG, 555 5.5.4 for the others); answers CONNEG
 * queries per recipient (RFC 4141 shape with or without enhanced codes, the
 * `[CONNEG]` tag, not known, a refused parameter, an unparsable expression);
 * 352 at RCPT under INLINE-DSN; after the data the 353 sequence (INLINE-DSN: the
 * 352 recipients; PRDR: every accepted one, Exim's form) with per-recipient
 * verdicts and a final reply — or, for tests of the client, a broken sequence
 * (short, an extra line, lines out of order, a hang) or any raw list of replies.
 *
 * Misbehaviour, for the fault tests (test/faults/): accept TCP and never greet
 * (`greeting: 'never'`); answer a RCPT with raw bytes (`rcptRaw`: garbage, a wrong
 * code); drop the connection in the middle of the message data (`midData`); after
 * the data write raw bytes (`{ raw }`: a non-SMTP line, a multi-line reply cut
 * off), hang or drop. Each message records which recipients the peer actually
 * took responsibility for by what it wrote (`accepted`), so a test can hold the
 * relay's recipient states against it. `port` starts the peer on a given port
 * (an outage: nothing listening there yet, then the peer).
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

/** Bytes written to the socket exactly as given (CRLFs included): garbage, a wrong code, a multi-line reply cut off. */
export interface RawReply {
  readonly raw: string;
}

/** One item of a hand-written answer after the data: a reply, raw bytes, `'hang'` (stop there for good) or `'drop'` (destroy the connection). */
export type DataItem = ScriptReply | RawReply | 'hang' | 'drop';

/** The extensions of protocols.md A1 the peer can advertise. */
export type Extension = 'CONNEG' | 'DRUCOF' | 'INLINE-DSN' | 'PRDR';

/** RCPT or MAIL parameters as smtp-server parsed them (keys upper-case; a bare keyword is `true`). */
export type Params = Readonly<Record<string, string | true>>;

/**
 * The answer to a CONNEG query for one recipient: an expression (printed in
 * RFC 4141's shape: the RCPT text, then lines beginning with the tag), or a reply
 * of its own (e.g. `{ code: 504, text: '5.5.4 CONNEG not supported' }` refuses the
 * parameter). `undefined` from the script: not known (a plain positive reply).
 */
export type ConnegScript =
  | {
      /** The expression; an array is printed one part per line. */
      readonly expression: string | readonly string[];
      /** `CONNEG` (RFC 4141, default) or `[CONNEG]` (the older form). */
      readonly tag?: 'CONNEG' | '[CONNEG]';
      /** Put `2.1.5` before every line (default true). */
      readonly enhanced?: boolean;
    }
  | ScriptReply;

/** How to break the automatic 353 sequence (tests of the client's reading). */
export type SequenceBreak =
  /** The last per-recipient line is left out. */
  | 'short'
  /** The last per-recipient line is sent twice. */
  | 'extra'
  /** The first two per-recipient lines are swapped. */
  | 'swap'
  /** 353 and every per-recipient line, then nothing (the connection stays open). */
  | 'hang'
  /** 353, then nothing. */
  | 'hang-after-353';

export interface SequenceScript {
  /** INLINE-DSN: send one reply instead of the sequence when A4 allows it (default false). */
  readonly collapse?: boolean;
  /** The final reply (default: INLINE-DSN `250 2.0.0 data accepted`; PRDR by A4b's rule: 250 / 550 / 450). */
  readonly final?: ScriptReply;
  readonly break?: SequenceBreak;
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
  /** Advertise these extensions too, after the stock keywords (default none). */
  extensions?: readonly Extension[];
  /** Refuse the connection at the greeting with this reply (then close). */
  connect?: () => ScriptReply | undefined;
  /** `'never'`: accept the TCP connection and never greet (read at each new connection; counted in `withheld`). */
  greeting?: 'never';
  /** At MAIL: a 4xx/5xx reply refuses the sender; `'drop'` destroys the connection instead of answering. */
  mail?: (address: string) => ScriptReply | 'drop' | undefined;
  /**
   * Per recipient: a 4xx/5xx reply refuses it; a 2xx or 352 accepts it with that
   * reply as given (352: verdict after the data, INLINE-DSN); undefined = `250 Accepted`
   * (or the CONNEG answer, when the RCPT asked one).
   */
  rcpt?: (address: string, params: Params) => ScriptReply | undefined;
  /** The answer to `RCPT … CONNEG` (any value), asked after `rcpt` accepted; undefined = not known. */
  conneg?: (address: string) => ConnegScript | undefined;
  /** `'drop'`: destroy the connection instead of answering this RCPT; `'hang'`: never answer it. */
  rcptSilence?: (address: string) => 'drop' | 'hang' | undefined;
  /** Raw bytes to write instead of this RCPT's reply (garbage, a wrong code); the recipient is not added. */
  rcptRaw?: (address: string) => string | undefined;
  /**
   * Instead of 354 to the DATA command: these items (a 250, garbage, …), and the session
   * stays in command mode, so the message lines that follow are read as commands (as by a
   * server that never switched to data). `'hang'`/`'drop'` as in `data`.
   */
  dataCommand?: () => readonly DataItem[] | undefined;
  /** `'drop'`: destroy the connection as soon as the first chunk of this transaction's message data arrives (nothing recorded but `droppedMidData`). */
  midData?: (mailFrom: string, rcptTo: readonly string[]) => 'drop' | undefined;
  /**
   * After the data. A reply: that one reply (as always). A list: exactly those replies
   * in order (a 353 sequence written by hand); `'hang'` in it stops there for good,
   * `'drop'` destroys the connection there, a `{ raw }` item is written as is (a list
   * with raw items and no `'drop'` ends as `'hang'` does).
   * undefined: the automatic per-recipient sequence when INLINE-DSN/PRDR is in effect,
   * else `250 OK: message queued`.
   */
  data?: (msg: ReceivedMessage) => ScriptReply | readonly DataItem[] | undefined;
  /** The per-recipient verdict after the data (automatic sequence); undefined = accepted. */
  verdict?: (address: string, msg: ReceivedMessage) => ScriptReply | undefined;
  /** Shape of the automatic sequence. */
  sequence?: SequenceScript;
  /** Milliseconds to wait before answering DATA (after the dot). */
  delayMs?: number;
}

export interface ReceivedMessage {
  /** Envelope sender as smtp-server parsed it ('' for `<>`). */
  readonly mailFrom: string;
  /** The raw MAIL command line, without CRLF. */
  readonly mailLine: string;
  /** Recipients accepted at RCPT (2xx or 352), as smtp-server parsed them (domains as U-labels). */
  readonly rcptTo: string[];
  /** Every raw RCPT command line of the transaction in order, refused ones included. */
  readonly rcptLines: string[];
  /** The recipients answered 352 at RCPT, in order. */
  readonly deferred: string[];
  /** The per-recipient verdicts mode in effect for this transaction (asked on MAIL and advertised). */
  readonly verdicts?: 'INLINE-DSN' | 'PRDR';
  /** The message exactly as received (dot-unstuffed, terminating `.` removed). */
  readonly body: Buffer;
  /** Whether the session was TLS-protected. */
  readonly secure: boolean;
  /**
   * The recipients this peer took responsibility for by what it wrote after the data
   * (filled in when it answered): all accepted at RCPT after a 2xx single reply; after
   * a 353 sequence, with a 2xx final reply, those whose own line (or, under INLINE-DSN,
   * whose RCPT reply) was 2xx. Empty after a refusal, a hang, a drop, raw bytes, or a
   * sequence without its final reply.
   */
  readonly accepted: string[];
}

export interface NextHopPeer {
  readonly port: number;
  /** Every message that reached the end of DATA (whatever the DATA reply was). */
  readonly messages: ReceivedMessage[];
  /** Every command line received, in order, from every connection (no message data; empty when `keepMessages` is false). */
  readonly commands: string[];
  /** The same command lines per connection, one array per connection in the order they first spoke. */
  readonly sessions: readonly (readonly string[])[];
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** Messages that reached the end of DATA (also counted when `keepMessages` is false). */
  readonly received: number;
  /** Connections accepted and never greeted (`greeting: 'never'`). */
  readonly withheld: number;
  /** Transactions whose connection was dropped in the middle of the data (`midData`). */
  readonly droppedMidData: number;
  setScript(s: NextHopScript): void;
  /** Destroys every open client connection (as a crashed or impatient server would). */
  dropConnections(): void;
  close(): Promise<void>;
}

export interface NextHopOptions {
  /** Keep received messages in `messages` (default true; the benchmark turns it off). */
  keepMessages?: boolean;
  /** Listen on this port (default 0: any free one). */
  port?: number;
}

/** Raw command lines and extension state of the current transaction, per session. */
interface Txn {
  mailLine: string;
  rcptLines: string[];
  deferred: string[];
  verdicts?: 'INLINE-DSN' | 'PRDR';
}

const transactions = new WeakMap<SMTPServerSession, Txn>();
/** The positive RCPT reply decided for the RCPT in progress (printed instead of `250 Accepted`). */
const positiveRcpt = new WeakMap<SMTPServerSession, ScriptReply>();
/** A refusal decided for the RCPT in progress (handed to smtp-server's onRcptTo). */
const refusedRcpt = new WeakMap<SMTPServerSession, ScriptReply>();
const connectionOf = new WeakMap<SMTPServerSession, RecordingConnection>();

/** The printed form of a CONNEG answer for `address` (RFC 4141 §5 shape). */
export function connegReply(address: string, c: Exclude<ConnegScript, ScriptReply>): ScriptReply {
  const enh = c.enhanced ?? true ? '2.1.5 ' : '';
  const tag = c.tag ?? 'CONNEG';
  const parts = typeof c.expression === 'string' ? [c.expression] : c.expression;
  return { code: 250, text: [`${enh}<${address}> recipient ok`, ...parts.map((p) => `${enh}${tag} ${p}`)].join('\n') };
}

const isReply = (c: ConnegScript): c is ScriptReply => 'code' in c;

/**
 * Records raw command lines, speaks the extensions, and prints multi-line script
 * texts as multi-line replies. Greets at once: smtp-server waits 100 ms to catch
 * early talkers, which would dominate a benchmark that opens connections.
 */
class RecordingConnection extends SMTPConnection {
  private get script(): NextHopScript {
    return (this._server as NextHopServer).script;
  }

  private get advertised(): ReadonlySet<string> {
    return new Set(this.script.extensions ?? []);
  }

  override init(): void {
    const server = this._server as NextHopServer;
    this._setListeners(() => {
      if (this.script.greeting === 'never') {
        server.withheld++;
        return; // TCP accepted, no greeting: the client waits until its own time-out
      }
      this.connectionReady();
    });
  }

  /** This connection's command lines (created at its first command). */
  private commandLines?: string[];

  override _onCommand(command: Buffer, callback?: () => void): void {
    const server = this._server as NextHopServer;
    if (server.keep) {
      const line = command.toString('utf8');
      server.commands.push(line);
      if (!this.commandLines) server.sessions.push((this.commandLines = []));
      this.commandLines.push(line);
    }
    super._onCommand(command, callback);
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    const extra = this.script.extensions ?? [];
    if (extra.length > 0) {
      const send = this.send;
      this.send = (code, data, context) => {
        this.send = send;
        if (code === 250 && Array.isArray(data)) data = [...data, ...extra];
        send.call(this, code, data, context);
      };
    }
    super.handler_EHLO(command, callback);
  }

  override handler_MAIL(command: Buffer, callback: () => void): void {
    const txn: Txn = { mailLine: command.toString('utf8'), rcptLines: [], deferred: [] };
    transactions.set(this.session, txn);
    connectionOf.set(this.session, this);
    const parsed = this._parseAddressCommand('mail from', command);
    const args: Params = (parsed && parsed.args) || {};
    for (const ext of ['INLINE-DSN', 'PRDR'] as const) {
      if (args[ext] !== undefined && !this.advertised.has(ext)) {
        this.send(555, `5.5.4 ${ext} not supported`);
        return callback();
      }
    }
    if (args['INLINE-DSN'] !== undefined) txn.verdicts = 'INLINE-DSN';
    else if (args.PRDR !== undefined) txn.verdicts = 'PRDR';
    const script = this.script;
    if (script.mail) {
      const r = parsed ? script.mail(parsed.address) : undefined;
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
    transactions.get(this.session)?.rcptLines.push(command.toString('utf8'));
    positiveRcpt.delete(this.session);
    refusedRcpt.delete(this.session);
    const parsed = this._parseAddressCommand('rcpt to', command);
    if (parsed && parsed.address && this.session.envelope.mailFrom) {
      const args: Params = parsed.args || {};
      const address = parsed.address;
      const silence = this.script.rcptSilence?.(address);
      if (silence === 'drop') return void this._socket.destroy();
      if (silence === 'hang') return; // never answered (the parser waits for this callback)
      const raw = this.script.rcptRaw?.(address);
      if (raw !== undefined) {
        this._socket.write(raw);
        return callback();
      }
      if ((args.CONNEG !== undefined || args.CONPERM !== undefined) && !this.advertised.has('CONNEG')) {
        this.send(504, `5.5.4 ${args.CONNEG !== undefined ? 'CONNEG' : 'CONPERM'} not supported`);
        return callback();
      }
      if (args.DRUCOF !== undefined && !this.advertised.has('DRUCOF')) {
        this.send(555, '5.5.4 DRUCOF not supported');
        return callback();
      }
      const r = this.script.rcpt?.(address, args);
      if (r && r.code >= 400) refusedRcpt.set(this.session, r);
      else {
        let positive = r;
        if (args.CONNEG !== undefined) {
          const c = this.script.conneg?.(address);
          if (c && isReply(c) && c.code >= 400) refusedRcpt.set(this.session, c);
          else if (c) positive = isReply(c) ? c : connegReply(address, c);
        }
        if (positive && !refusedRcpt.has(this.session)) {
          positiveRcpt.set(this.session, positive);
          if (positive.code === 352) transactions.get(this.session)?.deferred.push(address);
        }
      }
    }
    super.handler_RCPT(command, callback);
  }

  override handler_DATA(command: Buffer, callback: () => void): void {
    const items = this.session.envelope.rcptTo.length > 0 ? this.script.dataCommand?.() : undefined;
    if (!items) return super.handler_DATA(command, callback);
    for (const x of items) {
      if (x === 'hang') return;
      if (x === 'drop') return void this._socket.destroy();
      if (isRaw(x)) this._socket.write(x.raw);
      else this.send(x.code, x.text);
    }
    callback();
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const positive = positiveRcpt.get(this.session);
    if (positive && code === 250 && context === 'RCPT_TO_OK') {
      positiveRcpt.delete(this.session);
      code = positive.code;
      data = positive.text;
      context = false;
    }
    if (typeof data === 'string' && data.includes('\n')) data = data.split(/\r?\n/);
    super.send(code, data, context);
  }
}

class NextHopServer extends SMTPServer {
  script: NextHopScript = {};
  /** Record commands (off for a benchmark sink, with `keepMessages: false`). */
  keep = true;
  readonly commands: string[] = [];
  readonly sessions: string[][] = [];
  withheld = 0;

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

const isRaw = (x: DataItem): x is RawReply => typeof x === 'object' && 'raw' in x;

/**
 * The recipients a hand-written answer after the data takes responsibility for:
 * nothing when it hangs, drops or holds raw bytes; a 353 sequence by position (the
 * 352 recipients under INLINE-DSN, every accepted one under PRDR) with a 2xx final
 * reply; else the first reply decides for every recipient accepted at RCPT.
 */
export function acceptedBy(msg: Pick<ReceivedMessage, 'rcptTo' | 'deferred' | 'verdicts'>, list: readonly DataItem[]): string[] {
  if (list.length === 0 || list.some((x) => x === 'hang' || x === 'drop' || isRaw(x))) return [];
  const replies = list as readonly ScriptReply[];
  const first = replies[0]!;
  if (first.code !== 353) return first.code >= 200 && first.code < 300 ? [...msg.rcptTo] : [];
  if (replies.length < 2) return [];
  const final = replies[replies.length - 1]!;
  if (final.code < 200 || final.code >= 300) return [];
  const itemised = msg.verdicts === 'INLINE-DSN' ? msg.deferred : msg.rcptTo;
  const lines = replies.slice(1, -1);
  return [...msg.rcptTo.filter((a) => !itemised.includes(a)), ...itemised.filter((_a, i) => lines[i] !== undefined && lines[i]!.code >= 200 && lines[i]!.code < 300)];
}

/**
 * The automatic replies after the data when per-recipient verdicts are in effect
 * (A4 / A4b), or undefined when one ordinary reply is due; with the recipients the
 * peer means to accept by them (each line as meant for its recipient, even when a
 * break puts it out of place; a line left out or a final reply never sent accepts no one).
 */
function verdictSequence(script: NextHopScript, msg: ReceivedMessage): { replies: DataItem[]; accepted: string[] } | undefined {
  const seq = script.sequence ?? {};
  let items: string[];
  let final: ScriptReply;
  const verdicts = (addresses: string[], accept: (a: string) => ScriptReply) => addresses.map((a) => script.verdict?.(a, msg) ?? accept(a));
  let lines: ScriptReply[];
  if (msg.verdicts === 'INLINE-DSN' && msg.deferred.length > 0) {
    items = msg.deferred;
    lines = verdicts(items, (a) => ({ code: 250, text: `2.1.5 <${a}> accepts the content` }));
    final = seq.final ?? { code: 250, text: '2.0.0 data accepted' };
    if (seq.collapse && !seq.break) {
      const acceptedAtRcpt = msg.rcptTo.length > msg.deferred.length;
      const codes = new Set(lines.map((l) => l.code));
      if (lines.every((l) => l.code < 300)) return { replies: [final], accepted: acceptedBy(msg, [final]) };
      if (!acceptedAtRcpt && codes.size === 1 && new Set(lines.map((l) => l.text.replace(/<[^>]*>\s*/, ''))).size === 1) {
        const one = { code: lines[0]!.code, text: lines[0]!.text.replace(/<[^>]*>\s*/, '') };
        return { replies: [one], accepted: acceptedBy(msg, [one]) };
      }
    }
  } else if (msg.verdicts === 'PRDR' && msg.rcptTo.length >= 2) {
    items = msg.rcptTo;
    lines = verdicts(items, (a) => ({ code: 250, text: `PRDR R=<${a}> acceptance` }));
    const ok = lines.some((l) => l.code < 300);
    const deferred = lines.some((l) => l.code >= 400 && l.code < 500);
    final = seq.final ?? (ok ? { code: 250, text: 'OK id=prdr-test' } : deferred ? { code: 450, text: 'all recipients deferred' } : { code: 550, text: 'all recipients refused' });
  } else {
    return undefined;
  }
  const head: ScriptReply = { code: 353, text: msg.verdicts === 'PRDR' ? 'PRDR content analysis beginning' : 'data looks okay but wait for confirmation' };
  /** What the peer means by the lines it writes, when it writes its final reply: `written` = the recipients given a line. */
  const meant = (written: readonly string[]): string[] =>
    final.code >= 200 && final.code < 300
      ? [...msg.rcptTo.filter((a) => !items.includes(a)), ...items.filter((a, i) => written.includes(a) && lines[i]!.code >= 200 && lines[i]!.code < 300)]
      : [];
  switch (seq.break) {
    case 'short':
      return { replies: [head, ...lines.slice(0, -1), final], accepted: meant(items.slice(0, -1)) };
    case 'extra':
      return { replies: [head, ...lines, lines[lines.length - 1]!, final], accepted: meant(items) };
    case 'swap':
      return { replies: [head, ...(lines.length >= 2 ? [lines[1]!, lines[0]!, ...lines.slice(2)] : lines), final], accepted: meant(items) };
    case 'hang':
      return { replies: [head, ...lines, 'hang'], accepted: [] };
    case 'hang-after-353':
      return { replies: [head, 'hang'], accepted: [] };
    default:
      return { replies: [head, ...lines, final], accepted: meant(items) };
  }
}

export async function startNextHop(initial: NextHopScript = {}, opts: NextHopOptions = {}): Promise<NextHopPeer> {
  let script = initial;
  const keep = opts.keepMessages ?? true;
  const messages: ReceivedMessage[] = [];
  let connections = 0;
  let received = 0;
  let droppedMidData = 0;

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
    onRcptTo(_address, session, cb) {
      const refused = refusedRcpt.get(session);
      refusedRcpt.delete(session);
      if (refused) return cb(smtpError(refused));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      let dropped = false;
      stream.on('error', () => {}); // the connection went away mid-data: nothing to record
      stream.on('data', (c: Buffer) => {
        if (dropped) return;
        if (chunks.length === 0 && script.midData) {
          const from = session.envelope.mailFrom;
          if (script.midData(from ? from.address : '', session.envelope.rcptTo.map((r) => r.address)) === 'drop') {
            dropped = true;
            droppedMidData++;
            connectionOf.get(session)?._socket.destroy();
            return;
          }
        }
        chunks.push(c);
      });
      stream.on('end', () => {
        if (dropped) return;
        const txn = transactions.get(session) ?? { mailLine: '', rcptLines: [], deferred: [] };
        const from = session.envelope.mailFrom;
        const accepted: string[] = [];
        const msg: ReceivedMessage = {
          mailFrom: from ? from.address : '',
          mailLine: txn.mailLine,
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          rcptLines: txn.rcptLines,
          deferred: txn.deferred,
          ...(txn.verdicts && { verdicts: txn.verdicts }),
          body: Buffer.concat(chunks),
          secure: session.secure,
          accepted,
        };
        received++;
        if (keep) messages.push(msg);
        const answer = (): void => {
          const scripted = script.data?.(msg);
          const auto = scripted === undefined ? verdictSequence(script, msg) : undefined;
          const r = scripted ?? auto?.replies;
          if (r === undefined) {
            accepted.push(...msg.rcptTo);
            return cb(null, 'OK: message queued');
          }
          if (!Array.isArray(r)) {
            const one = r as ScriptReply;
            accepted.push(...acceptedBy(msg, [one]));
            if (one.code >= 400) return cb(smtpError(one));
            return cb(null, one.text);
          }
          const list = r as readonly DataItem[];
          accepted.push(...(auto ? auto.accepted : acceptedBy(msg, list)));
          if (list.some((x) => x === 'hang' || x === 'drop' || isRaw(x))) {
            // Written by hand, and the DATA callback never called: the session hangs here (or is dropped).
            const conn = connectionOf.get(session);
            for (const x of list) {
              if (x === 'hang') return;
              if (x === 'drop') return void conn?._socket.destroy();
              if (isRaw(x)) conn?._socket.write(x.raw);
              else conn?.send(x.code, x.text);
            }
            return;
          }
          // smtp-server sends each element of an array as its own reply: an Error with its code, a string as 250.
          cb(null, (list as ScriptReply[]).map((x) => (x.code === 250 ? x.text : smtpError(x))) as unknown as string);
        };
        if (script.delayMs) void sleep(script.delayMs).then(answer);
        else answer();
      });
    },
  });
  server.script = script;
  server.keep = keep;
  server.on('error', () => {}); // client misbehaviour is the test's business, not a crash

  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    messages,
    commands: server.commands,
    sessions: server.sessions,
    get connections() {
      return connections;
    },
    get received() {
      return received;
    },
    get withheld() {
      return server.withheld;
    },
    get droppedMidData() {
      return droppedMidData;
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

/**
 * The transactions a peer saw whose RCPTs asked for capabilities (`CONNEG` on a
 * RCPT): per transaction, its command lines from MAIL up to and including the
 * command that ended it (RSET, QUIT, DATA, or the next MAIL; none if the
 * connection ended first). A3 probes look like `MAIL FROM:<>`, `RCPT … CONNEG`…, `RSET`.
 */
export function connegTransactions(peer: Pick<NextHopPeer, 'sessions'>): string[][] {
  const out: string[][] = [];
  for (const lines of peer.sessions) {
    let txn: string[] | undefined;
    const close = () => {
      if (txn?.some((l) => /^RCPT\b.*\sCONNEG(=|\s|$)/i.test(l))) out.push(txn);
      txn = undefined;
    };
    for (const line of lines) {
      const verb = line.trim().split(/[\s:]/, 1)[0]!.toUpperCase();
      if (verb === 'MAIL') {
        close();
        txn = [line];
      } else if (txn) {
        txn.push(line);
        if (verb === 'RSET' || verb === 'QUIT' || verb === 'DATA') close();
      }
    }
    close();
  }
  return out;
}
