/**
 * A fast path for nodemailer's DATA encoder. Its DataStream visits every byte
 * in JavaScript to stuff leading dots and turn bare CR / bare LF into CRLF:
 * about a tenth of the relay's CPU at 100 KB per message. What we send is
 * almost always already clean (stored as received: CRLF lines, dots stuffed
 * only on the wire), so a chunk is checked with native byte searches and
 * passed through untouched when nothing needs inserting; any other chunk goes
 * to nodemailer's own transform, so the bytes on the wire are exactly the
 * stock encoder's (test/unit/dot-stuff.test.ts compares both).
 */
import type { Transform, TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/**
 * True when the stock encoder would pass `chunk` through unchanged: every CR is
 * followed by LF, every LF preceded by CR and not followed by a dot, and no dot
 * starts the data or a line begun in the previous chunk. `lastByte` is the
 * previous chunk's last byte, or false before the first.
 */
export function needsNoStuffing(chunk: Buffer, lastByte: number | false): boolean {
  const n = chunk.length;
  if (n === 0) return true;
  const first = chunk[0]!;
  if (lastByte === CR && first !== LF) return false;
  if (first === DOT && (lastByte === LF || lastByte === false)) return false;
  for (let i = chunk.indexOf(LF); i >= 0; i = chunk.indexOf(LF, i + 1)) {
    if ((i > 0 ? chunk[i - 1] : lastByte) !== CR) return false;
    if (i + 1 < n && chunk[i + 1] === DOT) return false;
  }
  for (let i = chunk.indexOf(CR); i >= 0 && i + 1 < n; i = chunk.indexOf(CR, i + 1)) {
    if (chunk[i + 1] !== LF) return false;
  }
  return true;
}

/** nodemailer's DataStream fields the fast path keeps in step (its log line and its _flush read them). */
interface DataStreamState {
  inByteCount: number;
  outByteCount: number;
  lastByte: number | false;
}

/**
 * Gives one nodemailer DataStream the fast path: clean chunks pass through,
 * the rest go to the stock `_transform`. Streams of another shape are left
 * alone (a nodemailer upgrade then costs speed, not correctness).
 */
export function speedUpDataStream(stream: unknown): void {
  const s = stream as Transform & Partial<DataStreamState>;
  if (typeof s?._transform !== 'function' || typeof s.inByteCount !== 'number' || typeof s.outByteCount !== 'number' || !('lastByte' in s)) return;
  const stock = s._transform;
  const state = s as Transform & DataStreamState;
  s._transform = function (chunk: Buffer | string, encoding: BufferEncoding, done: TransformCallback): void {
    if (!Buffer.isBuffer(chunk) || chunk.length === 0 || !needsNoStuffing(chunk, state.lastByte)) {
      stock.call(this, chunk, encoding, done);
      return;
    }
    state.inByteCount += chunk.length;
    state.outByteCount += chunk.length;
    state.lastByte = chunk[chunk.length - 1]!;
    this.push(chunk);
    done();
  };
}
