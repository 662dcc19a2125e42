/**
 * A FAST next hop for the benchmark and the fault tests: a raw `node:net` SMTP
 * server (no smtp-server, no parser per line beyond the verb) that accepts every
 * transaction. It answers pipelined commands in one write, finds the end of DATA
 * across any chunk boundary, and counts messages and recipient deliveries. With
 * `record` on (the default) it also keeps, per `Message-ID` header value, how often
 * each recipient got that message — the ledger for loss and duplicate accounting.
 *
 * With `ownProcess` it runs as a child process (this file, under tsx) and reports
 * each message it takes over IPC; the ledger is kept here. The fault tests use it
 * so the next hop answers on its own event loop: in-process, a kill fired by the
 * test's timer lands right when the hop has a backlog of final dots it has not yet
 * answered (the timer ran because the loop was busy), which inflates duplicates.
 */
import { spawn } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { children } from './relay-child.ts';

export interface Sink {
  readonly port: number;
  /** DATA transactions completed (each answered `250 2.0.0 ok`). */
  readonly messages: () => number;
  /** Recipient deliveries completed (sum of RCPTs over completed transactions). */
  readonly deliveries: () => number;
  /** Message-ID → recipient → times delivered (only with `record`). */
  readonly seen: ReadonlyMap<string, Map<string, number>>;
  /** performance.now() when the last transaction completed (0 before any). */
  readonly lastDeliveryAt: () => number;
  /** Transactions whose message had no Message-ID header. */
  readonly withoutMessageId: () => number;
  /** Forgets every count (between benchmark runs). */
  reset(): void;
  /** Resolves once `deliveries() >= n`; false on timeout. */
  waitForDeliveries(n: number, timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

const CRLF_DOT_CRLF = Buffer.from('\r\n.\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');
/** How much of a message's start is kept to find its Message-ID. */
const HEADER_KEEP = 64 * 1024;
const EHLO_REPLY =
  '250-sink.bench.invalid\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n';

export interface SinkOptions {
  readonly port?: number;
  readonly host?: string;
  /** Keep the Message-ID → recipient → copies ledger (default true). */
  readonly record?: boolean;
  /** Called after each completed transaction, before its 250 is written, with its Message-ID (if any) and recipients. */
  readonly onMessage?: (messageId: string | undefined, rcpts: readonly string[]) => void;
  /**
   * A slower next hop: wait this long after the end of the data before taking the
   * message (counting it) and answering 250; a client gone by then has not
   * delivered it (as with an MTA that commits just before its 250). Default 0.
   */
  readonly dataReplyDelayMs?: number;
  /** Run the SMTP side in a child process of its own (see above); `port` and `host` are then the child's. */
  readonly ownProcess?: boolean;
}

/** The counts and the Message-ID ledger, fed one taken message at a time. */
function ledger(record: boolean, onMessage: SinkOptions['onMessage']) {
  const seen = new Map<string, Map<string, number>>();
  let messages = 0;
  let deliveries = 0;
  let noId = 0;
  let lastAt = 0;
  let waiters: { n: number; done: (ok: boolean) => void }[] = [];
  const notify = () => {
    if (waiters.length > 0) {
      const still: typeof waiters = [];
      for (const w of waiters) (deliveries >= w.n ? w.done(true) : still.push(w));
      waiters = still;
    }
  };
  return {
    /** A message taken at `at` (performance.now() of this process). */
    take(id: string | undefined, rcpts: readonly string[], at: number): void {
      messages++;
      deliveries += rcpts.length;
      lastAt = at;
      onMessage?.(id, rcpts);
      if (record) {
        if (id === undefined) noId++;
        else {
          let perRcpt = seen.get(id);
          if (!perRcpt) seen.set(id, (perRcpt = new Map()));
          for (const r of rcpts) perRcpt.set(r, (perRcpt.get(r) ?? 0) + 1);
        }
      }
      notify();
    },
    view: {
      messages: () => messages,
      deliveries: () => deliveries,
      withoutMessageId: () => noId,
      lastDeliveryAt: () => lastAt,
      seen,
      reset() {
        lastAt = 0;
        messages = 0;
        deliveries = 0;
        noId = 0;
        seen.clear();
      },
      waitForDeliveries(n: number, timeoutMs: number): Promise<boolean> {
        if (deliveries >= n) return Promise.resolve(true);
        return new Promise((resolve) => {
          const w = {
            n,
            done: (ok: boolean) => {
              clearTimeout(t);
              resolve(ok);
            },
          };
          const t = setTimeout(() => {
            waiters = waiters.filter((x) => x !== w);
            resolve(false);
          }, timeoutMs);
          waiters.push(w);
        });
      },
    } satisfies Omit<Sink, 'port' | 'close'>,
  };
}

export async function startSink(opts: SinkOptions = {}): Promise<Sink> {
  if (opts.ownProcess) return startSinkProcess(opts);
  const book = ledger(opts.record ?? true, opts.onMessage);
  const sockets = new Set<Socket>();
  const wantsId = (opts.record ?? true) || opts.onMessage !== undefined;
  const completed = (rcpts: readonly string[], header: Buffer | undefined) =>
    book.take(wantsId && header ? messageIdOf(header) : undefined, rcpts, performance.now());

  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.setNoDelay(true);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    serve(sock, completed, opts.dataReplyDelayMs ?? 0);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;

  return {
    port,
    ...book.view,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** One SMTP session: a command mode and a data mode, driven chunk by chunk. */
function serve(sock: Socket, completed: (rcpts: readonly string[], header: Buffer | undefined) => void, delayMs: number): void {
  let inData = false;
  /** Command bytes not yet ending in CRLF. */
  let pending = '';
  let rcpts: string[] = [];
  /** Last bytes of the data so far (≤ 4), so the terminator is found across chunks. */
  let tail: Buffer = Buffer.from('\r\n'); // DATA's own CRLF: an empty body ends at ".\r\n"
  let header: Buffer[] = [];
  let headerBytes = 0;
  let headerDone = false;
  let closing = false;

  const out: string[] = [];
  /** With a reply delay: replies queue behind a delayed 250, in order. */
  let chain: Promise<void> = Promise.resolve();
  let delayed = 0;
  /** The client closed or reset the connection (`destroyed` comes only later, after our own shutdown). */
  let gone = false;
  sock.once('end', () => (gone = true));
  sock.once('close', () => (gone = true));
  sock.once('error', () => (gone = true));
  const flush = () => {
    if (out.length > 0) {
      const text = out.join('');
      out.length = 0;
      if (delayed === 0) sock.write(text);
      else chain = chain.then(() => void (gone || sock.destroyed || sock.write(text)));
    }
  };

  const commands = (text: string) => {
    pending += text;
    let start = 0;
    for (;;) {
      const eol = pending.indexOf('\r\n', start);
      if (eol < 0) break;
      const line = pending.slice(start, eol);
      start = eol + 2;
      const verb = line.slice(0, 4).toUpperCase();
      switch (verb) {
        case 'EHLO':
          out.push(EHLO_REPLY);
          break;
        case 'HELO':
          out.push('250 sink.bench.invalid\r\n');
          break;
        case 'MAIL':
          rcpts = [];
          out.push('250 2.1.0 ok\r\n');
          break;
        case 'RCPT': {
          const m = /<([^>]*)>/.exec(line);
          rcpts.push((m?.[1] ?? line.slice(8).trim()).toLowerCase());
          out.push('250 2.1.5 ok\r\n');
          break;
        }
        case 'DATA':
          if (rcpts.length === 0) {
            out.push('554 5.5.1 no valid recipients\r\n');
            break;
          }
          out.push('354 go ahead\r\n');
          inData = true;
          tail = Buffer.from('\r\n');
          header = [];
          headerBytes = 0;
          headerDone = false;
          pending = pending.slice(start);
          return; // the rest of this chunk is message data
        case 'RSET':
          rcpts = [];
          out.push('250 2.0.0 ok\r\n');
          break;
        case 'NOOP':
          out.push('250 2.0.0 ok\r\n');
          break;
        case 'QUIT':
          out.push('221 2.0.0 bye\r\n');
          closing = true;
          break;
        default:
          out.push('502 5.5.2 command not implemented\r\n');
      }
      if (closing) break;
    }
    pending = pending.slice(start);
  };

  /** Consumes message data; returns the bytes after the terminator, if it was found. */
  const data = (chunk: Buffer): Buffer | undefined => {
    const joined = Buffer.concat([tail, chunk]);
    const at = joined.indexOf(CRLF_DOT_CRLF);
    const bodyEnd = at < 0 ? joined.length : at + 2; // keep the CRLF before the dot
    if (!headerDone) {
      // The slice past `tail` is new message data (the tail was already kept).
      const fresh = joined.subarray(tail.length, Math.max(tail.length, bodyEnd));
      if (fresh.length > 0 && headerBytes < HEADER_KEEP) {
        const take = fresh.subarray(0, HEADER_KEEP - headerBytes);
        header.push(take);
        headerBytes += take.length;
        if (Buffer.concat(header).includes(HEADER_END) || headerBytes >= HEADER_KEEP) headerDone = true;
      }
    }
    if (at < 0) {
      tail = Buffer.from(joined.subarray(Math.max(0, joined.length - 4)));
      return undefined;
    }
    inData = false;
    const msgHeader = header.length > 0 ? Buffer.concat(header) : undefined;
    if (delayMs > 0) {
      flush();
      delayed++;
      const taken = rcpts;
      chain = chain
        // After the delay, one more turn (setImmediate runs after the poll phase), so a
        // close that is already in the kernel is seen before the message is taken.
        .then(() => new Promise((r) => setTimeout(r, delayMs)))
        .then(() => new Promise((r) => setImmediate(r)))
        .then(() => {
          delayed--;
          if (gone || sock.destroyed) return;
          completed(taken, msgHeader);
          sock.write('250 2.0.0 ok\r\n');
        });
    } else {
      completed(rcpts, msgHeader);
      out.push('250 2.0.0 ok\r\n');
    }
    rcpts = [];
    header = [];
    return joined.subarray(at + CRLF_DOT_CRLF.length);
  };

  sock.write('220 sink.bench.invalid ESMTP ready\r\n');
  sock.on('data', (chunk: Buffer) => {
    let rest: Buffer | undefined = chunk;
    while (rest && rest.length > 0 && !closing) {
      if (inData) {
        rest = data(rest);
      } else {
        // Any bytes after DATA's CRLF in the same chunk are message data.
        const text: string = pending + rest.toString('latin1');
        pending = '';
        commands(text);
        if (inData) {
          rest = Buffer.from(pending, 'latin1');
          pending = '';
        } else rest = undefined;
      }
    }
    flush();
    if (closing) {
      if (delayed === 0) sock.end();
      else void chain.then(() => sock.end());
    }
  });
}

/** The Message-ID header's value (unfolded, trimmed), from a message's first bytes. */
export function messageIdOf(header: Buffer): string | undefined {
  const text = header.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end + 2);
  const m = /(?:^|\r\n)message-id:[ \t]*((?:[^\r\n]|\r\n[ \t])*)/i.exec(head);
  return m?.[1]?.replace(/\r\n[ \t]/g, ' ').trim() || undefined;
}

/** What the child sink reports: its port, then batches of [Message-ID, recipients, epoch ms] per message taken. */
type SinkChildMessage = { port: number } | { taken: [string | null, string[], number][] };

/** The sink in a child process (`ownProcess`): SMTP there, the ledger here. */
async function startSinkProcess(opts: SinkOptions): Promise<Sink> {
  const book = ledger(opts.record ?? true, opts.onMessage);
  const here = new URL(import.meta.url).pathname;
  const root = new URL('..', import.meta.url).pathname;
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', here, JSON.stringify({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1', dataReplyDelayMs: opts.dataReplyDelayMs ?? 0 })],
    { cwd: root, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  const unregister = children.add(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the sink process did not start within 30 s')), 30_000);
    child.once('exit', (code, signal) => reject(new Error(`the sink process ended (${code ?? signal}) before listening`)));
    child.on('message', (m: SinkChildMessage) => {
      if ('port' in m) {
        clearTimeout(t);
        resolve(m.port);
      } else for (const [id, rcpts, at] of m.taken) book.take(id ?? undefined, rcpts, at - performance.timeOrigin);
    });
  });
  return {
    port,
    ...book.view,
    async close() {
      if (child.connected) child.disconnect();
      const t = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(t);
      unregister();
    },
  };
}

/** As a child process (`ownProcess`): serve, and report each message taken to the parent in small batches. */
async function sinkChildMain(): Promise<void> {
  const o = JSON.parse(process.argv[2] ?? '{}') as { port: number; host: string; dataReplyDelayMs: number };
  let batch: [string | null, string[], number][] = [];
  const flush = () => {
    if (batch.length === 0 || !process.connected) return;
    process.send!({ taken: batch } satisfies SinkChildMessage);
    batch = [];
  };
  const sink = await startSink({
    ...o,
    record: false,
    onMessage: (id, rcpts) => {
      batch.push([id ?? null, [...rcpts], performance.timeOrigin + performance.now()]);
      if (batch.length >= 100) flush();
    },
  });
  const timer = setInterval(flush, 5);
  process.send!({ port: sink.port } satisfies SinkChildMessage);
  // The parent went away or said stop: report what is left and end.
  process.once('disconnect', () => {
    clearInterval(timer);
    void sink.close().then(() => process.exit(0));
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.send) {
  await sinkChildMain();
}
