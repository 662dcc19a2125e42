/**
 * The conversion engine end to end on real messages (nodemailer's composer) and
 * real images (sharp): plan, convert, records (A6), every marking (A5), least
 * lossy choice, omission, failures isolated per part, untouched parts
 * byte-identical.
 */
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseFeatureSet, type FeatureSet } from '../../src/capabilities/feature-set/index.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createConversionEngine, loadConverters, type ConversionEngine, type RegisteredConverter } from '../../src/conversion/index.ts';
import { decodeBody, elideBodies, encodedBody, scanMessage, walkMessage } from '../../src/conversion/mime.ts';
import { runPlan } from '../../src/conversion/run.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { compose, field, image, rawLeaves } from '../fixtures/images/mail.ts';

const fs = (e: string): FeatureSet => {
  const r = parseFeatureSet(e);
  if (!r.ok) throw new Error(r.error);
  return r.features;
};
const TEXT_OR_SMALL_JPEG = fs('(| (type="text/plain") (& (type="image/jpeg") (pix-x<=1024)))');
const DATE = new Date('2026-11-23T10:52:37Z');

let builtins: RegisteredConverter[];
let engine: ConversionEngine;

beforeAll(async () => {
  builtins = await loadConverters({ converters: { builtin: true, dirs: [], packages: [] } });
  engine = await createConversionEngine(parseConfig({ hostname: 'relay.example.net' }), silentLogger, { converters: builtins });
});

async function big(width = 4000, height = 3000): Promise<Buffer> {
  return sharp(image('photo.png')).resize(width, height).png().toBuffer();
}

async function convert(raw: Buffer, target: FeatureSet, drucof = true, e: ConversionEngine = engine) {
  const plan = await e.plan(raw, target, { drucof });
  const result = await e.convert(raw, plan, { date: DATE });
  return { plan, result };
}

