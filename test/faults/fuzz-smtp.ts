/**
 * SMTP dialogue fuzzer (issue 8 item 5, hostile clients). Many seeded sessions in
 * parallel against ONE relay process (real Redis prefix, a next-hop sink, so
 * accepted mail flows through the worker), each a mix of grammar-based commands
 * (EHLO/HELO/MAIL/RCPT/DATA/BDAT/RSET/NOOP/VRFY/AUTH/STARTTLS/QUIT with valid,
 * boundary and garbage arguments; NOTIFY/ORCPT/RET/ENVID/SIZE/BODY/SMTPUTF8/
 * DRUCOF/CONNEG/INLINE-DSN/PRDR with valid and broken values), pipelined bursts,
 * over-long lines (> 512, > 16 KB, > 64 KB), bare LF, bare CR, NUL bytes, 8-bit
 * data without 8BITMIME, and abrupt closes mid-command and mid-DATA.
 *
 * Every reply is checked as it arrives (RFC 5321 §4.2, RFC 2034):
 *   - each line is `ddd` / `ddd-text` / `ddd text`, CRLF-terminated (no bare LF
 *     or CR), at most 512 octets with its CRLF, one code across a multi-line reply;
 *   - 2xx/4xx/5xx replies carry an enhanced code of the same class on every line,
 *     except the greeting and the replies to HELO/EHLO (RFC 2034 §3);
 *   - one reply per command line (the client models the server's line splitting:
 *     a command ends at LF, CR LF or bare LF; bare CR does not end it), the PRDR /
 *     INLINE-DSN 353 sequence has exactly one line per itemised recipient, and no
 *     reply comes without a command except the greeting and a 421;
 *   - a reply arrives within `replyTimeoutMs`; the server never closes with
 *     commands unanswered unless it said 221 or 421.
 * And for the process: same PID at the end, exit code 0 on SIGTERM, RSS sampled
 * every second (start / peak / end reported, growth flagged).
 *
 * Script (the full run; prints result lines, exits 1 on any failure):
 *   node --import tsx test/faults/fuzz-smtp.ts --sessions 100000 --seed 1 --concurrency 64 --minutes 15
 * The vitest version (test/faults/fuzz-smtp.test.ts) runs ~5,000 sessions.
 * A failing session is replayed by its seed and index: `--seed S --only N`.
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { MessageStore } from '../../src/queue/store.ts';
import { startSink, type Sink } from '../../bench/sink.ts';
import { children } from '../../bench/relay-child.ts';
import { startRedis } from '../../bench/redis.ts';
import { scriptArgs } from '../../bench/script-args.ts';
import { seededRandom } from '../helpers/random.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { freePort } from '../helpers/ports.ts';

// ---------------------------------------------------------------------------
// What the fuzzed relay is configured with (the generator aims at its edges)

export const FUZZ_LIMITS = {
  maxMessageSize: 100_000,
  maxRecipients: 5,
  maxConnections: 400,
  idleTimeout: '8s',
} as const;
export const FUZZ_USER = { name: 'fuzz', password: 'fuzz-pw' } as const;

export function fuzzRelayConfig(): Record<string, unknown> {
  return {
    hostname: 'relay.fuzz.test',
    log: { level: 'warn' },
    limits: FUZZ_LIMITS,
    auth: { users: { [FUZZ_USER.name]: FUZZ_USER.password }, allowInsecure: true },
    queue: { retrySchedule: ['1s'], keepFinished: '1m', delayWarning: 0 },
    dns: { srv: false },
    capabilities: { '*@conneg.test': '(& (type="text/plain") (charset="utf-8"))' },
    policies: {
      '*@refuse.test': { refuse: '550 5.7.1 refused by policy' },
      '*@words.test': { refuseWords: ['forbidden'] },
      '*@size.test': { maxSize: 2000 },
      '*@types.test': { refuseTypes: ['application/octet-stream'] },
      '*@all.test': { acceptAll: true },
    },
  };
}

// ---------------------------------------------------------------------------
// Results

export interface Violation {
  readonly session: number;
  readonly kind: string;
  readonly detail: string;
  readonly transcript: string;
}

export interface FuzzStats {
  sessionsPlanned: number;
  sessionsRun: number;
  commands: number;
  replies: number;
  /** Messages answered `250 … [QUEUEID …]` after the data. */
  accepted: number;
  codes: Map<number, number>;
  kinds: Map<string, number>;
  endings: Map<string, number>;
  violations: Violation[];
  violationCounts: Map<string, number>;
  elapsedMs: number;
}

const bump = <K>(m: Map<K, number>, k: K, n = 1) => m.set(k, (m.get(k) ?? 0) + n);

// ---------------------------------------------------------------------------
// One session: the wire, the reply checker and the client's model of the server

interface Entry {
  readonly verb: string;
  readonly line: string;
  readonly dot: boolean;
}

export interface FuzzReply {
  readonly code: number;
  /** Text after `ddd-` / `ddd `. */
  readonly texts: readonly string[];
  readonly raw: readonly string[];
}

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?= |$)/;
const TRANSCRIPT_MAX = 6000;

class Session {
  readonly violations: { kind: string; detail: string }[] = [];
  commands = 0;
  replies = 0;
  accepted = 0;
  readonly codes: number[] = [];
  private inbuf: Buffer = Buffer.alloc(0);
  private pendingLines: { code: number; text: string; raw: string }[] = [];
  private readonly expect: Entry[] = [];
  private partial: Buffer = Buffer.alloc(0);
  private greeted = false;
  /** Replies still owed for the dot whose reply was 353 (A4/A4b sequence). */
  private seqLeft = 0;
  private tx: { mode: 'plain' | 'prdr' | 'inline-dsn'; ok250: number; ok352: number } | undefined;
  /** The server said 221 / 421 / refused us: it may close with commands unanswered. */
  private serverEnding = false;
  /** The client half-closed or aborted: a reply after that needs no command. */
  private clientGone = false;
  private inData = false;
  closed = false;
  last: FuzzReply | undefined;
  private waiter: (() => void) | undefined;
  private log = '';
  readonly socket: net.Socket;

  constructor(
    readonly index: number,
    port: number,
    host: string,
    private readonly replyTimeoutMs: number,
  ) {
    this.socket = net.connect({ port, host });
    this.socket.setNoDelay(true);
    this.socket.on('data', (b: Buffer) => this.onData(b));
    this.socket.on('error', () => {});
    this.socket.on('close', () => this.onClose());
  }

  // ---- transcript -----------------------------------------------------------

  private note(dir: 'C' | 'S', text: string): void {
    if (this.log.length > TRANSCRIPT_MAX) return;
    const shown = text.length > 300 ? `${JSON.stringify(text.slice(0, 200))}…(${text.length} chars)` : JSON.stringify(text);
    this.log += `${dir}: ${shown}\n`;
  }

  transcript(): string {
    return this.log;
  }

  violation(kind: string, detail: string): void {
    this.violations.push({ kind, detail });
  }

  // ---- sending ----------------------------------------------------------------

  /** Bytes in command mode: every LF ends a command line the server will answer. */
  sendCommandBytes(bytes: Buffer | string): void {
    const b = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    if (this.closed || this.socket.destroyed) return;
    this.note('C', b.toString('latin1'));
    let start = 0;
    for (let i = b.indexOf(0x0a); i >= 0; i = b.indexOf(0x0a, start)) {
      const lineBytes = Buffer.concat([this.partial, b.subarray(start, i)]);
      this.partial = Buffer.alloc(0);
      start = i + 1;
      this.pushEntry(lineBytes, false);
    }
    this.partial = Buffer.concat([this.partial, b.subarray(start)]);
    this.socket.write(b);
  }

