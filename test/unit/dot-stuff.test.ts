import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Transform } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { needsNoStuffing, speedUpDataStream } from '../../src/outbound/dot-stuff.ts';
import { seededRandom } from '../helpers/random.ts';

// nodemailer does not export its DataStream; the stock encoder is the reference we must match.
const nodemailerDir = dirname(createRequire(import.meta.url).resolve('nodemailer/package.json'));
const { default: DataStream } = (await import(pathToFileURL(join(nodemailerDir, 'dist/esm/smtp-connection/data-stream.js')).href)) as {
  default: new () => Transform & { inByteCount: number; outByteCount: number };
};

async function encode(chunks: readonly Buffer[], fast: boolean): Promise<{ out: Buffer; inBytes: number; outBytes: number }> {
  const s = new DataStream();
  if (fast) speedUpDataStream(s);
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  const ended = new Promise((r) => s.on('end', r));
  for (const c of chunks) s.write(c);
  s.end();
  await ended;
  return { out: Buffer.concat(parts), inBytes: s.inByteCount, outBytes: s.outByteCount };
}

const TOKENS = ['a', 'text ', '.', '..', '\r', '\n', '\r\n', '\r\n.', '\r\n..\r\n', '\n.', '\r.', 'é', '\x00'];

describe('needsNoStuffing', () => {
  const clean = Buffer.from('Subject: x\r\n\r\nline one\r\nline two\r\n');
  it.each([
    ['clean CRLF text', clean, false, true],
    ['a chunk that ends in CR, LF to follow', Buffer.from('abc\r'), false, true],
    ['a chunk starting with LF after a CR', Buffer.from('\nabc\r\n'), 0x0d, true],
    ['a dot at the start of the data', Buffer.from('.abc\r\n'), false, false],
    ['a dot at the start of a line', Buffer.from('abc\r\n.def\r\n'), false, false],
    ['a dot starting a chunk after LF', Buffer.from('.def\r\n'), 0x0a, false],
    ['a dot starting a chunk mid-line', Buffer.from('.def\r\n'), 0x61, true],
    ['a bare LF', Buffer.from('abc\ndef'), false, false],
    ['a bare CR', Buffer.from('abc\rdef'), false, false],
    ['an LF first after a non-CR', Buffer.from('\nabc'), 0x61, false],
    ['a CR then a non-LF across chunks', Buffer.from('abc'), 0x0d, false],
  ] as const)('%s', (_name, chunk, last, expected) => {
    expect(needsNoStuffing(chunk, last)).toBe(expected);
  });
});

describe('the fast DataStream', () => {
  it('writes exactly what nodemailer writes, byte counts included, for 2000 random messages in random chunks', async () => {
    const random = seededRandom(8);
    for (let n = 0; n < 2000; n++) {
      const body = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 40) }, () => TOKENS[Math.floor(random() * TOKENS.length)]).join(''), 'latin1');
      const chunks: Buffer[] = [];
      for (let at = 0; at < body.length; ) {
        const len = 1 + Math.floor(random() * 12);
        chunks.push(body.subarray(at, at + len));
        at += len;
      }
      const [stock, fast] = await Promise.all([encode(chunks, false), encode(chunks, true)]);
      expect(fast.out.equals(stock.out), JSON.stringify(body.toString('latin1'))).toBe(true);
      expect([fast.inBytes, fast.outBytes]).toEqual([stock.inBytes, stock.outBytes]);
    }
  });

  it('passes a clean 100 KB message through as the same buffer', async () => {
    const body = Buffer.from('Subject: big\r\n\r\n' + 'Lorem ipsum dolor sit amet, consectetur adipiscing elit sed do\r\n'.repeat(1600));
    const s = new DataStream();
    speedUpDataStream(s);
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    const ended = new Promise((r) => s.on('end', r));
    s.end(body);
    await ended;
    expect(parts[0]).toBe(body);
    expect(Buffer.concat(parts).equals(Buffer.concat([body, Buffer.from('.\r\n')]))).toBe(true);
  });

  it('leaves a stream of another shape alone', () => {
    const other = { _transform: () => undefined };
    speedUpDataStream(other);
    expect(other._transform.name).toBe('_transform');
  });
});