describe('plan + convert: the usual message', () => {
  it('converts what the recipient cannot use, keeps the rest byte for byte, and records it all', async () => {
    const raw = await compose({
      text: 'Hello, see the photo.',
      html: '<p>Hello, see <b>the photo</b>.</p>',
      attachments: [
        { filename: 'Photo.PNG', content: await big(), contentType: 'image/png' },
        { filename: 'notes.txt', content: 'plain notes\r\n', contentType: 'text/plain' },
      ],
    });
    const { plan, result } = await convert(raw, TEXT_OR_SMALL_JPEG);
    expect(plan.possible).toBe(true);
    expect(plan.parts.map((p) => [p.path, p.action.kind])).toEqual([
      ['1.1', 'keep'],
      ['1.2', 'convert'],
      ['2', 'convert'],
      ['3', 'keep'],
    ]);
    const png = plan.parts[2]!.action;
    // Least lossy: downscale and encode as JPEG once (not JPEG first, then resize and re-encode).
    expect(png).toMatchObject({ kind: 'convert', chain: ['sharp/png-to-jpeg'], loss: 71.3 });
    expect(result.ok).toBe(true);
    if (!result.ok) return;

    const out = result.message.toString('latin1');
    // One trace field, above the others.
    expect(out.startsWith('Content-Conversions: relay.example.net; 1.2 text/html -> text/plain via')).toBe(true);
    expect(out.match(/^Content-Conversions:/gm)).toHaveLength(1);
    const trace = field(out, 'Content-Conversions')!;
    expect(trace).toMatch(/2 image\/png -> image\/jpeg via sharp\/png-to-jpeg \(loss 71\.3\); Mon, 23 Nov 2026 10:52:37 \+0000$/);

    const before = await rawLeaves(raw);
    const after = await rawLeaves(result.message);
    // Untouched parts: byte-identical.
    expect(after.get('1.1')!.raw.equals(before.get('1.1')!.raw)).toBe(true);
    expect(after.get('3')!.raw.equals(before.get('3')!.raw)).toBe(true);
    // Everything outside the converted parts is byte-identical too: the top header block follows the trace field.
    expect(result.message.subarray(result.message.indexOf('From: ')).subarray(0, 200).equals(raw.subarray(0, 200))).toBe(true);

    // The converted image: RFC 4141 records, a real 1024-px JPEG, renamed.
    const img = after.get('2')!;
    expect(field(img.header, 'Content-Type')).toBe('image/jpeg; name=Photo.jpg');
    expect(field(img.header, 'Content-Disposition')).toBe('attachment; filename=Photo.jpg');
    expect(field(img.header, 'Content-Previous')).toBe('Date Mon, 23 Nov 2026 10:52:37 +0000; By relay.example.net; (& (type="image/png") (pix-x=4000) (pix-y=3000) (dpi=72) (color=full))');
    const features = field(img.header, 'Content-Features')!;
    expect(features).toMatch(/^\(& \(type="image\/jpeg"\) \(pix-x=1024\) \(pix-y=768\)/);
    expect(fs(features).matches({ type: 'image/jpeg', 'pix-x': 1024, 'pix-y': 768, color: 'full', dpi: 72 }).ok).toBe(true);
    const jpeg = Buffer.from(img.body.toString('latin1'), 'base64');
    expect(await sharp(jpeg).metadata()).toMatchObject({ format: 'jpeg', width: 1024, height: 768 });

    // The HTML alternative became text.
    const html = after.get('1.2')!;
    expect(field(html.header, 'Content-Type')).toBe('text/plain; charset=utf-8');
    expect(html.body.toString()).toMatch(/Hello, see the photo\./);
    expect(field(html.header, 'Content-Previous')).toMatch(/\(& \(type="text\/html"\) \(charset=utf-8\)\)$/);

    expect(result.record).toMatchObject({ host: 'relay.example.net', date: 'Mon, 23 Nov 2026 10:52:37 +0000', loss: 111.3 });
  });

  it('a message that already fits is returned unchanged, without a trace field', async () => {
    const raw = await compose({ text: 'just text' });
    const { plan, result } = await convert(raw, TEXT_OR_SMALL_JPEG);
    expect(plan.parts.map((p) => p.action.kind)).toEqual(['keep']);
    expect(result.ok && result.message.equals(raw)).toBe(true);
  });

  it('a single-part message (the body is the top-level part) is converted in place', async () => {
    const raw = Buffer.concat([
      Buffer.from('From: a@example.com\r\nTo: b@example.net\r\nSubject: scan\r\nMIME-Version: 1.0\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\nX-Keep:  odd   spacing\r\n\r\n'),
      Buffer.from(image('photo.png').toString('base64').replace(/(.{76})/g, '$1\r\n') + '\r\n'),
    ]);
    const { plan, result } = await convert(raw, fs('(type="image/jpeg")'));
    expect(plan.parts[0]).toMatchObject({ path: '1', action: { kind: 'convert', chain: ['sharp/png-to-jpeg'], loss: 32 } });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const text = result.message.toString('latin1');
    expect(text).toContain('\r\nX-Keep:  odd   spacing\r\n');
    expect(text).toContain('\r\nContent-Type: image/jpeg\r\n');
    expect(text).toMatch(/\r\n\r\n[A-Za-z0-9+/=\r\n]+\r\n$/);
    const leaf = (await rawLeaves(result.message)).get('1')!;
    expect((await sharp(Buffer.from(leaf.body.toString('latin1'), 'base64')).metadata()).format).toBe('jpeg');
  });

  it('keeps the message’s line ending (LF-only messages stay LF-only)', async () => {
    const raw = Buffer.from((await compose({ text: 'hi', html: '<p>hi <i>there</i></p>' })).toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
    const { result } = await convert(raw, fs('(type="text/plain")'));
    expect(result.ok).toBe(true);
    if (result.ok) {
      expect(result.message.includes('\r')).toBe(false);
      expect(result.message.toString()).toMatch(/\nContent-Previous: Date .*\n/);
    }
  });

  it('decodes quoted-printable input and writes quoted-printable where 8-bit text needs it', async () => {
    const raw = await compose({ html: '<p>Grüße aus Köln — ünïcödé</p>', textEncoding: 'quoted-printable' });
    expect(raw.toString()).toMatch(/quoted-printable/);
    const { result } = await convert(raw, fs('(type="text/plain")'));
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const leaf = [...(await rawLeaves(result.message)).values()][0]!;
    expect(field(leaf.header, 'Content-Transfer-Encoding')).toBe('quoted-printable');
    expect(leaf.body.toString()).toMatch(/Gr=C3=BC=C3=9Fe aus K=C3=B6ln/);
  });
});

describe('least lossy choice', () => {
  it('takes the lossless conversion when one exists', async () => {
    const raw = await compose({ attachments: [{ filename: 'a.png', content: image('photo.png'), contentType: 'image/png' }] });
    const { plan, result } = await convert(raw, fs('(| (type="image/jpeg") (type="image/webp"))'));
    expect(plan.parts[0]?.action).toMatchObject({ kind: 'convert', chain: ['sharp/png-to-webp'], loss: 0 });
    expect(result.ok).toBe(true);
  });

  it('takes the least lossy one when all lose something', async () => {
    const raw = await compose({ attachments: [{ filename: 'a.png', content: image('photo.png'), contentType: 'image/png' }] });
    const { plan } = await convert(raw, fs('(| (type="image/jpeg") (type="image/gif"))'));
    expect(plan.parts[0]?.action).toMatchObject({ kind: 'convert', chain: ['sharp/png-to-gif'], loss: 25 });
  });

  it('reaches a fax: colour photo → bi-level TIFF at the width the fax takes', async () => {
    const raw = await compose({ attachments: [{ filename: 'scan.jpg', content: image('photo.jpg'), contentType: 'image/jpeg' }] });
    const { plan, result } = await convert(raw, fs('(& (type="image/tiff") (color=Binary) (pix-x<=200))'));
    const action = plan.parts[0]!.action;
    expect(action.kind).toBe('convert');
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const leaf = (await rawLeaves(result.message)).get('1')!;
    const meta = await sharp(Buffer.from(leaf.body.toString('latin1'), 'base64')).metadata();
    expect(meta).toMatchObject({ format: 'tiff', width: 200, bitsPerSample: 1 });
    expect(field(leaf.header, 'Content-Features')).toMatch(/\(color=binary\)/);
  });
});

describe('markings (A5) are honoured', () => {
  const png = () => image('photo.png');
  const JPEG = fs('(| (type="text/plain") (type="image/jpeg"))');

  it('Content-Conversion: prohibited on an unusable part → impossible, 5.6.2', async () => {
    const raw = await compose({ text: 'x', attachments: [{ filename: 'a.png', content: png(), contentType: 'image/png', headers: { 'Content-Conversion': 'prohibited' } }] });
    const { plan, result } = await convert(raw, JPEG);
    expect(plan.possible).toBe(false);
    expect(plan.reply).toMatchObject({ code: 554, enhanced: '5.6.2' });
    expect(plan.parts[1]?.action).toMatchObject({ kind: 'impossible', reasons: ['type is "image/png", not (type="text/plain")', 'type is "image/png", not (type="image/jpeg")'] });
    expect(result.ok).toBe(false);
  });

  it('prohibited; critical=no → delivered unconverted, byte-identical', async () => {
    const raw = await compose({ html: '<p>x</p>', attachments: [{ filename: 'a.png', content: png(), contentType: 'image/png', headers: { 'Content-Conversion': 'prohibited; critical=no' } }] });
    const { plan, result } = await convert(raw, JPEG);
    expect(plan.possible).toBe(true);
    expect(plan.parts[1]?.action).toMatchObject({ kind: 'keep', usable: false });
    expect(result.ok).toBe(true);
    if (result.ok) expect((await rawLeaves(result.message)).get('2')!.raw.equals((await rawLeaves(raw)).get('2')!.raw)).toBe(true);
  });

  it('a multipart’s marking covers the parts inside it', async () => {
    const inner = 'Content-Type: multipart/mixed; boundary="in"\r\nContent-Conversion: prohibited\r\n\r\n--in\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--in--\r\n';
    const raw = Buffer.from(`From: a@example.com\r\nTo: b@example.net\r\nMIME-Version: 1.0\r\n${inner}`);
    const { plan } = await convert(raw, fs('(type="text/plain")'));
    expect(plan.parts[0]).toMatchObject({ path: '1', marking: { conversion: 'prohibited' }, action: { kind: 'impossible', reply: { enhanced: '5.6.2' } } });
  });

  it('nothing inside multipart/signed is converted (RFC 4141: keep the protection or do not convert)', async () => {
    const signed =
      'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary="s"\r\n\r\n' +
      '--s\r\nContent-Type: text/html\r\n\r\n<p>signed</p>\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--s--\r\n';
    const raw = Buffer.from(`From: a@example.com\r\nTo: b@example.net\r\nMIME-Version: 1.0\r\n${signed}`);
    const { plan } = await convert(raw, fs('(| (type="text/plain") (type="application/pgp-signature"))'));
    expect(plan.parts[0]).toMatchObject({ marking: { conversion: 'prohibited', source: 'signed' }, action: { kind: 'impossible', reply: { enhanced: '5.6.2' } } });
  });

  it('omission-permitted; critical=no and no conversion → replaced by a short note naming what was removed', async () => {
    const raw = await compose({
      text: 'see attachment',
      attachments: [{ filename: 'report.pdf', content: Buffer.from('%PDF-1.4 fake'), contentType: 'application/pdf', headers: { 'Content-Conversion': 'omission-permitted; critical=no' } }],
    });
    const { plan, result } = await convert(raw, fs('(type="text/plain")'));
    expect(plan.parts[1]?.action.kind).toBe('omit');
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const note = (await rawLeaves(result.message)).get('2')!;
    expect(field(note.header, 'Content-Type')).toBe('text/plain; charset=utf-8');
    expect(field(note.header, 'Content-Disposition')).toBe('inline');
    expect(note.body.toString()).toMatch(/application\/pdf part "report.pdf", 13 bytes was removed/);
    expect(field(note.header, 'Content-Previous')).toMatch(/\(type="application\/pdf"\)$/);
    expect(field(result.message.toString('latin1'), 'Content-Conversions')).toMatch(/2 application\/pdf -> omitted \(loss 100\)/);
  });

  it('without omission permitted, the same part makes the message impossible (5.6.3)', async () => {
    const raw = await compose({ text: 'x', attachments: [{ filename: 'report.pdf', content: Buffer.from('%PDF-1.4'), contentType: 'application/pdf' }] });
    const { plan } = await convert(raw, fs('(type="text/plain")'));
    expect(plan.possible).toBe(false);
    expect(plan.reply?.enhanced).toBe('5.6.3');
    expect(plan.parts[1]?.action.kind).toBe('impossible');
  });

  it('RFC 4141 Content-Convert: NONE → prohibited (5.6.2); ANY → converted, and the field passed on unchanged', async () => {
    const none = await compose({ attachments: [{ filename: 'a.png', content: png(), contentType: 'image/png', headers: { 'Content-Convert': 'NONE' } }] });
    expect((await convert(none, JPEG)).plan.reply?.enhanced).toBe('5.6.2');
    const any = await compose({ attachments: [{ filename: 'a.png', content: png(), contentType: 'image/png', headers: { 'Content-Convert': 'ANY' } }] });
    const { result } = await convert(any, JPEG);
    expect(result.ok).toBe(true);
    if (result.ok) expect((await rawLeaves(result.message)).get('1')!.header).toMatch(/\r\nContent-Convert: ANY\r\n/);
  });

  it('RFC 4141 Content-Convert list: converts only into the forms it allows (the stricter wins over our header)', async () => {
    const raw = await compose({
      attachments: [{ filename: 'a.jpg', content: image('photo.jpg'), contentType: 'image/jpeg', headers: { 'Content-Convert': '(type="image/gif")', 'Content-Conversion': 'permitted' } }],
    });
    const target = fs('(| (type="image/png") (type="image/gif"))');
    const { plan, result } = await convert(raw, target);
    // PNG would be lossless, but the list allows only GIF.
    expect(plan.parts[0]?.action).toMatchObject({ kind: 'convert', chain: ['sharp/jpeg-to-gif'] });
    expect(result.ok).toBe(true);
    const both = await compose({ attachments: [{ filename: 'a.png', content: png(), contentType: 'image/png', headers: { 'Content-Convert': 'ANY', 'Content-Conversion': 'prohibited' } }] });
    expect((await convert(both, JPEG)).plan.reply?.enhanced).toBe('5.6.2');
  });

  it('RFC 2156 Conversion: Prohibited forbids every conversion', async () => {
    const raw = await compose({ html: '<p>x</p>', headers: { Conversion: 'Prohibited' } });
    const { plan } = await convert(raw, fs('(type="text/plain")'));
    expect(plan).toMatchObject({ possible: false, reply: { enhanced: '5.6.2' } });
    expect(plan.parts[0]?.marking.source).toBe('rfc2156');
  });

  it('RFC 2156 Conversion-With-Loss: Prohibited allows lossless conversions only', async () => {
    const lossy = await compose({ attachments: [{ filename: 'a.png', content: png(), contentType: 'image/png' }], headers: { 'Conversion-With-Loss': 'Prohibited' } });
    expect((await convert(lossy, fs('(type="image/jpeg")'))).plan).toMatchObject({ possible: false, reply: { enhanced: '5.6.2' } });
    const { plan, result } = await convert(lossy, fs('(type="image/webp")'));
    expect(plan.parts[0]?.action).toMatchObject({ kind: 'convert', loss: 0 });
    expect(result.ok).toBe(true);
    // A charset conversion that turns out to lose characters is refused after the fact.
    const text = await compose({ text: 'Price: 5 €', headers: { 'Conversion-With-Loss': 'Prohibited' } });
    const charset = await convert(text, fs('(& (type="text/plain") (charset=iso-8859-1))'));
    expect(charset.plan.possible).toBe(true);
    expect(charset.result).toMatchObject({ ok: false, reply: { enhanced: '5.6.2' } });
    // The same conversion of a text whose every character maps goes through, loss 0.
    const fine = await compose({ text: 'Grüße aus Köln', headers: { 'Conversion-With-Loss': 'Prohibited' } });
    const ok = await convert(fine, fs('(& (type="text/plain") (charset=iso-8859-1))'));
    expect(ok.result).toMatchObject({ ok: true, record: { loss: 0 } });
  });

  it('no DRUCOF: nothing is ever converted (the message goes as it is)', async () => {
    const raw = await compose({ html: '<p>x</p>', attachments: [{ filename: 'a.png', content: png(), contentType: 'image/png', headers: { 'Content-Conversion': 'permitted' } }] });
    const { plan, result } = await convert(raw, fs('(type="text/plain")'), false);
    expect(plan.possible).toBe(true);
    expect(plan.parts.every((p) => p.action.kind === 'keep')).toBe(true);
    expect(result.ok && result.message.equals(raw)).toBe(true);
  });
});

describe('failures are per part, never the process', () => {
  it('a corrupt image (truncated JPEG) fails its part with 5.6.5', async () => {
    const raw = await compose({ text: 'x', attachments: [{ filename: 'bad.jpg', content: image('truncated.jpg'), contentType: 'image/jpeg' }] });
    const { plan, result } = await convert(raw, fs('(| (type="text/plain") (type="image/png"))'));
    expect(plan.possible).toBe(true); // its header could be read
    expect(result).toMatchObject({ ok: false, reply: { code: 554, enhanced: '5.6.5' } });
    if (!result.ok) {
      expect(result.reply.lines.join(' ')).toMatch(/part 2 \(image\/jpeg\): sharp\/jpeg-to-png failed: .*premature end/i);
      expect(result.plan.parts[1]?.action.kind).toBe('impossible');
    }
  });

  it('garbage that claims to be an image is unmeasurable: impossible (5.6.3) for a size limit, kept where only the type matters', async () => {
    const raw = await compose({ attachments: [{ filename: 'x.png', content: image('garbage.png'), contentType: 'image/png' }] });
    expect((await convert(raw, fs('(& (type="image/png") (pix-x<=100))'))).plan.reply?.enhanced).toBe('5.6.3');
    expect((await convert(raw, fs('(type="image/png")'))).plan.parts[0]?.action).toEqual({ kind: 'keep', usable: true });
  });

  it('an image bomb fails its part with 5.6.5 (pixel limit), quickly', async () => {
    const raw = await compose({ text: 'x', attachments: [{ filename: 'bomb.png', content: image('bomb.png'), contentType: 'image/png' }] });
    const started = Date.now();
    const { plan, result } = await convert(raw, fs('(| (type="text/plain") (& (type="image/png") (pix-x<=1000)))'));
    expect(plan.parts[1]?.action.kind).toBe('convert');
    expect(result).toMatchObject({ ok: false, reply: { enhanced: '5.6.5' } });
    if (!result.ok) expect(result.reply.lines.join(' ')).toMatch(/pixel limit/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('a non-critical part that fails goes unconverted; one that may be omitted is omitted', async () => {
    const raw = await compose({
      text: 'x',
      attachments: [
        { filename: 'a.jpg', content: image('truncated.jpg'), contentType: 'image/jpeg', headers: { 'Content-Conversion': 'permitted; critical=no' } },
        { filename: 'b.jpg', content: image('truncated.jpg'), contentType: 'image/jpeg', headers: { 'Content-Conversion': 'omission-permitted; critical=no' } },
      ],
    });
    const { result } = await convert(raw, fs('(| (type="text/plain") (type="image/png"))'));
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.plan.parts.map((p) => p.action.kind)).toEqual(['keep', 'keep', 'omit']);
    const leaves = await rawLeaves(result.message);
    expect(leaves.get('2')!.raw.equals((await rawLeaves(raw)).get('2')!.raw)).toBe(true);
    expect(leaves.get('3')!.body.toString()).toMatch(/converting it failed/);
  });

  it('a converter that throws, hangs or returns nonsense fails only its part', async () => {
    const make = (name: string, to: string, convert: () => Promise<never> | Promise<unknown>) => ({
      origin: 'user' as const,
      source: 'test',
      converter: { name, from: 'application/x-test', to, loss: 1, convert: convert as never },
    });
    const plugins = [
      make('throws', 'text/x-a', async () => {
        throw new Error('plug-in exploded');
      }),
      make('hangs', 'text/x-b', () => new Promise<never>(() => undefined)),
      make('nonsense', 'text/x-c', async () => ({ body: 'not a buffer' })),
    ];
    const e = await createConversionEngine(parseConfig({ conversion: { timeout: '200ms' } }), silentLogger, { converters: [...builtins, ...plugins] });
    const raw = await compose({ attachments: [{ filename: 'x.bin', content: Buffer.from('data'), contentType: 'application/x-test' }] });
    for (const [target, message] of [
      ['(type="text/x-a")', /throws failed: plug-in exploded/],
      ['(type="text/x-b")', /hangs failed: timed out after 200 ms/],
      ['(type="text/x-c")', /nonsense returned a malformed result/],
    ] as const) {
      const { result } = await convert(raw, fs(target), true, e);
      expect(result).toMatchObject({ ok: false, reply: { enhanced: '5.6.5' } });
      if (!result.ok) expect(result.reply.lines.join(' ')).toMatch(message);
    }
  });
});

describe('the MIME layer', () => {
  it('a structure mailsplit refuses (header block over 1 MB) is planned as impossible, not thrown', async () => {
    const raw = Buffer.from(`From: a@example.com\r\nX-Huge: ${'x'.repeat(1_100_000)}\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n`);
    const plan = await engine.plan(raw, fs('(type="text/plain")'), { drucof: true });
    expect(plan).toMatchObject({ possible: false, parts: [], reply: { enhanced: '5.6.3' } });
    expect(plan.reply?.lines.join(' ')).toMatch(/structure cannot be read/);
    expect((await engine.plan(raw, fs('(type="text/plain")'), { drucof: false })).possible).toBe(true);
  });

  async function bigMessage(): Promise<Buffer> {
    const noise = await sharp({ create: { width: 600, height: 400, channels: 3, background: '#888', noise: { type: 'gaussian', mean: 128, sigma: 60 } } }).png().toBuffer();
    return compose({
      text: 'line one\r\n'.repeat(20),
      html: '<p>x</p>'.repeat(50),
      attachments: [
        { filename: 'noise.png', content: noise, contentType: 'image/png' },
        { filename: 'data.bin', content: noise.subarray(0, 70_000), contentType: 'application/octet-stream' },
        { filename: 'inner.eml', content: `Subject: inner\r\nContent-Type: text/plain\r\n\r\n${'AAAA'.repeat(30)}\r\n`.repeat(3), contentType: 'message/rfc822', contentDisposition: 'inline' },
      ],
    });
  }

  it('the structure scan that skips the inside of base64 bodies finds the same parts at the same offsets', async () => {
    const raw = await bigMessage();
    expect(raw.length).toBeGreaterThan(64 * 1024);
    expect(elideBodies(raw).input.length).toBeLessThan(raw.length / 10);
    const scan = await scanMessage(raw);
    const full = await walkMessage(raw, { select: () => true, visit: async () => undefined });
    expect(scan.exact).toBe(true);
    expect(scan.leaves.map((l) => [l.path, l.type, l.span])).toEqual(full.leaves.map((l) => [l.path, l.type, l.span]));
    const png = scan.leaves.find((l) => l.type === 'image/png')!;
    expect((await sharp(decodeBody(encodedBody(raw, png), png.encoding)).metadata()).width).toBe(600);
  });

  it('the fallback (re-walking instead of splicing) writes the same message', async () => {
    const raw = await bigMessage();
    const target = fs('(| (type="text/plain") (type="application/octet-stream") (type="message/rfc822") (& (type="image/jpeg") (pix-x<=100)))');
    const plan = await engine.plan(raw, target, { drucof: true });
    const opts = { converters: new Map(builtins.map((b) => [b.converter.name, b.converter])), host: 'h', date: DATE, timeoutMs: 10_000, limits: { maxPixels: 1e8, maxOutputBytes: 1e8 }, log: silentLogger };
    const spliced = await runPlan(raw, plan, await scanMessage(raw), opts);
    const walked = await runPlan(raw, plan, { ...(await scanMessage(raw)), exact: false }, opts);
    expect(spliced.ok && walked.ok).toBe(true);
    if (spliced.ok && walked.ok) expect(spliced.message.equals(walked.message)).toBe(true);
  });
});