  private pushEntry(lineBytes: Buffer, dot: boolean): void {
    const noCr = lineBytes.length > 0 && lineBytes[lineBytes.length - 1] === 0x0d ? lineBytes.subarray(0, -1) : lineBytes;
    // As smtp-server names a command: the text up to the first space, upper-cased.
    const line = noCr.toString('utf8');
    const verb = dot ? '.' : (line.split(' ')[0] ?? '').toUpperCase();
    this.expect.push({ verb, line, dot });
    this.commands++;
  }

  /** Message data after a 354 (dot-stuffed by the caller); not commands. */
  sendData(bytes: Buffer): void {
    if (this.closed || this.socket.destroyed) return;
    this.note('C', `<${bytes.length} data bytes>`);
    this.socket.write(bytes);
  }

  /** Ends the data: CRLF if needed, then the dot line, which the server answers. */
  endData(lastBytes: Buffer | undefined): void {
    const needCrlf = lastBytes !== undefined && !(lastBytes.length >= 2 && lastBytes[lastBytes.length - 2] === 0x0d && lastBytes[lastBytes.length - 1] === 0x0a);
    const term = (needCrlf ? '\r\n' : '') + '.\r\n';
    this.inData = false;
    if (this.closed || this.socket.destroyed) return;
    this.note('C', term);
    this.pushEntry(Buffer.from('.'), true);
    this.socket.write(term);
  }

  /** Half-close: a last line without LF is still dispatched by the server. */
  halfClose(): void {
    if (this.partial.length > 0 && !this.inData) {
      this.pushEntry(this.partial, false);
      this.partial = Buffer.alloc(0);
    }
    if (this.inData) this.clientGone = true;
    this.note('C', '<FIN>');
    this.socket.end();
  }

  abort(reset: boolean): void {
    this.clientGone = true;
    this.note('C', reset ? '<RST>' : '<close>');
    if (reset && typeof this.socket.resetAndDestroy === 'function') this.socket.resetAndDestroy();
    else this.socket.destroy();
  }

  /** The client half-closed in the data or aborted. */
  get gone(): boolean {
    return this.clientGone;
  }

  get dataMode(): boolean {
    return this.inData;
  }

  get ending(): boolean {
    return this.serverEnding || this.closed;
  }

  // ---- waiting ------------------------------------------------------------------

  /** Resolves when every command sent has been answered, or the server closed; false on timeout. */
  async settle(timeoutMs = this.replyTimeoutMs): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && (this.expect.length > 0 || this.seqLeft > 0 || !this.greeted)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        this.violation('no-reply', `no reply within ${timeoutMs} ms (${this.expect.length} commands outstanding: ${this.expect.map((e) => e.verb).join(' ').slice(0, 100)})`);
        this.abort(false);
        return false;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return true;
  }

  /** Waits for the server to close (after QUIT, 421, or our FIN). */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    return true;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  // ---- receiving and checking -------------------------------------------------

  private onData(chunk: Buffer): void {
    this.inbuf = this.inbuf.length === 0 ? chunk : Buffer.concat([this.inbuf, chunk]);
    let nl: number;
    while ((nl = this.inbuf.indexOf(0x0a)) >= 0) {
      const lineBuf = this.inbuf.subarray(0, nl + 1);
      this.inbuf = this.inbuf.subarray(nl + 1);
      this.onLine(lineBuf);
    }
    if (this.inbuf.length > 512) {
      this.violation('reply-line-too-long', `${this.inbuf.length}+ octets without LF`);
      this.inbuf = Buffer.alloc(0);
    }
    this.wake();
  }

  private onLine(lineBuf: Buffer): void {
    const text = lineBuf.toString('latin1');
    this.note('S', text);
    if (lineBuf.length > 512) this.violation('reply-line-too-long', `${lineBuf.length} octets: ${text.slice(0, 80)}`);
    if (lineBuf.length < 2 || lineBuf[lineBuf.length - 2] !== 0x0d) this.violation('reply-bare-lf', JSON.stringify(text.slice(0, 80)));
    const body = text.replace(/\r?\n$/, '');
    if (body.includes('\r')) this.violation('reply-bare-cr', JSON.stringify(body.slice(0, 80)));
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(body)) this.violation('reply-control-char', JSON.stringify(body.slice(0, 80)));
    const m = /^([2-5][0-5]\d)(?:([ -])(.*))?$/s.exec(body);
    if (!m) {
      this.violation('reply-syntax', JSON.stringify(body.slice(0, 80)));
      return;
    }
    const code = Number(m[1]);
    const sep = m[2] ?? ' ';
    this.pendingLines.push({ code, text: m[3] ?? '', raw: body });
    if (sep === '-') return;
    const lines = this.pendingLines;
    this.pendingLines = [];
    if (lines.some((l) => l.code !== code)) this.violation('reply-code-mismatch', lines.map((l) => l.raw).join(' | ').slice(0, 200));
    this.onReply({ code, texts: lines.map((l) => l.text), raw: lines.map((l) => l.raw) });
  }

  private onReply(r: FuzzReply): void {
    this.replies++;
    this.codes.push(r.code);
    this.last = r;
    if (!this.greeted) {
      this.greeted = true;
      if (r.code !== 220 && r.code !== 421 && r.code !== 554) this.violation('greeting', r.raw.join(' | '));
      if (r.code !== 220) this.serverEnding = true;
      this.checkEnhanced(r, false);
      return;
    }
    if (r.code === 421) this.serverEnding = true;
    if (this.seqLeft > 0) {
      // One of the per-recipient lines or the final reply of a 353 sequence.
      this.seqLeft--;
      if (r.code < 200 || (r.code >= 300 && r.code < 400)) this.violation('sequence', `3xx inside a 353 sequence: ${r.raw[0]}`);
      this.checkEnhanced(r, true);
      if (this.seqLeft === 0) this.endOfData(r);
      return;
    }
    const entry = this.expect.shift();
    if (!entry) {
      if (r.code !== 421 && !this.clientGone) this.violation('unsolicited', `reply without a command: ${r.raw.join(' | ').slice(0, 200)}`);
      this.checkEnhanced(r, true);
      return;
    }
    this.checkEnhanced(r, !(entry.verb === 'EHLO' || entry.verb === 'HELO'));
    if (r.code === 221) this.serverEnding = true;
    if (entry.dot) {
      if (r.code === 353) {
        const items = this.tx?.mode === 'prdr' ? (this.tx.ok250 >= 2 ? this.tx.ok250 : -1) : this.tx?.mode === 'inline-dsn' ? this.tx.ok352 : -1;
        if (items <= 0) {
          this.violation('sequence', `353 without PRDR (2+ RCPTs) or INLINE-DSN 352s (mode ${this.tx?.mode ?? 'none'})`);
          return;
        }
        this.seqLeft = items + 1;
        return;
      }
      this.endOfData(r);
      return;
    }
    this.track(entry, r);
  }

  private endOfData(r: FuzzReply): void {
    if (r.code === 250 && /\[QUEUEID [^\]]+\]/.test(r.texts[0] ?? '')) this.accepted++;
    this.tx = undefined;
  }

  /** The transaction as the client sees it (for the 353 sequence's length). */
  private track(entry: Entry, r: FuzzReply): void {
    switch (entry.verb) {
      case 'EHLO':
      case 'HELO':
      case 'RSET':
        if (r.code === 250) this.tx = undefined;
        break;
      case 'MAIL':
        if (r.code === 250) {
          const tokens = entry.line.split(/\s+/).slice(2).map((t) => t.toUpperCase());
          this.tx = { mode: tokens.includes('INLINE-DSN') ? 'inline-dsn' : tokens.includes('PRDR') ? 'prdr' : 'plain', ok250: 0, ok352: 0 };
        }
        break;
      case 'RCPT':
        if (this.tx && r.code === 250) this.tx.ok250++;
        if (this.tx && r.code === 352) this.tx.ok352++;
        break;
      case 'DATA':
        if (r.code === 354) {
          if (this.expect.length > 0) this.violation('model', `354 with ${this.expect.length} later lines pipelined (the fuzzer's own error)`);
          this.inData = true;
        }
        break;
      default:
        if (r.code === 354) this.violation('unexpected-354', `${entry.verb}: ${r.raw[0]}`);
    }
    if (r.code === 334 && entry.verb !== 'AUTH' && !/^[A-Za-z0-9+/=]*$/.test(entry.line)) {
      // A 334 answers AUTH or a continuation line only.
      this.violation('unexpected-334', `${entry.verb}: ${r.raw[0]}`);
    }
  }

  /** RFC 2034: 2xx/4xx/5xx lines start with class.subject.detail of the same class. */
  private checkEnhanced(r: FuzzReply, required: boolean): void {
    const cls = Math.floor(r.code / 100);
    if (cls === 3) return;
    for (const t of r.texts) {
      const e = ENHANCED.exec(t);
      if (!e) {
        if (required) this.violation('enhanced-missing', `${r.code} ${t.slice(0, 80)}`);
        continue;
      }
      if (Number(e[1]) !== cls) this.violation('enhanced-class', `${r.code} ${t.slice(0, 80)}`);
    }
  }

  private onClose(): void {
    this.closed = true;
    if (this.inbuf.length > 0 || this.pendingLines.length > 0) {
      this.violation('reply-unterminated', `connection closed inside a reply: ${JSON.stringify(this.inbuf.toString('latin1').slice(0, 80))}`);
    }
    if (!this.greeted) this.violation('greeting', 'closed without a greeting');
    else if ((this.expect.length > 0 || this.seqLeft > 0) && !this.serverEnding && !this.clientGone) {
      this.violation('closed-unanswered', `server closed with ${this.expect.length} command(s) unanswered (${this.expect.map((e) => e.verb).join(' ').slice(0, 80)})`);
    }
    this.wake();
  }
}

