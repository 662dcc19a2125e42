/**
 * Hostile messages for the fault tests (issue 8 item 6), generated in code so no
 * big or broken file is committed: malformed MIME (a boundary never used, a
 * closing boundary missing, multiparts nested 100 deep, wrong and unknown
 * transfer encodings, bad base64, 1000 parts), headers that are too big (one
 * 1 MB line; 2 MB of fields), and images that are bombs or corrupt
 * (test/fixtures/images: bomb.png, garbage.png, truncated.jpg). Every message
 * is CRLF throughout, ends with CRLF, and has no line that starts with a dot, so
 * it passes SMTP byte for byte.
 *
 * Each message says what a DRUCOF recipient whose capabilities need conversion
 * (`WANTS`: text, or JPEG at most 200 px wide) should come to: its status and, for
 * a failure, the enhanced code and what the reason must name (the part, or why
 * the structure cannot be read).
 */
import { readFileSync } from 'node:fs';

export const image = (name: string): Buffer => readFileSync(new URL(`../fixtures/images/${name}`, import.meta.url));

/** The capabilities of the DRUCOF recipient the hostile messages go to: text, or a JPEG at most 200 px wide. */
export const WANTS = '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=200)))';

export interface HostileMessage {
  readonly name: string;
  readonly raw: Buffer;
  /** What the DRUCOF recipient (capabilities `WANTS`, a hop without DRUCOF) comes to. */
  readonly drucof:
    | { readonly status: 'failed'; readonly enhanced: '5.6.3' | '5.6.5'; readonly reason: RegExp }
    | { readonly status: 'converted-and-relayed' | 'relayed' };
  /**
   * For a message the DRUCOF recipient gets converted: the original's bytes before the
   * converted image part and after its body, which must arrive unchanged.
   */
  readonly untouched?: { readonly before: Buffer; readonly after: Buffer };
  /** Parts the DRUCOF recipient's copy carries as an omission note instead (their conversion failed, omission permitted). */
  readonly omitted?: readonly string[];
}

const CRLF = '\r\n';

/** Base64 in 76-character lines. */
export function base64Lines(data: Buffer): string {
  const b = data.toString('base64');
  const out: string[] = [];
  for (let i = 0; i < b.length; i += 76) out.push(b.slice(i, i + 76));
  return out.join(CRLF);
}

function top(subject: string, contentType: string, extra: readonly string[] = []): string {
  return [
    'From: <hostile@sender.test>',
    `Subject: ${subject}`,
    `Message-ID: <${subject}.${Math.random().toString(36).slice(2)}@hostile.test>`,
    'Date: Mon, 23 Nov 2026 10:00:00 +0000',
    'MIME-Version: 1.0',
    ...extra,
    `Content-Type: ${contentType}`,
  ].join(CRLF);
}

interface Part {
  readonly type: string;
  readonly body: string;
  readonly cte?: string;
  readonly filename?: string;
}

const text = (s: string): Part => ({ type: 'text/plain; charset=us-ascii', body: s });
const png = (data: Buffer, filename: string, cte = 'base64', body = base64Lines(data)): Part => ({ type: `image/png; name="${filename}"`, body, cte, filename });

function renderPart(p: Part): string {
  return [
    `Content-Type: ${p.type}`,
    ...(p.cte ? [`Content-Transfer-Encoding: ${p.cte}`] : []),
    ...(p.filename ? [`Content-Disposition: attachment; filename="${p.filename}"`] : []),
    '',
    p.body,
  ].join(CRLF);
}

/** multipart/mixed around `parts`; `close: false` leaves the closing boundary out. */
function multipart(boundary: string, parts: readonly Part[], close = true): string {
  return parts.map((p) => `--${boundary}${CRLF}${renderPart(p)}${CRLF}`).join('') + (close ? `--${boundary}--${CRLF}` : '');
}

function message(headers: string, body: string): Buffer {
  const raw = `${headers}${CRLF}${CRLF}${body}`;
  return Buffer.from(raw.endsWith(CRLF) ? raw : raw + CRLF, 'latin1');
}

/** A text part and one image part (part 2), in a two-part multipart/mixed. */
function withImage(name: string, part: Part): Buffer {
  return message(top(name, 'multipart/mixed; boundary="b1"'), multipart('b1', [text(`${name}: see the attachment.`), part]));
}

