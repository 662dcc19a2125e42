/**
 * The built-in converters against real images (sharp) and text (html-to-text,
 * iconv-lite): every format pair, lossless claims checked pixel for pixel,
 * resize, colour reduction, charset loss measured; corrupt data, a
 * decompression bomb, a throwing and a hanging converter fail cleanly.
 */
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseFeatureSet, type FeatureSet, type PartFeatures } from '../../src/capabilities/feature-set/index.ts';
import type { ConvertContext, Converter, PartOutput } from '../../src/conversion/api.ts';
import { measurePart } from '../../src/conversion/features.ts';
import { loadConverters, type RegisteredConverter } from '../../src/conversion/registry.ts';
import { withTimeout } from '../../src/conversion/run.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { image } from '../fixtures/images/mail.ts';

let all: RegisteredConverter[];
const byName = (name: string): Converter => {
  const c = all.find((r) => r.converter.name === name)?.converter;
  if (!c) throw new Error(`no converter ${name}`);
  return c;
};
const ctx = (maxPixels = 100_000_000, signal = new AbortController().signal): ConvertContext => ({ signal, limits: { maxPixels, maxOutputBytes: 50_000_000 }, log: silentLogger });
const fs = (e: string): FeatureSet => {
  const r = parseFeatureSet(e);
  if (!r.ok) throw new Error(r.error);
  return r.features;
};

async function run(name: string, body: Buffer, type: string, aim: Partial<PartFeatures> = {}, limits?: number): Promise<PartOutput> {
  const features = await measurePart(type, {}, body, { maxPixels: 1e9 });
  return byName(name).convert({ body, features, aim: { ...features, ...aim } as PartFeatures, params: {} }, ctx(limits));
}

async function pixels(buf: Buffer): Promise<Buffer> {
  return sharp(buf).ensureAlpha().raw().toBuffer();
}

beforeAll(async () => {
  all = await loadConverters({ converters: { builtin: true, dirs: [], packages: [] } });
});

describe('built-in registry', () => {
  it('loads every built-in through the validator, uniquely named', () => {
    expect(all.length).toBeGreaterThan(40);
    expect(new Set(all.map((r) => r.converter.name)).size).toBe(all.length);
    expect(all.every((r) => r.origin === 'builtin')).toBe(true);
    for (const name of ['sharp/png-to-jpeg', 'sharp/heif-to-png', 'sharp/resize-jpeg', 'sharp/colour-tiff', 'html-to-text', 'text-charset']) expect(() => byName(name)).not.toThrow();
  });
});

