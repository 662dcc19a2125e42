/**
 * Wire-level SMTP client for tests (maddy's testutils style): connect, send raw
 * lines, read complete replies (multi-line ones joined), expect codes. It sends
 * exactly what the test says, so it can pipeline, half-close, or send garbage.
 * Replies are parsed by src/smtp/reply-format.ts (the one reply parser).
 *
 *   const d = await Dialog.connect(port);
 *   await d.expect(220);
 *   d.send('EHLO client.test');
 *   const ehlo = await d.expect(250);
 */
import net from 'node:net';
import type { Reply } from '../../src/model/reply.ts';
import { parseReply } from '../../src/smtp/reply-format.ts';

export interface WireReply {
  readonly code: number;
  /** The raw lines, CRLF stripped: `250-2.1.5 ok`. */
  readonly raw: readonly string[];
  /** The raw lines joined with `\n`, for `toMatch`. */
  readonly text: string;
  /** Parsed (enhanced code, tags, text lines); undefined if malformed. */
  readonly reply: Reply | undefined;
}

export class DialogError extends Error {}

export class Dialog {
  private buffer = '';
  private pendingLines: string[] = [];
  private readonly replies: WireReply[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  private readonly endedPromise: Promise<void>;
  /** Everything received, for debugging a failed test. */
  transcript = '';

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    this.endedPromise = new Promise((resolve) => {
      const done = () => {
        this.ended = true;
        this.wake();
        resolve();
      };
      socket.once('end', done);
      socket.once('close', done);
    });
    socket.on('error', () => {
      /* surfaces as 'close'; reads then fail with the transcript */
    });
  }

  /** `localAddress` picks the client's source address (e.g. `127.0.0.2`: another client on loopback). */
  static connect(port: number, host = '127.0.0.1', timeoutMs = 5000, opts: { localAddress?: string } = {}): Promise<Dialog> {
    return new Promise((resolve, reject) => {
      // Not allowHalfOpen: like a real client, close our side when the server closes its own.
      const socket = net.connect({ port, host, ...(opts.localAddress && { localAddress: opts.localAddress }) });
      const t = setTimeout(() => {
        socket.destroy();
        reject(new DialogError(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(t);
        socket.removeListener('error', reject);
        resolve(new Dialog(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Sends one command line (CRLF added). */
  send(line: string): this {
    this.socket.write(line + '\r\n');
    return this;
  }

  /** Sends bytes exactly as given (message data, pipelined batches, bare LFs). */
  write(data: string | Buffer): this {
    this.socket.write(data);
    return this;
  }

  /** Half-closes: sends FIN, keeps reading (what Exim does after a pipelined QUIT). */
  end(): this {
    this.socket.end();
    return this;
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves when the server has closed its side. */
  closed(): Promise<void> {
    return this.endedPromise;
  }

  /** Whether the server has closed its side. */
  get isClosed(): boolean {
    return this.ended;
  }

  /** The next complete reply; rejects after `timeoutMs` or when the server closed first. */
  async read(timeoutMs = 5000): Promise<WireReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.replies.shift();
      if (r) return r;
      if (this.ended) throw new DialogError(`connection closed while waiting for a reply; transcript:\n${this.transcript}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new DialogError(`no reply within ${timeoutMs} ms; transcript:\n${this.transcript}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /**
   * Reads the next reply and checks its code (and enhanced code, if given).
   * Throws with the reply and the transcript otherwise.
   */
  async expect(code: number, enhanced?: string, timeoutMs = 5000): Promise<WireReply> {
    const r = await this.read(timeoutMs);
    const gotEnhanced = r.reply?.enhanced;
    if (r.code !== code || (enhanced !== undefined && gotEnhanced !== enhanced)) {
      throw new DialogError(`expected ${code}${enhanced ? ' ' + enhanced : ''}, got:\n${r.text}\ntranscript:\n${this.transcript}`);
    }
    return r;
  }

  /** Sends a command and expects its reply. */
  async command(line: string, code: number, enhanced?: string): Promise<WireReply> {
    this.send(line);
    return this.expect(code, enhanced);
  }

  /** Reads the greeting and says EHLO; returns the EHLO reply. */
  async hello(name = 'client.test'): Promise<WireReply> {
    await this.expect(220);
    return this.command(`EHLO ${name}`, 250);
  }

  /** Sends QUIT and expects 221 (the server then closes). */
  async quit(): Promise<void> {
    await this.command('QUIT', 221);
    this.socket.end();
  }

  private onData(chunk: string): void {
    this.transcript += chunk;
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      this.pendingLines.push(line);
      // The last line of a reply has a space (or nothing) after the code.
      if (!/^\d{3}-/.test(line)) {
        const raw = this.pendingLines;
        this.pendingLines = [];
        this.replies.push({ code: Number(raw[raw.length - 1]!.slice(0, 3)), raw, text: raw.join('\n'), reply: parseReply(raw) });
      }
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}
