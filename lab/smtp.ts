/**
 * A small SMTP client for the lab: it sends exactly the lines it is given (so it
 * can say `RCPT TO:<r> DRUCOF`, `MAIL FROM:<s> INLINE-DSN`, which swaks and
 * nodemailer cannot) and reads whole replies. Replies are parsed by the relay's
 * own reply parser (src/smtp/reply-format.ts), which also reads `[QUEUEID …]`.
 */
import net from 'node:net';
import type { Reply } from '../src/model/reply.ts';
import { parseReply } from '../src/smtp/reply-format.ts';

export interface SmtpReply {
  readonly code: number;
  /** The raw lines, CRLF stripped: `250-2.1.5 ok`. */
  readonly lines: readonly string[];
  /** Parsed (enhanced code, text, tags such as the queue id); undefined if malformed. */
  readonly reply: Reply | undefined;
}

export class SmtpError extends Error {}

export class SmtpClient {
  private buffer = '';
  private pending: string[] = [];
  private readonly replies: SmtpReply[] = [];
  private wake: (() => void) | undefined;
  private closed = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly where: string,
  ) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => this.onData(chunk));
    const done = () => {
      this.closed = true;
      this.wake?.();
    };
    socket.on('close', done);
    socket.on('end', done);
    socket.on('error', () => {});
  }

  static connect(host: string, port: number, timeoutMs = 5000): Promise<SmtpClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const t = setTimeout(() => {
        socket.destroy();
        reject(new SmtpError(`no answer from ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(t);
        socket.removeAllListeners('error');
        resolve(new SmtpClient(socket, `${host}:${port}`));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(t);
        reject(new SmtpError(`cannot connect to ${host}:${port} (${err.code ?? err.message})`));
      });
    });
  }

  /** The next whole reply. */
  async read(timeoutMs = 30_000): Promise<SmtpReply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.replies.shift();
      if (r) return r;
      if (this.closed) throw new SmtpError(`${this.where} closed the connection while a reply was awaited`);
      const left = deadline - Date.now();
      if (left <= 0) throw new SmtpError(`no reply from ${this.where} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  send(line: string): void {
    this.socket.write(`${line}\r\n`, 'latin1');
  }

  /** Sends a command and reads its reply. */
  async command(line: string, timeoutMs?: number): Promise<SmtpReply> {
    this.send(line);
    return this.read(timeoutMs);
  }

  /** Sends a command and throws (naming the command and the reply) unless the reply has `code`. */
  async expect(line: string, code: number): Promise<SmtpReply> {
    const r = await this.command(line);
    if (r.code !== code) throw new SmtpError(`${line.split(' ')[0]} got "${r.lines.join(' / ')}" from ${this.where}, expected ${code}`);
    return r;
  }

  /** The message after DATA's 354: dot-stuffed, ending with CRLF.CRLF (the reply is not read here). */
  sendMessage(message: Buffer): void {
    let text = message.toString('latin1').replace(/\r?\n/g, '\r\n');
    if (!text.endsWith('\r\n')) text += '\r\n';
    this.socket.write(text.replace(/^\./gm, '..') + '.\r\n', 'latin1');
  }

  /** QUIT, politely; never throws. */
  async quit(): Promise<void> {
    try {
      if (!this.closed) await this.command('QUIT', 5000);
    } catch {
      /* the server may already have gone */
    }
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      this.pending.push(line);
      if (!/^\d{3}-/.test(line)) {
        const lines = this.pending;
        this.pending = [];
        this.replies.push({ code: Number(lines[0]!.slice(0, 3)), lines, reply: parseReply(lines) });
        this.wake?.();
      }
    }
  }
}

/** Waits until host:port greets with 220 (a relay that is up and listening), or the time is up. */
export async function greets(host: string, port: number, timeoutMs = 2000): Promise<boolean> {
  try {
    const c = await SmtpClient.connect(host, port, timeoutMs);
    try {
      return (await c.read(timeoutMs)).code === 220;
    } finally {
      await c.quit();
    }
  } catch {
    return false;
  }
}