describe('image formats (sharp)', () => {
  const TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/avif', 'image/gif', 'image/tiff'] as const;
  const short = (t: string) => t.slice(6);

  it.each(TYPES.flatMap((from) => TYPES.filter((to) => to !== from).map((to) => [from, to] as const)))('%s → %s writes the target format and keeps the size', async (from, to) => {
    const src = from === 'image/png' ? image('photo.png') : await byName(`sharp/png-to-${short(from)}`).convert(
      { body: image('photo.png'), features: await measurePart('image/png', {}, image('photo.png'), { maxPixels: 1e9 }), aim: { type: from }, params: {} },
      ctx(),
    ).then((o) => o.body);
    const out = await run(`sharp/${short(from)}-to-${short(to)}`, src, from);
    const meta = await sharp(out.body).metadata();
    expect(out.contentType).toBe(to);
    expect(out.features.type).toBe(to);
    expect(meta.width).toBe(320);
    expect(meta.height).toBe(240);
    expect(out.features['pix-x']).toBe(320);
  });

  it('HEIF (AV1, as this sharp build reads it) is an input', async () => {
    const out = await run('sharp/heif-to-png', image('photo.avif'), 'image/heif');
    expect((await sharp(out.body).metadata()).format).toBe('png');
  });

  it.each([
    ['sharp/png-to-webp', 'image/webp'],
    ['sharp/png-to-avif', 'image/avif'],
    ['sharp/png-to-tiff', 'image/tiff'],
  ])('%s is lossless as declared (loss 0): pixels identical', async (name, type) => {
    expect(byName(name).loss).toBe(0);
    const out = await run(name, image('photo.png'), 'image/png');
    expect(out.contentType).toBe(type);
    expect((await pixels(out.body)).equals(await pixels(image('photo.png')))).toBe(true);
  });

  it('lossy edges declare the loss of libraries.md §4 (JPEG q80: 32; GIF from full colour: 25; from a palette: 0)', async () => {
    expect(byName('sharp/png-to-jpeg').loss).toBe(32);
    const png = await measurePart('image/png', {}, image('photo.png'), { maxPixels: 1e9 });
    expect(byName('sharp/png-to-gif').reach?.(png, fs('(type="image/gif")'))).toEqual([expect.objectContaining({ loss: 25 })]);
    const gif = await measurePart('image/gif', {}, image('logo.gif'), { maxPixels: 1e9 });
    expect(gif.color).toBe('mapped');
    expect(byName('sharp/gif-to-png').reach?.(gif, fs('(type="image/png")'))).toEqual([expect.objectContaining({ loss: 0, features: expect.objectContaining({ color: 'mapped' }) })]);
    // With a size limit, the format step can also downscale: loss = encoding + 10 per halving.
    expect(byName('sharp/png-to-jpeg').reach?.(png, fs('(& (type="image/jpeg") (pix-x<=160))'))).toEqual([
      expect.objectContaining({ loss: 32, features: expect.objectContaining({ 'pix-x': 320 }) }),
      expect.objectContaining({ loss: 52, features: expect.objectContaining({ 'pix-x': 160, 'pix-y': 120 }) }),
    ]);
  });

  it('resize: a 12-megapixel JPEG down to pix-x ≤ 1024 keeps the aspect ratio', async () => {
    const big = await sharp(image('photo.png')).resize(4000, 3000).jpeg().toBuffer();
    const features = await measurePart('image/jpeg', {}, big, { maxPixels: 1e9 });
    const reach = byName('sharp/resize-jpeg').reach?.(features, fs('(& (type="image/jpeg") (pix-x<=1024))'));
    expect(reach).toEqual([expect.objectContaining({ features: expect.objectContaining({ 'pix-x': 1024, 'pix-y': 768 }) })]);
    const out = await run('sharp/resize-jpeg', big, 'image/jpeg', { 'pix-x': 1024, 'pix-y': 768 });
    expect(out.features).toMatchObject({ type: 'image/jpeg', 'pix-x': 1024, 'pix-y': 768 });
  });

  it('resize by pixel budget, and no reach when already within', async () => {
    const f: PartFeatures = { type: 'image/png', 'pix-x': 4000, 'pix-y': 3000, pixels: 12e6, color: 'full' };
    const r = byName('sharp/resize-png').reach?.(f, fs('(pixels<=1000000)'));
    expect(r).toEqual([expect.objectContaining({ features: expect.objectContaining({ 'pix-x': 1154, 'pix-y': 866 }) })]);
    expect(byName('sharp/resize-png').reach?.(f, fs('(pix-x<=5000)'))).toEqual([]);
  });

  it('colour → grey → bi-level, measured on the output', async () => {
    const grey = await run('sharp/colour-png', image('photo.png'), 'image/png', { color: 'grey' });
    expect(grey.features.color).toBe('grey');
    const bin = await run('sharp/colour-tiff', image('photo.png'), 'image/png', { color: 'binary' });
    expect(bin.features.color).toBe('binary');
    expect((await sharp(bin.body).metadata()).bitsPerSample).toBe(1);
    const f = await measurePart('image/png', {}, image('photo.png'), { maxPixels: 1e9 });
    // One choice per class the target allows; grey costs less than bi-level, so the planner takes grey.
    expect(byName('sharp/colour-png').reach?.(f, fs('(color=[grey,binary])'))).toEqual([
      expect.objectContaining({ features: expect.objectContaining({ color: 'grey' }), loss: 30 }),
      expect.objectContaining({ features: expect.objectContaining({ color: 'binary' }), loss: 60 }),
    ]);
  });

  it('measures the fixtures: binary fax, mapped GIF, full-colour photo', async () => {
    expect(await measurePart('image/tiff', {}, image('fax.tif'), { maxPixels: 1e9 })).toMatchObject({ 'pix-x': 864, color: 'binary' });
    expect(await measurePart('image/gif', {}, image('logo.gif'), { maxPixels: 1e9 })).toMatchObject({ 'pix-x': 64, color: 'mapped' });
    expect(await measurePart('image/jpeg', {}, image('photo.jpg'), { maxPixels: 1e9 })).toMatchObject({ 'pix-x': 320, 'pix-y': 240, color: 'full', dpi: 72 });
    expect(await measurePart('image/png', {}, image('garbage.png'), { maxPixels: 1e9 })).toMatchObject({ unmeasured: ['pix-x', 'pix-y', 'pixels', 'color', 'dpi'] });
    expect(await measurePart('image/png', {}, image('bomb.png'), { maxPixels: 1e9 })).toMatchObject({ 'pix-x': 100_000, 'pix-y': 100_000 });
  });
});