/** Multiparts nested `depth` deep (each level one multipart/mixed part), the innermost holding a text and `leaf`. */
function nested(name: string, depth: number, leaf: Part): Buffer {
  let inner = multipart(`n${depth}`, [text(`${name}: at the bottom`), leaf]);
  for (let d = depth - 1; d >= 1; d--) {
    inner = `--n${d}${CRLF}Content-Type: multipart/mixed; boundary="n${d + 1}"${CRLF}${CRLF}${inner}--n${d}--${CRLF}`;
  }
  return message(top(name, 'multipart/mixed; boundary="n1"'), inner);
}

/** The path of the innermost image of `nested(…, depth, …)`: 1.1.…1.2. */
export const nestedImagePath = (depth: number): string => [...Array<string>(depth - 1).fill('1'), '2'].join('.');

/** The bytes of `raw` before the image part whose base64 body is `body`, and after that body. */
function around(raw: Buffer, body: string): { before: Buffer; after: Buffer } {
  const text = raw.toString('latin1');
  const at = text.indexOf(body);
  const header = text.lastIndexOf('Content-Type: image/', at);
  return { before: raw.subarray(0, header), after: raw.subarray(at + body.length) };
}

/**
 * Part headers ended by a delimiter instead of a blank line: one by the next
 * delimiter, one by its parent's closing delimiter (mailsplit sends the first
 * nowhere and the second twice). The PNG between them is converted; every other
 * byte must arrive as it was.
 */
function unterminatedHeaders(photo: Buffer): Buffer {
  return message(
    top('unterminated-part-headers', 'multipart/mixed; boundary="b1"'),
    [
      '--b1',
      'Content-Type: text/plain',
      '',
      'Part headers without their blank line follow the picture.',
      '--b1',
      renderPart(png(photo, 'photo.png')),
      '--b1',
      'Content-Type: text/plain',
      'X-Note: this header is ended by the next delimiter',
      '--b1',
      'Content-Type: multipart/mixed; boundary="b2"',
      '',
      '--b2',
      'Content-Type: text/plain',
      "X-Note: this header is ended by its parent's closing delimiter",
      '--b2--',
      '--b1--',
      '',
    ].join(CRLF),
  );
}