// ---------------------------------------------------------------------------
// The generator

type Rng = () => number;

class Gen {
  constructor(readonly r: Rng) {}
  int(n: number): number {
    return Math.floor(this.r() * n);
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  /** Weighted choice: [[weight, value], …]. */
  weighted<T>(xs: readonly (readonly [number, T])[]): T {
    const total = xs.reduce((s, [w]) => s + w, 0);
    let x = this.r() * total;
    for (const [w, v] of xs) {
      if ((x -= w) < 0) return v;
    }
    return xs[xs.length - 1]![1];
  }
  str(n: number, alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'): string {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  casing(verb: string): string {
    return this.weighted([
      [8, verb],
      [1, verb.toLowerCase()],
      [1, [...verb].map((c) => (this.chance(0.5) ? c.toLowerCase() : c)).join('')],
    ]);
  }
  /** The end of a command line: CRLF mostly, bare LF, or CR CR LF (a CR left in the command). */
  eol(): string {
    return this.weighted([
      [90, '\r\n'],
      [7, '\n'],
      [3, '\r\r\n'],
    ]);
  }
}

const NAMES = ['client.test', 'mail.example.org', 'localhost', '[127.0.0.1]', '[IPv6:::1]', 'x'];

function heloName(g: Gen): string {
  return g.weighted<() => string>([
    [60, () => g.pick(NAMES)],
    [5, () => `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`],
    [3, () => 'h'.repeat(g.pick([299, 300, 301, 600]))],
    [4, () => g.pick(['a;b', 'a(b)c', 'x<y>', 'a"b', 'a\\b', 'for', 'by', '[1.2.3.4]', '[999.1.1.1]', '-', '..', 'a:b'])],
    [4, () => g.pick(['bücher.test', 'ü', '\u00e9\u00e9', 'x\u2028y', 'x\u200by'])],
    [4, () => g.pick(['', 'two words', ' lead', 'tab\there'])],
    [4, () => `x${String.fromCharCode(g.pick([0, 1, 8, 11, 12, 13, 27, 127]))}y`],
    [2, () => `x\u0085y`],
  ])();
}

const LOCALS = ['s', 'user.name+tag', 'a_b-c', 'postmaster', 'x'];
const RCPT_DOMAINS = ['b.test', 'b.test', 'b.test', 'refuse.test', 'words.test', 'size.test', 'types.test', 'conneg.test', 'all.test', 'c.test'];

function address(g: Gen, kind: 'mail' | 'rcpt'): string {
  const domain = kind === 'mail' ? 'a.test' : g.pick(RCPT_DOMAINS);
  return g.weighted<() => string>([
    [70, () => `<${g.pick(LOCALS)}${g.int(50)}@${domain}>`],
    [5, () => (kind === 'mail' ? '<>' : g.pick(['<postmaster>', '<Postmaster>', '<postmaster@b.test>']))],
    [6, () => g.pick([`<"quoted local"@${domain}>`, `<"a;b"@${domain}>`, `<"a\\"b"@${domain}>`, `<x@[127.0.0.1]>`, `<x@[IPv6:::1]>`, `<üser@bücher.test>`, `<x@xn--bcher-kva.test>`, `<x@${domain}.>`])],
    [5, () => `<${'l'.repeat(g.pick([63, 64, 65, 200]))}@${domain}>`],
    [3, () => `<x@${'d'.repeat(60)}.${'e'.repeat(60)}.${'f'.repeat(60)}.${'g'.repeat(g.pick([60, 62, 70]))}.test>`],
    [12, () =>
      g.pick([
        `${g.pick(LOCALS)}@${domain}`,
        `<${g.pick(LOCALS)}@${domain}`,
        `<a@b@${domain}>`,
        `<@relay.test:x@${domain}>`,
        `<@r1.test,@r2.test:x@${domain}>`,
        `<a..b@${domain}>`,
        `<.a@${domain}>`,
        `<a%b.test@${domain}>`,
        `<a b@${domain}>`,
        '<>x',
        '<<>>',
        '',
        '<',
        '>',
        `<a@${domain}> <b@${domain}>`,
        `<a\u0000b@${domain}>`,
        `<a\u0085b@${domain}>`,
        `<a\u200bb@${domain}>`,
        `<a\u007fb@${domain}>`,
        `<a@-bad-.test>`,
        `<a@[1.2.3]>`,
      ])],
  ])();
}

function xtextOf(g: Gen, n: number): string {
  return g.str(n, 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@');
}

function mailParams(g: Gen, valid: boolean): string[] {
  const max = FUZZ_LIMITS.maxMessageSize;
  if (valid) {
    const out: string[] = [];
    if (g.chance(0.3)) out.push(`SIZE=${g.int(max)}`);
    if (g.chance(0.3)) out.push(`BODY=${g.pick(['7BIT', '8BITMIME'])}`);
    if (g.chance(0.15)) out.push('SMTPUTF8');
    if (g.chance(0.3)) out.push(`RET=${g.pick(['FULL', 'HDRS'])}`);
    if (g.chance(0.3)) out.push(`ENVID=${xtextOf(g, 1 + g.int(40))}${g.chance(0.3) ? '+2B+3D' : ''}`);
    if (g.chance(0.15)) out.push('INLINE-DSN');
    if (g.chance(0.15)) out.push('PRDR');
    return out;
  }
  const out: string[] = [];
  const n = 1 + g.int(4);
  for (let i = 0; i < n; i++) {
    out.push(
      g.weighted<() => string>([
        [6, () => `SIZE=${g.pick([String(g.int(max)), String(max), String(max + 1), '0', '99999999999999999999', '123456789012345678901', '-1', 'abc', '', '1e5', ' '])}`],
        [5, () => `BODY=${g.pick(['7BIT', '8BITMIME', '8bitmime', 'BINARYMIME', '', 'X'])}`],
        [3, () => g.pick(['SMTPUTF8', 'SMTPUTF8=YES', 'smtputf8'])],
        [4, () => `RET=${g.pick(['FULL', 'HDRS', 'hdrs', 'X', ''])}`],
        [8, () =>
          `ENVID=${g.pick([
            xtextOf(g, 10),
            'e'.repeat(100),
            'e'.repeat(101),
            'a+0D+0AX-Injected:+20yes',
            'a+0Ab',
            'a+0Db',
            'a+00b',
            'a+7Fb',
            'a+C2+85b',
            'caf+C3+A9',
            'bad+zz',
            'low+2b',
            'trail+',
            'raw\u00e9',
            '',
            'a=b',
          ])}`],
        [3, () => g.pick(['INLINE-DSN', 'INLINE-DSN=1', 'inline-dsn'])],
        [3, () => g.pick(['PRDR', 'PRDR=x', 'prdr'])],
        [2, () => g.pick(['CONPERM', 'CONNEG', 'DRUCOF', 'REQUIRETLS', 'AUTH=<>', 'AUTH=x@y', 'MT-PRIORITY=3', 'BY=120;R'])],
        [4, () => g.pick(['X-FOO=bar', 'FOO', 'A_B=1', '=x', 'K=', '==', 'K==v', '-A=1', `${'K'.repeat(g.pick([40, 600]))}=1`, `X=${'v'.repeat(600)}`])],
        [2, () => `SIZE=1 SIZE=2`],
        [1, () => `X=\u0000`],
      ])(),
    );
  }
  return out;
}

function rcptParams(g: Gen, valid: boolean): string[] {
  if (valid) {
    const out: string[] = [];
    if (g.chance(0.3)) out.push(`NOTIFY=${g.pick(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY', 'SUCCESS,FAILURE', 'FAILURE,DELAY', 'SUCCESS,FAILURE,DELAY'])}`);
    if (g.chance(0.3)) out.push(`ORCPT=rfc822;${xtextOf(g, 1 + g.int(20))}+2Btag@b.test`);
    if (g.chance(0.15)) out.push('DRUCOF');
    if (g.chance(0.15)) out.push(g.pick(['CONNEG', 'CONNEG=OPTIONAL']));
    return out;
  }
  const out: string[] = [];
  const n = 1 + g.int(3);
  for (let i = 0; i < n; i++) {
    out.push(
      g.weighted<() => string>([
        [8, () =>
          `NOTIFY=${g.pick(['NEVER', 'SUCCESS,FAILURE,DELAY', 'NEVER,SUCCESS', 'success', 'SUCCESS,SUCCESS', '', 'BOGUS', 'SUCCESS,', ',', 'SUCCESS,FAILURE,DELAY,NEVERX', 'X'.repeat(29)])}`],
        [8, () =>
          `ORCPT=${g.pick([
            'rfc822;x@b.test',
            'rfc822;x+2By@b.test',
            'utf-8;x\\x{E9}@b.test',
            'RFC822;x@b.test',
            'x-type;abc',
            'rfc822',
            ';x@b.test',
            'rfc822;',
            'rfc822;a+0D+0AX-Injected:+20yes@b.test',
            'rfc822;a+00@b.test',
            'rfc822;a+C2+85@b.test',
            'rfc822;bad+zz',
            `rfc822;${'o'.repeat(493)}`,
            `rfc822;${'o'.repeat(494)}`,
            'r f c;x',
            'rfc822;x@b.test;y',
          ])}`],
        [4, () => g.pick(['DRUCOF', 'DRUCOF=1', 'drucof'])],
        [4, () => g.pick(['CONNEG', 'CONNEG=OPTIONAL', 'CONNEG=x', 'conneg=optional', 'CONPERM'])],
        [3, () => g.pick(['FOO=1', 'X', 'NOTIFY', 'ORCPT', '=', `${'K'.repeat(600)}`])],
        [1, () => 'NOTIFY=DELAY NOTIFY=DELAY'],
      ])(),
    );
  }
  return out;
}

function mailCommand(g: Gen, valid = g.chance(0.6)): string {
  const verb = g.weighted([
    [9, 'MAIL FROM:'],
    [1, g.pick(['mail from:', 'MAIL FROM: ', 'MAIL FROM :', 'MAIL  FROM:', 'MAIL', 'MAIL TO:', 'MAIL FROM'])],
  ]);
  const params = mailParams(g, valid || g.chance(0.3));
  return [verb + address(g, 'mail'), ...params].join(' ');
}

function rcptCommand(g: Gen, valid = g.chance(0.6)): string {
  const verb = g.weighted([
    [9, 'RCPT TO:'],
    [1, g.pick(['rcpt to:', 'RCPT TO: ', 'RCPT  TO:', 'RCPT', 'RCPT FROM:'])],
  ]);
  const params = rcptParams(g, valid || g.chance(0.3));
  return [verb + address(g, 'rcpt'), ...params].join(' ');
}

function authCommands(g: Gen): string[] {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
  const good = g.chance(0.4);
  const pass = good ? FUZZ_USER.password : g.pick(['wrong', '', 'x'.repeat(300)]);
  const user = good ? FUZZ_USER.name : g.pick([FUZZ_USER.name, 'nobody', 'a\u0000b', 'ü']);
  return g.weighted<() => string[]>([
    [4, () => [`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`]],
    [2, () => ['AUTH PLAIN', b64(`${g.pick(['', user])}\0${user}\0${pass}`)]],
    [3, () => ['AUTH LOGIN', b64(user), b64(pass)]],
    [1, () => [`AUTH LOGIN ${b64(user)}`, b64(pass)]],
    [1, () => ['AUTH PLAIN', '*']],
    [1, () => ['AUTH LOGIN', '*']],
    [2, () => [g.pick(['AUTH PLAIN !!!notbase64', 'AUTH PLAIN =', 'AUTH PLAIN a b', 'AUTH', 'AUTH CRAM-MD5', 'AUTH XOAUTH2 abc', 'AUTH GSSAPI', `AUTH PLAIN ${b64('no-nuls')}`, `AUTH PLAIN ${'A'.repeat(2000)}`])]],
  ])();
}

/** A line of printable garbage, controls, 8-bit and NUL (never the verb DATA). */
function garbageLine(g: Gen): Buffer {
  const n = g.pick([0, 1, 5, 20, 100, 400, 1000]);
  const b = g.weighted<() => Buffer>([
    [4, () => Buffer.from(g.str(n, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ :<>@=;,.-+abc'), 'latin1')],
    [3, () => g.bytes(n)],
    [1, () => Buffer.from(`GET / HTTP/1.1`)],
    [1, () => Buffer.from(g.pick(['HELP', 'EXPN list', 'TURN', 'ETRN b.test', 'XCLIENT ADDR=1.2.3.4', 'XFORWARD NAME=x', 'WIZ', 'SHELL', 'KILL', 'LHLO x', 'ATRN', 'VRFY', 'VRFY <x@b.test>', 'NOOP x y', 'RSET x', 'QUIT now', ' ', '\t', 'STARTTLS x']))],
  ])();
  let out = Buffer.from(b.toString('latin1').replace(/\n/g, ' '), 'latin1');
  const verb = out.toString('utf8').split(' ')[0]!.toUpperCase();
  if (verb === 'DATA' || verb === 'QUIT' || verb === 'BDAT') out = Buffer.concat([Buffer.from('X'), out]);
  return out;
}

/** Dot-stuffs message data so that no CRLF.CRLF can end it early (RFC 5321 §4.5.2). */
function dotStuff(b: Buffer): Buffer {
  const s = b.toString('latin1');
  const stuffed = s.replace(/^\./, '..').replace(/\r\n\./g, '\r\n..');
  return stuffed === s ? b : Buffer.from(stuffed, 'latin1');
}

function messageData(g: Gen): Buffer {
  const id = `<${g.str(16)}@a.test>`;
  const head = `From: s@a.test\r\nTo: r@b.test\r\nSubject: fuzz ${g.str(6)}\r\nMessage-ID: ${id}\r\n`;
  const kind = g.weighted<string>([
    [45, 'plain'],
    [12, 'controls'],
    [10, '8bit'],
    [5, 'long-line'],
    [10, 'multipart'],
    [5, 'binary'],
    [3, 'too-big'],
    [3, 'empty'],
    [4, 'words'],
    [3, 'dots'],
  ]);
  switch (kind) {
    case 'plain':
      return Buffer.from(`${head}\r\n${'Hello.\r\n'.repeat(1 + g.int(20))}`);
    case 'controls': {
      const parts = [head, '\r\n'];
      for (let i = 0; i < 10; i++) parts.push(g.pick(['bare LF\n', 'bare CR\r', 'NUL\u0000here\r\n', 'tab\tand\u000bvt\r\n', 'esc\u001b[31m\r\n', 'CR CR\r\r\n', 'LF CR\n\r', 'ok\r\n']));
      return Buffer.from(parts.join(''), 'latin1');
    }
    case '8bit':
      return Buffer.concat([Buffer.from(`${head}\r\n`), Buffer.from('caf\u00e9 \u00fcber \u65e5\u672c\r\n', 'utf8'), Buffer.from([0xe9, 0xff, 0x80, 0x0d, 0x0a])]);
    case 'long-line':
      return Buffer.from(`${head}\r\n${'x'.repeat(g.pick([998, 1000, 1001, 10_000, 65_537, 70_000]))}\r\n`);
    case 'multipart': {
      const bnd = `b${g.str(8)}`;
      return Buffer.from(
        `${head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${bnd}"\r\n\r\n--${bnd}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n${Buffer.from(g.pick(['hello', 'a forbidden word', 'nothing'])).toString('base64')}\r\n--${bnd}\r\nContent-Type: application/octet-stream\r\n\r\n${g.str(100)}\r\n--${bnd}--\r\n`,
      );
    }
    case 'binary':
      return Buffer.concat([Buffer.from(`${head}\r\n`), g.bytes(g.pick([10, 1000, 20_000]))]);
    case 'too-big':
      return Buffer.from(`${head}\r\n${('y'.repeat(76) + '\r\n').repeat(Math.ceil((FUZZ_LIMITS.maxMessageSize + 1000) / 78))}`);
    case 'empty':
      return Buffer.alloc(0);
    case 'words':
      return Buffer.from(`${head}\r\nThis is FORBIDDEN text.\r\n`);
    case 'dots':
      return Buffer.from(`${head}\r\n.\r\n..\r\n.x\r\n\n.\n\r.\r`, 'latin1');
    default:
      throw new Error(kind);
  }
}

// ---------------------------------------------------------------------------
// Session scripts

type Ending = 'quit' | 'quit-pipelined-fin' | 'fin' | 'close' | 'reset' | 'mid-command' | 'mid-data';

async function runData(s: Session, g: Gen, ending: { abortInData: boolean }): Promise<void> {
  if (!s.dataMode) return;
  const data = dotStuff(messageData(g));
  if (ending.abortInData) {
    ending.abortInData = false;
    s.sendData(data.subarray(0, g.int(data.length + 1)));
    s.abort(g.chance(0.3));
    return;
  }
  // Sometimes in several writes, so the terminator straddles segments.
  if (data.length > 10 && g.chance(0.3)) {
    const cut = 1 + g.int(data.length - 1);
    s.sendData(data.subarray(0, cut));
    await new Promise((r) => setImmediate(r));
    s.sendData(data.subarray(cut));
  } else if (data.length > 0) s.sendData(data);
  s.endData(data.length > 0 ? data : undefined);
  await s.settle();
}

/** One well-formed-ish transaction; pipelined (RFC 2920 group ending in DATA) or in lock-step. */
async function transaction(s: Session, g: Gen, ending: { abortInData: boolean }): Promise<void> {
  const valid = g.chance(0.7);
  const lines = [mailCommand(g, valid)];
  const n = 1 + g.int(FUZZ_LIMITS.maxRecipients + 2);
  for (let i = 0; i < n; i++) lines.push(rcptCommand(g, valid || g.chance(0.5)));
  if (g.chance(0.1)) lines.push(g.pick(['NOOP', 'RSET', 'VRFY x']));
  lines.push(g.casing('DATA'));
  if (g.chance(0.5)) {
    s.sendCommandBytes(lines.map((l) => l + '\r\n').join(''));
    await s.settle();
  } else {
    for (const l of lines) {
      s.sendCommandBytes(l + g.eol());
      if (!(await s.settle()) || s.ending) return;
    }
  }
  await runData(s, g, ending);
}

async function step(s: Session, g: Gen, ending: { abortInData: boolean }): Promise<void> {
  const action = g.weighted<string>([
    [10, 'ehlo'],
    [2, 'helo'],
    [25, 'transaction'],
    [8, 'mail'],
    [8, 'rcpt'],
    [4, 'data'],
    [4, 'rset-noop'],
    [3, 'vrfy'],
    [5, 'auth'],
    [2, 'starttls'],
    [3, 'bdat'],
    [6, 'garbage'],
    [4, 'long'],
    [6, 'burst'],
    [2, 'split'],
  ]);
  const one = async (line: string, eol = g.eol()) => {
    s.sendCommandBytes(line + eol);
    await s.settle();
  };
  switch (action) {
    case 'ehlo':
      return one(`${g.casing('EHLO')}${g.chance(0.9) ? ' ' : g.pick(['', '  ', '\t'])}${heloName(g)}`);
    case 'helo':
      return one(`${g.casing('HELO')} ${heloName(g)}`);
    case 'transaction':
      return transaction(s, g, ending);
    case 'mail':
      return one(mailCommand(g));
    case 'rcpt':
      return one(rcptCommand(g));
    case 'data':
      await one(g.pick(['DATA', 'DATA x', 'data']), '\r\n');
      return runData(s, g, ending);
    case 'rset-noop':
      return one(g.pick(['RSET', 'NOOP', 'NOOP hello', 'rset', 'HELP', 'HELP MAIL']));
    case 'vrfy':
      return one(g.pick(['VRFY postmaster', 'VRFY <x@b.test>', 'VRFY', 'EXPN staff', `VRFY ${'v'.repeat(600)}`]));
    case 'auth':
      for (const l of authCommands(g)) {
        s.sendCommandBytes(l + '\r\n');
        if (!(await s.settle()) || s.ending || s.last?.code !== 334) return;
      }
      return;
    case 'starttls':
      return one(g.pick(['STARTTLS', 'STARTTLS x', 'starttls']));
    case 'bdat': {
      // CHUNKING is not offered: BDAT is an unknown command, and its chunk is more command lines.
      const chunk = g.chance(0.5) ? Buffer.from(`chunk line\r\nanother\r\n${g.str(5)}`) : g.bytes(g.int(200)).map((b) => (b === 0x0a ? 0x20 : b));
      s.sendCommandBytes(Buffer.concat([Buffer.from(`BDAT ${chunk.length}${g.chance(0.5) ? ' LAST' : ''}\r\n`), chunk, Buffer.from('\r\n')]));
      await s.settle();
      return;
    }
    case 'garbage': {
      const n = 1 + g.int(4);
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) parts.push(garbageLine(g), Buffer.from(g.eol()));
      s.sendCommandBytes(Buffer.concat(parts));
      await s.settle();
      return;
    }
    case 'long': {
      const len = g.pick([511, 512, 513, 1000, 4096, 16_383, 16_384, 16_385, 65_537, 70_000]);
      const prefix = g.pick(['NOOP ', 'MAIL FROM:<s@a.test> X=', 'RCPT TO:<r@b.test> ORCPT=rfc822;', 'EHLO ', 'VRFY ', 'XYZZY ']);
      const line = prefix + 'z'.repeat(Math.max(0, len - prefix.length));
      // Sometimes in pieces, as a slow writer would.
      if (g.chance(0.3)) {
        const b = Buffer.from(line + '\r\n');
        for (let at = 0; at < b.length; at += 8192) {
          s.sendCommandBytes(b.subarray(at, at + 8192));
          await new Promise((r) => setImmediate(r));
        }
        await s.settle();
        return;
      }
      return one(line, '\r\n');
    }
    case 'burst': {
      const n = 2 + g.int(30);
      const lines: string[] = [];
      for (let i = 0; i < n; i++) {
        lines.push(
          g.weighted<() => string>([
            [3, () => mailCommand(g)],
            [4, () => rcptCommand(g)],
            [3, () => g.pick(['NOOP', 'RSET', 'VRFY x', 'HELP'])],
            [1, () => `EHLO ${heloName(g)}`],
            [1, () => garbageLine(g).toString('latin1')],
          ])(),
        );
      }
      if (g.chance(0.3)) lines.push('DATA');
      s.sendCommandBytes(Buffer.from(lines.map((l) => l + g.eol()).join(''), 'latin1'));
      await s.settle();
      return runData(s, g, ending);
    }
    case 'split': {
      // One command in several writes, with pauses: the server must wait for the LF.
      const line = Buffer.from(`${mailCommand(g, true)}\r\n`);
      for (let at = 0; at < line.length; at += 1 + g.int(6)) {
        s.sendCommandBytes(line.subarray(at, at + 1 + g.int(6)));
        if (g.chance(0.2)) await new Promise((r) => setTimeout(r, g.int(5)));
      }
      await s.settle();
      return;
    }
    default:
      throw new Error(action);
  }
}

/** One session, reproducible from (seed, index). */
export async function runSession(seed: number, index: number, port: number, host: string, replyTimeoutMs: number): Promise<{ kind: string; ending: string; session: Session }> {
  const g = new Gen(seededRandom((seed * 1_000_003 + index) >>> 0));
  // One client address: another loopback address (127.0.0.2 …) has no PTR record, and
  // the relay's reverse look-up (capped at 1.5 s by smtp-server) would hold each greeting.
  const s = new Session(index, port, host, replyTimeoutMs);
  await new Promise<void>((resolve) => {
    s.socket.once('connect', () => resolve());
    s.socket.once('close', () => resolve());
  });
  const kind = g.weighted<string>([
    [80, 'grammar'],
    [10, 'garbage'],
    [4, 'early-talker'],
    [4, 'idle-quit'],
    [2, 'connect-close'],
  ]);
  if (s.closed) {
    s.violation('connect', 'connection refused or closed before the greeting');
    return { kind, ending: 'none', session: s };
  }
  if (kind === 'connect-close') {
    s.abort(g.chance(0.5));
    return { kind, ending: 'close', session: s };
  }
  if (kind === 'early-talker') {
    // Talks before the greeting: smtp-server answers 421 and closes.
    s.sendCommandBytes('EHLO early.test\r\nMAIL FROM:<s@a.test>\r\n');
    await s.settle();
    await s.waitClosed(replyTimeoutMs);
    return { kind, ending: 'server', session: s };
  }
  if (!(await s.settle())) return { kind, ending: 'timeout', session: s };
  if (s.ending) return { kind, ending: 'server', session: s };

  const ending = g.weighted<Ending>([
    [40, 'quit'],
    [8, 'quit-pipelined-fin'],
    [10, 'fin'],
    [12, 'close'],
    [5, 'reset'],
    [12, 'mid-command'],
    [13, 'mid-data'],
  ]);
  const state = { abortInData: ending === 'mid-data' };

  if (kind === 'grammar') {
    if (g.chance(0.85)) {
      s.sendCommandBytes(`${g.chance(0.9) ? 'EHLO' : 'HELO'} ${g.chance(0.9) ? 'client.test' : heloName(g)}\r\n`);
      await s.settle();
    }
    const steps = 1 + g.int(10);
    for (let i = 0; i < steps && !s.ending && !s.gone; i++) await step(s, g, state);
    // A mid-data ending needs a DATA that was accepted: one last clean transaction.
    if (state.abortInData && !s.ending && !s.gone) {
      s.sendCommandBytes('RSET\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n');
      await s.settle();
      await runData(s, g, state);
    }
  } else if (kind === 'garbage') {
    const n = 1 + g.int(8);
    for (let i = 0; i < n && !s.ending; i++) {
      s.sendCommandBytes(Buffer.concat([garbageLine(g), Buffer.from(g.eol())]));
      await s.settle();
    }
  } else if (kind === 'idle-quit') {
    await new Promise((r) => setTimeout(r, g.int(300)));
  }

  if (s.gone) return { kind, ending, session: s };
  if (s.closed) return { kind, ending: 'server', session: s };
  if (s.ending) {
    await s.waitClosed(replyTimeoutMs);
    return { kind, ending: 'server', session: s };
  }
  switch (ending) {
    case 'quit':
      s.sendCommandBytes(`${g.casing('QUIT')}\r\n`);
      await s.settle();
      if (!(await s.waitClosed(replyTimeoutMs))) s.violation('no-close', 'server did not close after QUIT');
      break;
    case 'quit-pipelined-fin':
      s.sendCommandBytes('NOOP\r\nQUIT\r\n');
      s.halfClose();
      await s.settle();
      if (!(await s.waitClosed(replyTimeoutMs))) s.violation('no-close', 'server did not close after QUIT + FIN');
      break;
    case 'fin':
      s.halfClose();
      await s.settle();
      if (!(await s.waitClosed(replyTimeoutMs))) s.violation('no-close', 'server did not close after FIN');
      break;
    case 'close':
    case 'mid-data': // the data phase was not reached: close instead
      s.abort(false);
      break;
    case 'reset':
      s.abort(true);
      break;
    case 'mid-command':
      s.sendCommandBytes(g.pick(['MAIL FROM:<s@a.test', 'RCPT TO:<r@b.te', 'EHL', 'AUTH PLAIN AGZ1enoA']));
      s.abort(g.chance(0.3));
      break;
  }
  return { kind, ending, session: s };
}

// ---------------------------------------------------------------------------
// Running many sessions

export interface FuzzOptions {
  readonly sessions: number;
  readonly seed: number;
  readonly concurrency: number;
  readonly port: number;
  readonly host?: string;
  /** Stop starting sessions after this long (the run reports how many it ran). */
  readonly timeBudgetMs?: number;
  readonly replyTimeoutMs?: number;
  /** Run only these session indexes (replaying a failure). */
  readonly only?: readonly number[];
  readonly onProgress?: (stats: FuzzStats) => void;
  /** Keep at most this many violations with transcripts (default 50). */
  readonly keepViolations?: number;
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzStats> {
  const host = opts.host ?? '127.0.0.1';
  const replyTimeoutMs = opts.replyTimeoutMs ?? 20_000;
  const keep = opts.keepViolations ?? 50;
  const stats: FuzzStats = {
    sessionsPlanned: opts.only ? opts.only.length : opts.sessions,
    sessionsRun: 0,
    commands: 0,
    replies: 0,
    accepted: 0,
    codes: new Map(),
    kinds: new Map(),
    endings: new Map(),
    violations: [],
    violationCounts: new Map(),
    elapsedMs: 0,
  };
  const started = Date.now();
  const indexes = opts.only ?? null;
  let next = 0;
  const take = (): number | undefined => {
    if (opts.timeBudgetMs !== undefined && Date.now() - started > opts.timeBudgetMs) return undefined;
    if (indexes) return next < indexes.length ? indexes[next++] : undefined;
    return next < opts.sessions ? next++ : undefined;
  };
  let progressAt = Date.now();
  const worker = async () => {
    for (let i = take(); i !== undefined; i = take()) {
      let result: Awaited<ReturnType<typeof runSession>>;
      try {
        result = await runSession(opts.seed, i, opts.port, host, replyTimeoutMs);
      } catch (err) {
        bump(stats.violationCounts, 'fuzzer-error');
        if (stats.violations.length < keep) stats.violations.push({ session: i, kind: 'fuzzer-error', detail: String((err as Error)?.stack ?? err), transcript: '' });
        continue;
      }
      const s = result.session;
      if (!s.closed) s.abort(false);
      stats.sessionsRun++;
      stats.commands += s.commands;
      stats.replies += s.replies;
      stats.accepted += s.accepted;
      for (const c of s.codes) bump(stats.codes, c);
      bump(stats.kinds, result.kind);
      bump(stats.endings, result.ending);
      for (const v of s.violations) {
        bump(stats.violationCounts, v.kind);
        if (stats.violations.length < keep) stats.violations.push({ session: i, kind: v.kind, detail: v.detail, transcript: s.transcript() });
      }
      if (opts.onProgress && Date.now() - progressAt > 10_000) {
        progressAt = Date.now();
        stats.elapsedMs = Date.now() - started;
        opts.onProgress(stats);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  stats.elapsedMs = Date.now() - started;
  return stats;
}

// ---------------------------------------------------------------------------
// The relay under test: one process, real Redis, a sink as next hop

export function rssOf(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface RelayRunReport {
  readonly stats: FuzzStats;
  readonly pid: number;
  /** The relay was still running, same PID, when the fuzzing ended. */
  readonly alive: boolean;
  readonly exitCode: number | null;
  readonly rss: { readonly start: number; readonly peak: number; readonly end: number; readonly samples: number };
  readonly sinkMessages: number;
  readonly queueLeft: number;
  /** Log lines at level error or fatal (pino 50/60). */
  readonly errorLogs: readonly string[];
  readonly failures: readonly string[];
}

interface RelayChild {
  readonly port: number;
  readonly proc: ChildProcess;
  /** Error/fatal log lines and anything that is not a JSON log line (a crash's stack). */
  readonly problems: () => string[];
  stop(signal: NodeJS.Signals): Promise<number | null>;
}

const BIN = new URL('../../bin/drucof-relay.js', import.meta.url).pathname;

/**
 * `drucof-relay start` as a child process at log level warn (the helper in
 * relay-process.ts waits for an info line and keeps all output; 100,000 sessions
 * would make that large). Ready when the port answers.
 */
async function spawnRelay(config: Record<string, unknown>, env: Record<string, string>): Promise<RelayChild> {
  const dir = mkdtempSync(join(tmpdir(), 'drucof-fuzz-'));
  const file = join(dir, 'relay.yaml');
  writeFileSync(file, YAML.stringify(config));
  const port = await freePort();
  const proc = spawn(process.execPath, [BIN, 'start', '--config', file], {
    env: { ...process.env, RELAY_LISTEN: `127.0.0.1:${port}`, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Killed with the script (Ctrl-C, SIGTERM), and its config removed either way.
  const unregister = children.add(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  proc.once('exit', () => {
    unregister();
    rmSync(dir, { recursive: true, force: true });
  });
  const problems: string[] = [];
  let tail = '';
  const onOutput = (d: Buffer) => {
    tail += d.toString();
    const lines = tail.split('\n');
    tail = lines.pop() ?? '';
    for (const l of lines) {
      if (l.trim() === '') continue;
      if (/"level":(50|60)/.test(l) || !l.startsWith('{')) {
        if (problems.length < 100) problems.push(l.slice(0, 2000));
      }
    }
  };
  proc.stdout!.on('data', onOutput);
  proc.stderr!.on('data', onOutput);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`relay exited with ${proc.exitCode}:\n${problems.join('\n')}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`relay did not listen within 30 s:\n${problems.join('\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    port,
    proc,
    problems: () => [...problems, ...(tail.trim() ? [tail] : [])],
    stop: (signal) =>
      new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode);
        proc.once('exit', (code) => resolve(code));
        proc.kill(signal);
      }),
  };
}

/** Flags RSS growth over this much from start to end. */
export const RSS_GROWTH_LIMIT = 150 * 1024 * 1024;

/** `redisUrl`: a Redis of the caller's (the script starts a private one); default the tests' shared Redis, under a prefix dropped afterwards. */
export async function fuzzRelay(opts: Omit<FuzzOptions, 'port' | 'host'> & { log?: (line: string) => void; redisUrl?: string }): Promise<RelayRunReport> {
  const log = opts.log ?? (() => {});
  const prefix = uniquePrefix('fuzz-smtp');
  const redisUrl = opts.redisUrl ?? REDIS_URL;
  const sink: Sink = await startSink({ record: false });
  let relay: RelayChild | undefined;
  const redis = new Redis(redisUrl);
  const store = new MessageStore(redis, prefix);
  try {
    relay = await spawnRelay(fuzzRelayConfig(), { RELAY_SMARTHOST: `127.0.0.1:${sink.port}`, REDIS_URL: redisUrl, RELAY_QUEUE_PREFIX: prefix, LOG_LEVEL: 'warn' });
    const pid = relay.proc.pid!;
    let exited = false;
    relay.proc.once('exit', () => (exited = true));
    await new Promise((r) => setTimeout(r, 500));
    const start = rssOf(pid) ?? 0;
    let peak = start;
    let samples = 1;
    const sampler = setInterval(() => {
      const v = rssOf(pid);
      if (v !== undefined) {
        samples++;
        if (v > peak) peak = v;
      }
    }, 1000);
    let stats: FuzzStats;
    try {
      stats = await runFuzz({
        ...opts,
        port: relay.port,
        onProgress: (st) => {
          const mib = ((rssOf(pid) ?? 0) / 1048576).toFixed(0);
          log(`  … ${st.sessionsRun} sessions, ${(st.sessionsRun / (st.elapsedMs / 1000)).toFixed(1)}/s, ${st.accepted} accepted, ${[...st.violationCounts.values()].reduce((a, b) => a + b, 0)} violations, relay RSS ${mib} MiB`);
          opts.onProgress?.(st);
        },
      });
    } finally {
      clearInterval(sampler);
    }
    const alive = !exited && relay.proc.exitCode === null && relay.proc.signalCode === null && relay.proc.pid === pid;
    // Let the worker deliver what was accepted.
    let queueLeft = -1;
    const drainUntil = Date.now() + 60_000;
    while (alive && Date.now() < drainUntil) {
      const c = await store.queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
      queueLeft = Object.values(c).reduce((a, b) => a + b, 0);
      if (queueLeft === 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const end = rssOf(pid) ?? 0;
    if (end > peak) peak = end;
    const exitCode = await relay.stop('SIGTERM');
    const errorLogs = relay.problems().slice(0, 20);
    const failures: string[] = [];
    const nViolations = [...stats.violationCounts.values()].reduce((a, b) => a + b, 0);
    if (nViolations > 0) failures.push(`${nViolations} violations: ${[...stats.violationCounts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
    if (!alive) failures.push(`relay process died during the run (exit ${relay.proc.exitCode}, signal ${relay.proc.signalCode})`);
    if (exitCode !== 0) failures.push(`relay exit code ${exitCode} after SIGTERM`);
    if (end - start > RSS_GROWTH_LIMIT) failures.push(`RSS grew ${((end - start) / 1048576).toFixed(0)} MiB (start ${(start / 1048576).toFixed(0)}, end ${(end / 1048576).toFixed(0)})`);
    if (queueLeft !== 0) failures.push(`${queueLeft} jobs still queued after 60 s`);
    if (errorLogs.length > 0) failures.push(`${errorLogs.length} error/fatal log lines`);
    return { stats, pid, alive, exitCode, rss: { start, peak, end, samples }, sinkMessages: sink.messages(), queueLeft, errorLogs, failures };
  } finally {
    if (relay && relay.proc.exitCode === null && relay.proc.signalCode === null) await relay.stop('SIGKILL');
    await sink.close();
    await store.close();
    redis.disconnect();
    if (!opts.redisUrl) await dropPrefix(prefix);
  }
}

export function formatReport(r: RelayRunReport, opts: { seed: number; concurrency: number }): string[] {
  const s = r.stats;
  const mib = (b: number) => (b / 1048576).toFixed(0);
  const nViolations = [...s.violationCounts.values()].reduce((a, b) => a + b, 0);
  const codes = [...s.codes].sort((a, b) => a[0] - b[0]).map(([c, n]) => `${c}×${n}`).join(' ');
  return [
    `fuzz-smtp: seed=${opts.seed} sessions=${s.sessionsRun}/${s.sessionsPlanned} concurrency=${opts.concurrency} elapsed=${(s.elapsedMs / 1000).toFixed(1)}s rate=${(s.sessionsRun / (s.elapsedMs / 1000)).toFixed(1)} sessions/s`,
    `fuzz-smtp: commands=${s.commands} replies=${s.replies} accepted=${s.accepted} sink-transactions=${r.sinkMessages} queue-left=${r.queueLeft} violations=${nViolations}${nViolations ? ` (${[...s.violationCounts].map(([k, v]) => `${k}=${v}`).join(' ')})` : ''}`,
    `fuzz-smtp: relay pid=${r.pid} alive-at-end=${r.alive ? 'yes' : 'NO'} exit-after-SIGTERM=${r.exitCode} rss start=${mib(r.rss.start)} peak=${mib(r.rss.peak)} end=${mib(r.rss.end)} MiB (${r.rss.samples} samples, growth ${mib(r.rss.end - r.rss.start)} MiB, limit ${mib(RSS_GROWTH_LIMIT)}) error-logs=${r.errorLogs.length}`,
    `fuzz-smtp: sessions by kind ${[...s.kinds].map(([k, v]) => `${k}=${v}`).join(' ')}; by ending ${[...s.endings].map(([k, v]) => `${k}=${v}`).join(' ')}`,
    `fuzz-smtp: reply codes ${codes}`,
    r.failures.length === 0 ? 'fuzz-smtp: PASS' : `fuzz-smtp: FAIL: ${r.failures.join('; ')}`,
  ];
}

// ---------------------------------------------------------------------------
// Command line

async function main(): Promise<void> {
  const a = scriptArgs(
    'fuzz-smtp.ts',
    'node --import tsx test/faults/fuzz-smtp.ts [--sessions 100000] [--seed 1] [--concurrency 64] [--minutes 15] [--only N,M (replay sessions)]',
    {
      sessions: { type: 'string', default: '100000' },
      seed: { type: 'string', default: '1' },
      concurrency: { type: 'string', default: '64' },
      minutes: { type: 'string', default: '15' },
      only: { type: 'string' },
    },
  );
  const sessions = Number(a.sessions);
  const seed = Number(a.seed);
  const concurrency = Number(a.concurrency);
  const minutes = Number(a.minutes);
  const only = a.only !== undefined ? a.only.split(',').map(Number) : undefined;
  // A private Redis (removed afterwards, also on Ctrl-C): an interrupted run leaves nothing behind.
  children.installExitHandlers();
  const redis = await startRedis();
  const report = await fuzzRelay({
    sessions,
    seed,
    concurrency: only ? 1 : concurrency,
    timeBudgetMs: minutes * 60_000,
    ...(only && { only }),
    log: (l) => console.log(l),
    redisUrl: redis.url,
  }).finally(() => redis.stop());
  for (const line of formatReport(report, { seed, concurrency })) console.log(line);
  for (const v of report.stats.violations.slice(0, 10)) {
    console.log(`\n--- session ${v.session} (replay: --seed ${seed} --only ${v.session}): ${v.kind}: ${v.detail}\n${v.transcript}`);
  }
  for (const l of report.errorLogs) console.log(`relay log: ${l.slice(0, 500)}`);
  process.exitCode = report.failures.length === 0 ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 2;
  });
}