describe('bad input fails the conversion, not the process', () => {
  it('a truncated JPEG', async () => {
    await expect(run('sharp/jpeg-to-png', image('truncated.jpg'), 'image/jpeg')).rejects.toThrow(/premature end|JPEG/i);
  });

  it('garbage bytes', async () => {
    const body = image('garbage.png');
    await expect(byName('sharp/png-to-jpeg').convert({ body, features: { type: 'image/png' }, aim: { type: 'image/jpeg' }, params: {} }, ctx())).rejects.toThrow(/unsupported image format/);
  });

  it('a decompression bomb (header claims 10 gigapixels) is refused by the pixel limit', async () => {
    await expect(run('sharp/resize-png', image('bomb.png'), 'image/png', { 'pix-x': 1000, 'pix-y': 1000 }, 100_000_000)).rejects.toThrow(/pixel limit/);
  });

  it('a small image over a low configured limit is refused the same way', async () => {
    await expect(run('sharp/png-to-jpeg', image('photo.png'), 'image/png', {}, 1000)).rejects.toThrow(/pixel limit/);
  });

  it('withTimeout turns a hang into a rejection and a sync throw into a rejection', async () => {
    await expect(withTimeout(() => new Promise<never>(() => undefined), 50)).rejects.toThrow(/timed out after 50 ms/);
    await expect(
      withTimeout(() => {
        throw new Error('sync boom');
      }, 1000),
    ).rejects.toThrow('sync boom');
    await expect(withTimeout(async () => 7, 1000)).resolves.toBe(7);
  });
});

describe('text converters', () => {
  it('html-to-text keeps words and links, drops markup, writes UTF-8', async () => {
    const html = Buffer.from('<html><body><h1>Hello</h1><p>Grüße <b>bold</b> <a href="https://example.org/x">link</a></p><img src="cid:x"></body></html>', 'latin1');
    const out = await byName('html-to-text').convert({ body: html, features: { type: 'text/html', charset: 'iso-8859-1' }, aim: { type: 'text/plain', charset: 'utf-8' }, params: {} }, ctx());
    const text = out.body.toString('utf8');
    expect(text).toMatch(/HELLO/);
    expect(text).toMatch(/Grüße bold link \[https:\/\/example.org\/x\]/);
    expect(text).not.toMatch(/<|>/);
    expect(out).toMatchObject({ contentType: 'text/plain', params: { charset: 'utf-8' } });
  });

  it('text-charset: loss 0 when every character maps, measured loss when some do not', async () => {
    const conv = byName('text-charset');
    const text = (s: string) => Buffer.from(s, 'utf8');
    const to = (body: Buffer, charset: string) => conv.convert({ body, features: { type: 'text/plain', charset: 'utf-8' }, aim: { type: 'text/plain', charset }, params: { charset: 'utf-8' } }, ctx());
    const ok = await to(text('Grüße aus Köln'), 'iso-8859-1');
    expect(ok.loss).toBe(0);
    expect(ok.body.toString('latin1')).toBe('Grüße aus Köln');
    const lossy = await to(text('Price: 5 € (euro) — ok'), 'iso-8859-1');
    expect(lossy.loss).toBeGreaterThan(5);
    expect(lossy.body.toString('latin1')).toBe('Price: 5 ? (euro) ? ok');
    expect((await to(text('Price: 5 €'), 'windows-1252')).loss).toBe(0);
    // reach: the charset the target asks for; estimated 5 into a legacy charset, 0 into Unicode.
    expect(conv.reach?.({ type: 'text/plain', charset: 'utf-8' }, fs('(& (type="text/plain") (charset=iso-8859-1))'))).toEqual([{ features: { type: 'text/plain', charset: 'iso-8859-1' }, loss: 5, minLoss: 0 }]);
    expect(conv.reach?.({ type: 'text/plain', charset: 'iso-8859-1' }, fs('(charset=utf-8)'))).toEqual([{ features: { type: 'text/plain', charset: 'utf-8' }, loss: 0, minLoss: 0 }]);
  });
});

describe('html-to-text without a declared charset', () => {
  it.each([
    ['<meta charset="iso-8859-1"><p>Gr\u00fc\u00dfe</p>', 'latin1', 'Grüße'],
    ['<p>Gr\u00fc\u00dfe</p>', 'utf8', 'Grüße'],
    ['<p>Gr\u00fc\u00dfe</p>', 'latin1', 'Grüße'],
  ] as const)('%s as %s', async (html, bytes, expected) => {
    const out = await byName('html-to-text').convert({ body: Buffer.from(html, bytes), features: { type: 'text/html', charset: 'us-ascii' }, aim: { type: 'text/plain', charset: 'utf-8' }, params: {} }, ctx());
    expect(out.body.toString('utf8').trim()).toBe(expected);
  });
});
