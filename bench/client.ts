/**
 * The upstream load: S parallel SMTP sessions over raw `node:net`, each sending
 * its share of N messages on one connection (EHLO once; per message MAIL + RCPTs +
 * DATA in one write as PIPELINING allows, the body after 354). Every message has
 * a unique Message-ID; for each we record whether it got a 250 after the data
 * (and the relay's queue id), another reply, or no reply at all (the connection
 * died first), and how long acceptance took.
 *
 * With `reconnect`, a session whose connection dies (a relay killed with -9)
 * counts the message in flight as unacknowledged, reconnects until the relay
 * answers again, and goes on with its next message.
 */
import { connect, type Socket } from 'node:net';

export interface LoadOptions {
  readonly port: number;
  readonly host?: string;
  /** Parallel sessions. */
  readonly sessions: number;
  /** Messages in total, shared out over the sessions. */
  readonly messages: number;
  /** Recipients per message. */
  readonly recipients: number;
  /** Approximate message size in bytes (header + body). */
  readonly bodySize: number;
  /** Makes Message-IDs unique across runs: `<tag.session.n@bench.invalid>`. */
  readonly tag: string;
  /** Reconnect after a dropped connection and continue (the no-loss proof). */
  readonly reconnect?: boolean;
  /** How long to keep trying to reconnect (default 60 s). */
  readonly reconnectWindowMs?: number;
  /** Called after every message's outcome is known (progress for a killer). */
  readonly onOutcome?: (m: MessageOutcome) => void;
  /** Keep every outcome in the result (default true); false for long runs that only need `onOutcome`. */
  readonly keepOutcomes?: boolean;
  /**
   * Pause a session this long after a message was refused (a 4xx/5xx instead of
   * the 250), as a real client backs off; default 0. Keeps a Redis outage from
   * burning through the run's messages in a few milliseconds.
   */
  readonly refusedPauseMs?: number;
  /**
   * Pace the load: at most this many messages per second over all sessions (each
   * session starts its i-th message no earlier than i × sessions / rate seconds
   * after the load began, and catches up after a stall); unset: as fast as the
   * relay answers.
   */
  readonly ratePerSec?: number;
}

export interface MessageOutcome {
  readonly messageId: string;
  readonly recipients: readonly string[];
  /** `accepted`: 250 read after the data. `refused`: any other reply. `unacknowledged`: no reply read. */
  readonly status: 'accepted' | 'refused' | 'unacknowledged';
  readonly queueId?: string;
  readonly reply?: string;
  /** The code of the reply that decided the outcome (250, or the refusal: MAIL's, a RCPT's, DATA's or the final one). */
  readonly code?: number;
  /** That reply's enhanced status code (`4.3.0`), when it had one. */
  readonly enhanced?: string;
  /** Where it was refused: at MAIL, at RCPT (every recipient), at DATA, or after the data. */
  readonly refusedAt?: 'mail' | 'rcpt' | 'data' | 'end';
  /** From the first command of the transaction to the reply after the data. */
  readonly latencyMs?: number;
}

export interface LoadResult {
  readonly outcomes: readonly MessageOutcome[];
  readonly accepted: readonly MessageOutcome[];
  readonly refused: number;
  readonly unacknowledged: number;
  /** performance.now() of the first write of the first message. */
  readonly startedAt: number;
  /** performance.now() of the last 250. */
  readonly lastAcceptedAt: number;
  /** lastAcceptedAt − startedAt, ms. */
  readonly acceptWallMs: number;
  /** Acceptance latencies of accepted messages, ms, sorted ascending. */
  readonly latencies: readonly number[];
  /** Connections that had to be re-opened (each one died without a 221 or 421). */
  readonly reconnects: number;
  /** Failed connection attempts while (re)connecting: refused, closed or no greeting. */
  readonly connectFailures: number;
  /** Connections closed by the server with a 421 (a polite close, not a drop). */
  readonly closedWith421: number;
}

/** One parsed SMTP reply: code and its lines joined. */
interface Reply {
  readonly code: number;
  readonly text: string;
}

class ConnectionLost extends Error {}

