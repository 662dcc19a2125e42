/**
 * `drucof-relay convert` and `drucof-relay converters` as functions (the lead
 * wires them into src/main.ts): plan on stderr, message on stdout, exit codes.
 */
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { formatConverters, listConverters } from '../../src/cli/converters.ts';
import { runConvert } from '../../src/cli/convert.ts';
import { parseConfig } from '../../src/config/load.ts';
import { loadConverters } from '../../src/conversion/index.ts';
import { compose, image } from '../fixtures/images/mail.ts';

function sink(): { stream: PassThrough; text: () => string; bytes: () => Buffer } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString(), bytes: () => Buffer.concat(chunks) };
}

const config = parseConfig({ hostname: 'relay.test' });

describe('runConvert', () => {
  it('prints the plan per part on stderr and the converted message on stdout (exit 0)', async () => {
    const raw = await compose({ text: 'hi', html: '<p>hi</p>', attachments: [{ filename: 'p.png', content: image('photo.png'), contentType: 'image/png' }] });
    const out = sink();
    const err = sink();
    const code = await runConvert(config, '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=160)))', Readable.from([raw]), out.stream, err.stream);
    expect(code).toBe(0);
    const plan = err.text();
    expect(plan).toMatch(/^target: \(\| \(type="text\/plain"\)/);
    expect(plan).toMatch(/\n1\.1 +text\/plain utf-8 +permitted +keep +0\n/);
    expect(plan).toMatch(/\n1\.2 +text\/html utf-8 +permitted +convert +40 +html-to-text => text\/plain utf-8\n/);
    expect(plan).toMatch(/\n2 +image\/png 320x240 +permitted +convert +52 +sharp\/png-to-jpeg => image\/jpeg 160x120\n/);
    expect(plan).toMatch(/message: possible, total loss 92/);
    expect(plan).toMatch(/converted: 2 part\(s\), loss 92/);
    expect(out.text()).toMatch(/^Content-Conversions: relay\.test; 1\.2 text\/html -> text\/plain/);
  });

  it('an impossible message: the reason on stderr, nothing on stdout (exit 1)', async () => {
    const raw = await compose({ text: 'x', attachments: [{ filename: 'a.pdf', content: Buffer.from('%PDF'), contentType: 'application/pdf' }] });
    const out = sink();
    const err = sink();
    expect(await runConvert(config, '(type="text/plain")', Readable.from([raw]), out.stream, err.stream)).toBe(1);
    expect(err.text()).toMatch(/2 +application\/pdf +permitted +impossible +- +554 5\.6\.3 no conversion makes part 2/);
    expect(err.text()).toMatch(/message: NOT possible: 554 5\.6\.3/);
    expect(out.bytes().length).toBe(0);
  });

  it('a bad expression: the error with its position (exit 2)', async () => {
    const err = sink();
    expect(await runConvert(config, '(& (type="text/plain") (pix-x<1))', Readable.from([Buffer.from('x')]), sink().stream, err.stream)).toBe(2);
    expect(err.text()).toBe('drucof-relay convert: --caps: expected "=", "<=" or ">=" after "pix-x", found "<" at position 29\n  (& (type="text/plain") (pix-x<1))\n                               ^\n');
  });

  it('without DRUCOF nothing is converted', async () => {
    const raw = await compose({ html: '<p>x</p>' });
    const out = sink();
    const err = sink();
    expect(await runConvert(config, '(type="text/plain")', Readable.from([raw]), out.stream, err.stream, { drucof: false })).toBe(0);
    expect(err.text()).toMatch(/keep \(unusable\)/);
    expect(out.bytes().equals(raw)).toBe(true);
  });
});

describe('listConverters', () => {
  it('lists every loaded converter with its conversion, loss and origin', async () => {
    const out = sink();
    await listConverters(config, out.stream);
    const text = out.text();
    expect(text).toMatch(/^name +conversion +loss +origin +source\n/);
    expect(text).toMatch(/\nsharp\/png-to-jpeg +image\/png -> image\/jpeg +32 +builtin +converters\/image-format\.ts\n/);
    expect(text).toMatch(/\nhtml-to-text +text\/html -> text\/plain +40 +builtin +converters\/html-to-text\.ts\n/);
    const n = (await loadConverters(config)).length;
    expect(text).toMatch(new RegExp(`\\n${n} converters\\n$`));
    expect(formatConverters([])).toBe('name  conversion  loss  origin  source\n0 converters\n');
  });
});