/** Every hostile message, in a stable order. */
export function hostileMessages(): HostileMessage[] {
  const photo = image('photo.png');
  const part2 = (type: string) => new RegExp(`part 2 \\(${type.replace('/', '\\/')}`);
  /** Unreadable image data: the part named, and why (not merely "no conversion"). */
  const unreadable = (file: string) => new RegExp(`part 2 \\(image/png, "${file.replace('.', '\\.')}"\\) usable by the recipient: its data cannot be read as image/png \\(pix-x, pix-y`);
  const structure = /the message structure cannot be read: /;
  const list: HostileMessage[] = [
    {
      // The declared boundary never appears: to a MIME reader the multipart has no parts, only a preamble.
      name: 'boundary-never-used',
      raw: message(top('boundary-never-used', 'multipart/mixed; boundary="declared-but-absent"'), multipart('other', [text('hidden'), png(photo, 'photo.png')])),
      drucof: { status: 'relayed' },
    },
    {
      // No closing boundary: the last part runs to the end of the message, and is still converted.
      name: 'boundary-not-closed',
      raw: message(top('boundary-not-closed', 'multipart/mixed; boundary="b1"'), multipart('b1', [text('open ended'), png(photo, 'photo.png')], false)),
      drucof: { status: 'converted-and-relayed' },
    },
    {
      name: 'unterminated-part-headers',
      raw: unterminatedHeaders(photo),
      drucof: { status: 'converted-and-relayed' },
    },
    {
      name: 'nested-100-bomb',
      raw: nested('nested-100-bomb', 100, png(image('bomb.png'), 'bomb.png')),
      drucof: { status: 'failed', enhanced: '5.6.5', reason: new RegExp(`part ${nestedImagePath(100).replace(/\./g, '\\.')} \\(image/png\\)`) },
    },
    {
      name: 'nested-100-photo',
      raw: nested('nested-100-photo', 100, png(photo, 'photo.png')),
      drucof: { status: 'converted-and-relayed' },
    },
    {
      // A PNG in base64 labelled quoted-printable: decoded as QP it is text, not an image.
      name: 'wrong-cte-qp',
      raw: withImage('wrong-cte-qp', png(photo, 'photo.png', 'quoted-printable')),
      drucof: { status: 'failed', enhanced: '5.6.3', reason: unreadable('photo.png') },
    },
    {
      name: 'unknown-cte',
      raw: withImage('unknown-cte', png(photo, 'photo.png', 'x-rot13')),
      drucof: { status: 'failed', enhanced: '5.6.3', reason: unreadable('photo.png') },
    },
    {
      // Raw binary PNG bytes in a part labelled base64.
      name: 'binary-as-base64',
      raw: withImage('binary-as-base64', png(photo, 'photo.png', 'base64', photo.toString('latin1').replace(/\r?\n|\r/g, CRLF))),
      drucof: { status: 'failed', enhanced: '5.6.3', reason: unreadable('photo.png') },
    },
    {
      // base64 with characters outside the alphabet every few lines, and a broken tail.
      name: 'bad-base64',
      raw: withImage(
        'bad-base64',
        png(photo, 'photo.png', 'base64', base64Lines(photo).split(CRLF).map((l, i) => (i % 5 === 2 ? `${l.slice(0, 30)}!!**~~${l.slice(36)}` : l)).join(CRLF) + `${CRLF}====AB`),
      ),
      drucof: { status: 'failed', enhanced: '5.6.5', reason: part2('image/png') },
    },
    {
      name: 'image-bomb',
      raw: withImage('image-bomb', png(image('bomb.png'), 'bomb.png')),
      drucof: { status: 'failed', enhanced: '5.6.5', reason: part2('image/png') },
    },
    {
      // The bomb may be left out (omission-permitted; critical=no): its failure costs only that part, the photo is converted.
      name: 'bomb-omissible',
      raw: message(
        top('bomb-omissible', 'multipart/mixed; boundary="b1"'),
        [
          '--b1',
          renderPart(text('bomb-omissible: a bomb that may be left out, and a photo.')),
          '--b1',
          `Content-Conversion: omission-permitted; critical=no${CRLF}${renderPart(png(image('bomb.png'), 'bomb.png'))}`,
          '--b1',
          renderPart(png(photo, 'photo.png')),
          '--b1--',
          '',
        ].join(CRLF),
      ),
      drucof: { status: 'converted-and-relayed' },
      omitted: ['2'],
    },
    {
      name: 'garbage-png',
      raw: withImage('garbage-png', png(image('garbage.png'), 'garbage.png')),
      drucof: { status: 'failed', enhanced: '5.6.3', reason: unreadable('garbage.png') },
    },
    {
      name: 'truncated-jpeg',
      raw: withImage('truncated-jpeg', { type: 'image/jpeg; name="photo.jpg"', body: base64Lines(image('truncated.jpg')), cte: 'base64', filename: 'photo.jpg' }),
      drucof: { status: 'failed', enhanced: '5.6.5', reason: part2('image/jpeg') },
    },
    {
      // 999 text parts and a PNG: 1000 parts in one multipart.
      name: '1000-parts',
      raw: message(
        top('1000-parts', 'multipart/mixed; boundary="many"'),
        multipart('many', [...Array.from({ length: 999 }, (_, i) => text(`part ${i + 1}`)), png(photo, 'photo.png')]),
      ),
      drucof: { status: 'failed', enhanced: '5.6.3', reason: structure },
    },
    {
      name: 'header-line-1mb',
      raw: withImageHeader('header-line-1mb', [`X-Long: ${'a'.repeat(1024 * 1024)}`]),
      drucof: { status: 'failed', enhanced: '5.6.3', reason: structure },
    },
    {
      name: 'headers-2mb',
      raw: withImageHeader('headers-2mb', Array.from({ length: 40_000 }, (_, i) => `X-Filler-${i}: ${'f'.repeat(40)}`)),
      drucof: { status: 'failed', enhanced: '5.6.3', reason: structure },
    },
  ];
  // Where a message is converted, everything but the image part must arrive as it was.
  const photoBody = base64Lines(photo);
  return list.map((m) => (m.drucof.status === 'converted-and-relayed' && !m.omitted ? { ...m, untouched: around(m.raw, photoBody) } : m));

  function withImageHeader(name: string, extra: readonly string[]): Buffer {
    return message(top(name, 'multipart/mixed; boundary="b1"', extra), multipart('b1', [text(`${name}: see the attachment.`), png(photo, 'photo.png')]));
  }
}