/** Reads SMTP replies (multi-line aware) off a socket, in order. */
class ReplyReader {
  private buf = '';
  private lines: string[] = [];
  private readonly ready: Reply[] = [];
  private readonly waiting: { resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  private dead: Error | undefined;

  constructor(sock: Socket) {
    sock.on('data', (d: Buffer) => this.feed(d.toString('latin1')));
    const lost = (err?: Error) => this.fail(new ConnectionLost(err?.message ?? 'connection closed'));
    sock.on('error', lost);
    sock.on('close', () => lost());
  }

  next(): Promise<Reply> {
    const r = this.ready.shift();
    if (r) return Promise.resolve(r);
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private feed(text: string): void {
    this.buf += text;
    let eol: number;
    while ((eol = this.buf.indexOf('\r\n')) >= 0) {
      const line = this.buf.slice(0, eol);
      this.buf = this.buf.slice(eol + 2);
      this.lines.push(line);
      if (line.length < 4 || line[3] !== '-') {
        const reply = { code: Number(line.slice(0, 3)), text: this.lines.join('\n') };
        this.lines = [];
        const w = this.waiting.shift();
        if (w) w.resolve(reply);
        else this.ready.push(reply);
      }
    }
  }

  private fail(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }
}

/** A message's header and body, built once per size; only the header differs per message. */
export function messageParts(bodySize: number): { body: Buffer; header: (id: string, rcpts: readonly string[]) => string } {
  const line = 'Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ';
  const l76 = (line + line).slice(0, 76);
  const lines: string[] = [];
  // ~400 bytes go to the header; the body carries the rest, ending in CRLF.
  const want = Math.max(80, bodySize - 400);
  for (let n = 0; n < want; n += 78) lines.push(l76);
  const body = Buffer.from(lines.join('\r\n') + '\r\n');
  const header = (id: string, rcpts: readonly string[]) =>
    `From: Bench Sender <sender@bench.invalid>\r\nTo: ${rcpts.join(', ')}\r\nSubject: drucof-relay bench ${id}\r\n` +
    `Date: ${new Date().toUTCString().replace(/GMT$/, '+0000')}\r\nMessage-ID: ${id}\r\nMIME-Version: 1.0\r\n` +
    `Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n`;
  return { body, header };
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const host = o.host ?? '127.0.0.1';
  const parts = messageParts(o.bodySize);
  const outcomes: MessageOutcome[] = [];
  let startedAt = Infinity;
  let lastAcceptedAt = 0;
  let reconnects = 0;
  let connectFailures = 0;
  let closedWith421 = 0;

  const tally = { refused: 0, unacknowledged: 0 };
  const record = (m: MessageOutcome) => {
    if (m.status !== 'accepted') tally[m.status]++;
    if (o.keepOutcomes !== false) outcomes.push(m);
    o.onOutcome?.(m);
  };

  const loadStart = performance.now();
  const session = async (s: number, count: number) => {
    let conn: { sock: Socket; replies: ReplyReader } | undefined;
    const open = async () => {
      const deadline = performance.now() + (o.reconnectWindowMs ?? 60_000);
      for (let attempt = 0; ; attempt++) {
        try {
          return await openSession(host, o.port);
        } catch (err) {
          connectFailures++;
          if (!o.reconnect || performance.now() > deadline) throw err;
          await sleep(Math.min(50 * (attempt + 1), 250));
        }
      }
    };
    try {
      for (let i = 0; i < count; i++) {
        if (o.ratePerSec) {
          // Session s's i-th message is message i·S + s of the whole load.
          const due = loadStart + ((i * o.sessions + s) * 1000) / o.ratePerSec;
          const wait = due - performance.now();
          if (wait > 1) await sleep(wait);
        }
        if (!conn) {
          conn = await open();
        }
        const id = `<${o.tag}.${s}.${i}@bench.invalid>`;
        const rcpts = Array.from({ length: o.recipients }, (_, r) => `rcpt${r}.${s}@dest.bench.invalid`);
        const t0 = performance.now();
        if (t0 < startedAt) startedAt = t0;
        let replied = false;
        try {
          const { sock, replies } = conn;
          sock.write(`MAIL FROM:<sender@bench.invalid>\r\n${rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n`);
          const mail = await replies.next();
          let okRcpts = 0;
          let rcptRefusal: Reply | undefined;
          for (let r = 0; r < rcpts.length; r++) {
            const rr = await replies.next();
            if (rr.code === 250) okRcpts++;
            else rcptRefusal ??= rr;
          }
          const dataReply = await replies.next();
          if (dataReply.code !== 354) {
            replied = true;
            const [at, decisive] = mail.code !== 250 ? (['mail', mail] as const) : okRcpts === 0 && rcptRefusal ? (['rcpt', rcptRefusal] as const) : (['data', dataReply] as const);
            record({ messageId: id, recipients: rcpts, status: 'refused', reply: firstProblem(mail, okRcpts, dataReply), code: decisive.code, ...enhancedOf(decisive.text), refusedAt: at });
            sock.write('RSET\r\n');
            await replies.next();
            if (o.refusedPauseMs) await sleep(o.refusedPauseMs);
            continue;
          }
          sock.cork();
          sock.write(parts.header(id, rcpts));
          sock.write(parts.body);
          sock.write('.\r\n');
          sock.uncork();
          const final = await replies.next();
          replied = true;
          const latencyMs = performance.now() - t0;
          if (final.code === 250) {
            lastAcceptedAt = Math.max(lastAcceptedAt, performance.now());
            const queueId = /\[QUEUEID ([^\]\s]+)\]/.exec(final.text)?.[1];
            record({ messageId: id, recipients: rcpts, status: 'accepted', ...(queueId && { queueId }), reply: final.text, code: 250, latencyMs });
          } else {
            record({ messageId: id, recipients: rcpts, status: 'refused', reply: final.text, code: final.code, ...enhancedOf(final.text), refusedAt: 'end', latencyMs });
            if (final.code === 421) {
              closedWith421++;
              throw new ConnectionLost(final.text);
            }
            if (o.refusedPauseMs) await sleep(o.refusedPauseMs);
          }
        } catch (err) {
          if (!(err instanceof ConnectionLost)) throw err;
          if (!replied) record({ messageId: id, recipients: rcpts, status: 'unacknowledged', reply: err.message });
          conn.sock.destroy();
          conn = undefined;
          if (!o.reconnect) {
            // Without reconnecting, the rest of this session's share is never sent.
            for (let j = i + 1; j < count; j++) {
              const rest = `<${o.tag}.${s}.${j}@bench.invalid>`;
              record({ messageId: rest, recipients: rcpts, status: 'refused', reply: 'not sent: connection lost' });
            }
            return;
          }
          if (!/^421/.test(err.message)) reconnects++;
        }
      }
      if (conn) {
        conn.sock.write('QUIT\r\n');
        await conn.replies.next().catch(() => undefined);
      }
    } finally {
      conn?.sock.destroy();
    }
  };

  const per = Math.floor(o.messages / o.sessions);
  const extra = o.messages % o.sessions;
  await Promise.all(Array.from({ length: o.sessions }, (_, s) => session(s, per + (s < extra ? 1 : 0))));

  const accepted = outcomes.filter((m) => m.status === 'accepted');
  return {
    outcomes,
    accepted,
    refused: tally.refused,
    unacknowledged: tally.unacknowledged,
    startedAt,
    lastAcceptedAt,
    acceptWallMs: lastAcceptedAt - startedAt,
    latencies: accepted.map((m) => m.latencyMs!).sort((a, b) => a - b),
    reconnects,
    connectFailures,
    closedWith421,
  };
}

/** Connects, reads the greeting and says EHLO; rejects if the server is not ready. */
async function openSession(host: string, port: number): Promise<{ sock: Socket; replies: ReplyReader }> {
  const sock = connect({ host, port });
  sock.setNoDelay(true);
  // A relay that stops answering (rather than dying) must not hang the run.
  sock.setTimeout(120_000, () => sock.destroy(new Error('no reply within 120 s')));
  const replies = new ReplyReader(sock);
  try {
    const greeting = await replies.next();
    if (greeting.code !== 220) throw new ConnectionLost(`greeting: ${greeting.text}`);
    sock.write('EHLO client.bench.invalid\r\n');
    const ehlo = await replies.next();
    if (ehlo.code !== 250) throw new ConnectionLost(`EHLO: ${ehlo.text}`);
    if (!/^250[- ]PIPELINING$/im.test(ehlo.text)) throw new Error('the relay does not advertise PIPELINING');
    return { sock, replies };
  } catch (err) {
    sock.destroy();
    throw err;
  }
}

function enhancedOf(text: string): { enhanced?: string } {
  const m = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(text);
  return m ? { enhanced: m[1]! } : {};
}

function firstProblem(mail: Reply, okRcpts: number, data: Reply): string {
  if (mail.code !== 250) return `MAIL: ${mail.text}`;
  if (okRcpts === 0) return `RCPT: every recipient refused; DATA: ${data.text}`;
  return `DATA: ${data.text}`;
}

/** The q-quantile (0..1) of ascending-sorted values (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
