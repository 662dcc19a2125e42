/**
 * MIME tree walking and re-serialising with @zone-eu/mailsplit (libraries.md §2).
 * The Splitter streams the message into header nodes and body chunks, whose
 * lengths laid end to end are the message (checked: `exact`), so each leaf's
 * byte span is known. The structure scan shows the splitter only what can hold
 * structure (the inside of base64 bodies is left out, elideBodies()); a
 * rewritten message is the original's bytes spliced around the replaced parts,
 * so every untouched part and header stays byte-identical. A converted part gets
 * a rebuilt header block (only the fields set change; the others keep their
 * bytes) and a freshly encoded body, in the message's own line ending.
 * mailsplit's Rewriter is not used: it leaves a bare LF at the end of a
 * rewritten body, re-encodes as quoted-printable and its setFilename()
 * lower-cases names.
 *
 * Part paths are IMAP-style ("1", "2.1"); a single-part message's body is "1",
 * an embedded message's single body "3.1". Inline message/rfc822 parts are
 * walked into (mailsplit's default); attached ones are leaves.
 */
import { Readable } from 'node:stream';
import iconv from 'iconv-lite';
import { Splitter, type MimeNode } from '@zone-eu/mailsplit';
import { buildHeaderValue, parseHeaderValue } from 'nodemailer/lib/mime-funcs';
import { encode as qpEncode, wrap as qpWrap } from 'nodemailer/lib/qp';
import { declaredForPart, parseMessageMarking, SIGNED, stricter, type DeclaredMarking, type MessageMarking } from './markings.ts';

/** One leaf body part as the walker reports it. */
export interface MimeLeaf {
  readonly path: string;
  /** Media type, lower-case, no parameters ("text/plain" when absent, RFC 2045). */
  readonly type: string;
  /** Content-Type parameters, names lower-case. */
  readonly params: Readonly<Record<string, string>>;
  readonly filename?: string;
  /** Content-Transfer-Encoding, lower-case ("7bit" when absent). */
  readonly encoding: string;
  /** What this part's and its containers' marking headers declare (stricter wins). */
  readonly declared?: DeclaredMarking;
  /** Raw header block of the part (ends with the blank line). */
  readonly header: Buffer;
  /** Whether this leaf is the top-level body (single-part message). */
  readonly root: boolean;
  /** Byte offsets in the message: header block start, body start, body end (valid when the walk was `exact`). */
  readonly span: { readonly start: number; readonly bodyStart: number; readonly end: number };
}

/** What a visitor puts in place of a leaf. */
export interface LeafReplacement {
  /** Fields to set (replacing any of the same name, in place) — name → unfolded value; undefined removes. */
  readonly set: ReadonlyArray<readonly [string, string | undefined]>;
  /** Fields appended at the end of the part's header block. */
  readonly add: ReadonlyArray<readonly [string, string]>;
  /** The new decoded body. */
  readonly body: Buffer;
  /** Transfer encoding for the new body: base64, or text (7bit / quoted-printable, chosen here). */
  readonly encoding: 'base64' | 'text';
}

export interface WalkResult {
  readonly leaves: readonly MimeLeaf[];
  readonly message: MessageMarking;
  /** "\r\n" or "\n", as the message's top-level header uses. */
  readonly eol: string;
  /**
   * The splitter's output, laid end to end, is the input byte for byte (so the leaf
   * spans are exact offsets and a message can be rewritten by splicing).
   */
  readonly exact: boolean;
}

type Visitor = (leaf: MimeLeaf, body: Buffer) => Promise<LeafReplacement | undefined>;

function pathOf(node: MimeNode): string {
  const nr = node.partNr || ['TEXT'];
  const items = nr.map((x, i) => (x === 'TEXT' ? (i === nr.length - 1 ? 1 : undefined) : x)).filter((x) => x !== undefined);
  return items.length > 0 ? items.join('.') : '1';
}

function headerValue(node: MimeNode, name: string): string | undefined {
  if (!node.headers) return undefined;
  return node.headers.hasHeader(name) ? decodeWords(node.headers.getFirst(name)) : undefined;
}

/**
 * RFC 2047 encoded words in a field value. They do not belong in structured fields,
 * but composers (nodemailer among them) encode values with "=" or quotes that way,
 * so the marking fields are read through this (lenient in what we read).
 */
export function decodeWords(value: string): string {
  return value
    .replace(/(\?=)\s+(?==\?)/g, '$1')
    .replace(/=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=/g, (whole, charset: string, enc: string, text: string) => {
      const cs = charset.split('*')[0]!.toLowerCase();
      if (!iconv.encodingExists(cs)) return whole;
      const bytes =
        enc.toUpperCase() === 'B'
          ? Buffer.from(text, 'base64')
          : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
      return iconv.decode(bytes, cs);
    });
}

/** Decodes a transfer-encoded body (base64 / quoted-printable; others as they are). */
export function decodeBody(raw: Buffer, encoding: string, limit = Infinity): Buffer {
  switch (encoding) {
    case 'base64':
      return decodeBase64(raw, limit);
    case 'quoted-printable':
      return decodeQp(raw);
    default:
      return raw;
  }
}

const isSpace = (c: number): boolean => c === 0x0a || c === 0x0d || c === 0x20 || c === 0x09;

/** Count of `byte` in `buf` (native scans). */
function count(buf: Buffer, byte: number): number {
  let n = 0;
  for (let i = buf.indexOf(byte); i >= 0; i = buf.indexOf(byte, i + 1)) n++;
  return n;
}

/**
 * The decoded size of a body without decoding it (base64: alphabet characters
 * × 3/4, assuming the usual line breaks and spaces are the only others; other
 * encodings: decoded).
 */
export function decodedLength(raw: Buffer, encoding: string): number {
  if (encoding !== 'base64') return decodeBody(raw, encoding).length;
  // Padding and trailing line breaks carry no data.
  let end = raw.length;
  while (end > 0 && (isSpace(raw[end - 1]!) || raw[end - 1] === 0x3d)) end--;
  const body = raw.subarray(0, end);
  const chars = body.length - count(body, 0x0a) - count(body, 0x0d) - count(body, 0x20) - count(body, 0x09);
  return Math.floor((chars * 3) / 4);
}

const BASE64_BLOCK = 2 << 20;

/**
 * Base64 without a string of the whole body: blocks of about 2 MB ending at a line
 * break, each decoded into one output buffer (a 20 MB attachment costs its decoded
 * size and a few blocks, not a 20 MB string besides; smaller blocks were slower
 * and saved no peak memory). Node's decoder skips the line breaks; a block whose
 * count of base64 characters is not a multiple of 4 hands its last few to the
 * next. `limit` stops after that many decoded bytes (enough to read a header).
 */
function decodeBase64(raw: Buffer, limit: number): Buffer {
  const out = Buffer.allocUnsafe(Math.min(limit, Math.ceil((raw.length * 3) / 4)) + 3);
  let written = 0;
  let carry = '';
  for (let start = 0; start < raw.length && written < limit; ) {
    // No more than the rest of `limit` needs (4 characters per 3 bytes, plus line breaks).
    let end = Math.min(raw.length, start + BASE64_BLOCK, start + Math.ceil(((limit - written) * 4) / 3 / 0.9) + 4);
    if (end < raw.length) {
      const nl = raw.lastIndexOf(0x0a, end - 1);
      if (nl > start) end = nl + 1;
    }
    const slice = raw.subarray(start, end);
    let text = carry + slice.toString('latin1');
    const carried = carry.length;
    carry = '';
    if (end < raw.length) {
      const chars = carried + slice.length - count(slice, 0x0a) - count(slice, 0x0d) - count(slice, 0x20) - count(slice, 0x09);
      let rem = chars % 4;
      let k = text.length;
      while (rem > 0 && k > 0) if (!isSpace(text.charCodeAt(--k))) rem--;
      carry = text.slice(k).replace(/[\r\n \t]/g, '');
      text = text.slice(0, k);
    }
    written += out.write(text, written, 'base64');
    start = end;
  }
  return out.subarray(0, Math.min(written, limit));
}

function decodeQp(raw: Buffer): Buffer {
  const out = Buffer.allocUnsafe(raw.length);
  let o = 0;
  const hex = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 0x37 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1);
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== 0x3d) {
      out[o++] = c;
      continue;
    }
    // soft line break: "=" [WSP] CRLF / LF
    let j = i + 1;
    while (j < raw.length && (raw[j] === 0x20 || raw[j] === 0x09)) j++;
    if (raw[j] === 0x0d && raw[j + 1] === 0x0a) {
      i = j + 1;
      continue;
    }
    if (raw[j] === 0x0a) {
      i = j;
      continue;
    }
    const h = hex(raw[i + 1] ?? -1);
    const l = hex(raw[i + 2] ?? -1);
    if (h >= 0 && l >= 0) {
      out[o++] = h * 16 + l;
      i += 2;
    } else {
      out[o++] = c; // a stray "=" is kept as it is
    }
  }
  return out.subarray(0, o);
}

/**
 * Walks a message: leaves for which `select` says yes are given to `visit` with
 * their decoded body and may be replaced. Returns the leaves seen and, when
 * `output` is set, the re-serialised message as chunks (mostly slices of `raw`;
 * the caller concatenates, adding any trace header in front).
 */
export async function walkMessage(
  raw: Buffer,
  opts: {
    readonly select: (leaf: MimeLeaf) => boolean;
    readonly visit: Visitor;
    readonly output?: boolean;
    /** Structure only (no output): skip the inside of base64 bodies, see elideBodies(); the number is the smallest message size to do it for. */
    readonly elide?: boolean | number;
  },
): Promise<WalkResult & { readonly chunks?: readonly Buffer[] }> {
  const splitter = new Splitter();
  const reduced = opts.elide !== undefined && opts.elide !== false && !opts.output ? elideBodies(raw, opts.elide === true ? ELIDE_MIN : opts.elide) : { input: raw, toRaw: (r: number) => r };
  // The message is in memory already: one write is the splitter's fastest path.
  const source = Readable.from([reduced.input]);
  source.on('error', (err) => splitter.destroy(err));
  source.pipe(splitter);
  const toRaw = reduced.toRaw;
  let pos = 0;
  const spans = new Map<MimeLeaf, { start: number; bodyStart: number; end: number }>();

  const out: Buffer[] = [];
  const leaves: MimeLeaf[] = [];
  const declared = new WeakMap<object, DeclaredMarking | undefined>();
  let message: MessageMarking = { conversionProhibited: false, lossProhibited: false };
  let eol = '\r\n';
  let current: { leaf: MimeLeaf; node: MimeNode; chunks: Buffer[]; selected: boolean } | undefined;

  const finish = async (): Promise<void> => {
    if (!current) return;
    const { leaf, chunks, selected } = current;
    current = undefined;
    if (!selected) return;
    const rawBody = Buffer.concat(chunks);
    const replacement = await opts.visit(leaf, decodeBody(rawBody, leaf.encoding));
    if (!opts.output) return;
    if (!replacement) {
      out.push(leaf.header, rawBody);
      return;
    }
    out.push(...renderPart(leaf, replacement, eol));
  };

  // The header of the node just emitted, when no blank line ended it (a delimiter did).
  let unterminated: Buffer | undefined;
  const input = reduced.input;
  const at = (offset: number, bytes: Buffer): boolean => offset + bytes.length <= input.length && input.compare(bytes, 0, bytes.length, offset, offset + bytes.length) === 0;
  /**
   * A data or body chunk held against the input at `pos`. The splitter's chunks
   * laid end to end are the input, except around a part header that a delimiter
   * ends instead of a blank line: mailsplit (5.4.30) sends such a header again in
   * front of a closing delimiter, and drops it before the next delimiter. The
   * repeat is cut off (`value`), the dropped bytes are returned (`skipped`), so
   * offsets stay exact and a rewritten message keeps them as they are.
   */
  const align = (chunk: Buffer): { skipped?: Buffer; value: Buffer } => {
    if (at(pos, chunk)) return { value: chunk };
    if (unterminated && chunk.length > unterminated.length && chunk.subarray(0, unterminated.length).equals(unterminated)) {
      const rest = chunk.subarray(unterminated.length);
      if (rest[0] === 0x2d && rest[1] === 0x2d && at(pos, rest)) return { value: rest };
    }
    if (chunk[0] === 0x2d && chunk[1] === 0x2d) {
      const found = input.indexOf(chunk, pos);
      const skipped = found > pos ? input.subarray(pos, found) : undefined;
      // Header lines only: ending with a line break, no blank line among them.
      if (skipped && (skipped[skipped.length - 1] === 0x0a) && !/\n\r?\n/.test(skipped.toString('latin1'))) return { skipped, value: chunk };
    }
    return { value: chunk };
  };

  for await (const chunk of splitter as AsyncIterable<MimeNode | { type: 'data' | 'body'; node: MimeNode; value: Buffer }>) {
    if (chunk.type === 'node') {
      await finish();
      const node = chunk;
      const header = node.getHeaders();
      const start = pos;
      pos += header.length;
      unterminated = header.length > 0 && !/\n\r?\n$/.test(header.subarray(-4).toString('latin1')) && !/^\r?\n$/.test(header.toString('latin1')) ? header : undefined;
      if (node.root) {
        const lf = header.indexOf(0x0a);
        eol = lf > 0 && header[lf - 1] !== 0x0d ? '\n' : '\r\n';
        message = parseMessageMarking(headerValue(node, 'conversion'), headerValue(node, 'conversion-with-loss'));
      }
      const marked = declaredForPart(headerValue(node, 'content-conversion'), headerValue(node, 'content-convert'));
      const own = node.multipart === 'signed' || node.multipart === 'encrypted' ? stricter(marked, SIGNED) : marked;
      const inherited = node.parentNode ? declared.get(node.parentNode) : undefined;
      const mine = inherited || own ? stricter(inherited, own) : undefined;
      declared.set(node, mine);
      const isLeaf = !node.multipart && node.messageNode !== true;
      if (!isLeaf) {
        if (opts.output) out.push(header);
        continue;
      }
      const ct = parseHeaderValue(headerValue(node, 'content-type') ?? '');
      const leaf: MimeLeaf = {
        path: pathOf(node),
        type: (node.contentType || 'text/plain').toLowerCase(),
        params: ct.params,
        ...(node.filename && { filename: node.filename }),
        encoding: (node.encoding || '7bit').toLowerCase(),
        ...(mine && { declared: mine }),
        header,
        root: node.root,
        span: { start: toRaw(start), bodyStart: toRaw(pos), end: toRaw(pos) },
      };
      spans.set(leaf, leaf.span as { start: number; bodyStart: number; end: number });
      leaves.push(leaf);
      // An elided walk sees only part of each body: nothing can be selected in it.
      const selected = reduced.input === raw && opts.select(leaf);
      current = { leaf, node, chunks: [], selected };
      if (opts.output && !selected) out.push(header);
      continue;
    }
    const { skipped, value } = align(chunk.value);
    unterminated = undefined;
    if (skipped) {
      // Bytes the splitter left out: outside every part, passed through as they are.
      await finish();
      pos += skipped.length;
      if (opts.output) out.push(skipped);
    }
    pos += value.length;
    if (chunk.type === 'body' && current && chunk.node === current.node) {
      spans.get(current.leaf)!.end = toRaw(pos);
      if (current.selected) current.chunks.push(value);
      else if (opts.output) out.push(value);
      continue;
    }
    await finish();
    if (opts.output) out.push(value);
  }
  await finish();
  return { leaves, message, eol, exact: pos === reduced.input.length, ...(opts.output && { chunks: out }) };
}

/** One pass over the structure: leaves with their byte spans, markings, line ending. */
export function scanMessage(raw: Buffer): Promise<WalkResult> {
  return walkMessage(raw, { select: () => false, visit: async () => undefined, elide: true });
}

/** Below this size the splitter is fast enough on its own. */
const ELIDE_MIN = 64 * 1024;

/**
 * What the splitter needs to see of a message to find its structure. After a
 * blank line (so inside a body, a preamble or an epilogue, never a header block),
 * a line that does not start with "-" or white space and holds no ":" can be
 * neither a boundary nor a header; the inside of each run of such lines (all but
 * its last line, which keeps the body's end where it is) is left out, and `toRaw`
 * maps an offset in the reduced input back to the message. Megabytes of base64
 * then cost a few native scans instead of forty thousand line callbacks.
 */
export function elideBodies(raw: Buffer, min = ELIDE_MIN): { input: Buffer; toRaw: (reduced: number) => number } {
  if (raw.length < min) return { input: raw, toRaw: (r) => r };
  const keep: Buffer[] = [];
  const cuts: { at: number; skipped: number }[] = []; // at: reduced offset where `skipped` raw bytes (in all) were left out
  let from = 0;
  let reducedLen = 0;
  let skippedSoFar = 0;
  let colon = raw.indexOf(0x3a);
  for (let nl = raw.indexOf(0x0a); nl >= 0 && nl < raw.length - 1; ) {
    // Is the line after this LF blank?
    let start = nl + 1;
    if (raw[start] === 0x0d && raw[start + 1] === 0x0a) start += 2;
    else if (raw[start] === 0x0a) start += 1;
    else {
      nl = raw.indexOf(0x0a, nl + 1);
      continue;
    }
    let at = start;
    let lastLine = start;
    let lines = 0;
    for (;;) {
      const c = raw[at];
      if (c === undefined || c === 0x2d || c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a) break;
      const eol = raw.indexOf(0x0a, at);
      if (eol < 0 || eol - at < 16) break;
      if (colon >= 0 && colon < at) colon = raw.indexOf(0x3a, at);
      if (colon >= 0 && colon < eol) break;
      lines++;
      lastLine = at;
      at = eol + 1;
    }
    if (lines >= 4) {
      keep.push(raw.subarray(from, start));
      reducedLen += start - from;
      skippedSoFar += lastLine - start;
      cuts.push({ at: reducedLen, skipped: skippedSoFar });
      from = lastLine;
    }
    nl = raw.indexOf(0x0a, at - 1); // the LF that ends the run (or the blank line's own)
  }
  if (cuts.length === 0) return { input: raw, toRaw: (r) => r };
  keep.push(raw.subarray(from));
  // Offsets are asked in increasing order during a walk: keep a cursor.
  let i = 0;
  const toRaw = (r: number): number => {
    while (i > 0 && cuts[i - 1]!.at >= r) i--;
    while (i < cuts.length && cuts[i]!.at < r) i++;
    return r + (i > 0 ? cuts[i - 1]!.skipped : 0);
  };
  return { input: Buffer.concat(keep), toRaw };
}

/** A leaf's body, still transfer-encoded, as a view into the message (needs an exact scan). */
export const encodedBody = (raw: Buffer, leaf: MimeLeaf): Buffer => raw.subarray(leaf.span.bodyStart, leaf.span.end);

/**
 * A rewritten message by splicing: the bytes between replaced leaves are the
 * message's own (views, not copies); each replaced leaf gets its new header and
 * body. Needs an exact scan.
 */
export function spliceMessage(raw: Buffer, eol: string, replacements: ReadonlyMap<MimeLeaf, LeafReplacement>): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  const ordered = [...replacements].sort(([a], [b]) => a.span.start - b.span.start);
  for (const [leaf, r] of ordered) {
    out.push(raw.subarray(at, leaf.span.start), ...renderPart(leaf, r, eol));
    at = leaf.span.end;
  }
  out.push(raw.subarray(at));
  return out;
}

/** Splits a raw header block into fields (each with its continuation lines) and the closing blank line. */
export function splitHeader(block: Buffer): { fields: { name: string; raw: string }[]; tail: string } {
  const text = block.toString('latin1');
  const fields: { name: string; raw: string }[] = [];
  let tail = '';
  let i = 0;
  while (i < text.length) {
    let end = text.indexOf('\n', i);
    end = end < 0 ? text.length : end + 1;
    const line = text.slice(i, end);
    if (line === '\r\n' || line === '\n') {
      tail = text.slice(i);
      break;
    }
    if ((line[0] === ' ' || line[0] === '\t') && fields.length > 0) fields[fields.length - 1]!.raw += line;
    else fields.push({ name: line.slice(0, Math.max(0, line.indexOf(':'))).trim().toLowerCase(), raw: line });
    i = end;
  }
  return { fields, tail };
}

/**
 * One header field, folded before a space wherever a line would pass 76 columns
 * (RFC 5322 §2.2.3: the continuation line starts with that space), in the
 * message's line ending.
 */
export function formatField(name: string, value: string, eol: string): string {
  const words = `${name}: ${value.replace(/[\r\n]+/g, ' ')}`.split(' ');
  const lines: string[] = [];
  let line = words.shift() ?? '';
  for (const w of words) {
    if (line.length + 1 + w.length > 76 && line.trim().length > 0) {
      lines.push(line);
      line = ` ${w}`;
    } else {
      line += ` ${w}`;
    }
  }
  lines.push(line);
  return lines.join(eol) + eol;
}

/** Header block of a replaced part: fields set in place, others kept byte for byte, additions at the end. */
export function editHeader(block: Buffer, set: LeafReplacement['set'], add: LeafReplacement['add'], eol: string): Buffer {
  const { fields, tail } = splitHeader(block);
  const pending = new Map(set.map(([n, v]) => [n.toLowerCase(), [n, v] as const]));
  const lines: string[] = [];
  for (const f of fields) {
    const change = pending.get(f.name);
    if (!change) {
      lines.push(f.raw.endsWith('\n') ? f.raw : f.raw + eol);
      continue;
    }
    pending.delete(f.name);
    // The first field of a name is replaced in place; later duplicates are dropped.
    if (change[1] !== undefined) lines.push(formatField(change[0], change[1], eol));
    pending.set(f.name, [change[0], undefined]);
  }
  for (const [, [n, v]] of pending) if (v !== undefined) lines.push(formatField(n, v, eol));
  for (const [n, v] of add) lines.push(formatField(n, v, eol));
  return Buffer.from(lines.join('') + (tail || eol), 'latin1');
}

/** Encodes a body for the wire in the message's line ending (no line ending after the last line). */
export function encodeBody(body: Buffer, encoding: LeafReplacement['encoding'], eol: string): { text: string; cte: string } {
  if (encoding === 'base64') {
    const b64 = body.toString('base64');
    const lines: string[] = [];
    for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
    return { text: lines.join(eol), cte: 'base64' };
  }
  const str = body.toString('latin1');
  // eslint-disable-next-line no-control-regex
  const seven = !/[^\x09\x0a\x0d\x20-\x7e]/.test(str) && str.split(/\r?\n/).every((l) => l.length <= 998);
  if (seven) return { text: str.replace(/\r?\n/g, eol).replace(/(\r?\n)$/, ''), cte: '7bit' };
  const qp = qpWrap(qpEncode(body), 76).replace(/\r?\n/g, eol);
  return { text: qp.replace(new RegExp(`${eol === '\n' ? '\\n' : '\\r\\n'}$`), ''), cte: 'quoted-printable' };
}

function renderPart(leaf: MimeLeaf, r: LeafReplacement, eol: string): Buffer[] {
  const { text, cte } = encodeBody(r.body, r.encoding, eol);
  const header = editHeader(leaf.header, [...r.set, ['Content-Transfer-Encoding', cte]], r.add, eol);
  // Inside a multipart, the line ending before the next boundary belongs to the boundary (mailsplit);
  // a single-part message's body ends with one.
  return [header, Buffer.from(leaf.root ? text + eol : text, 'latin1')];
}

export { buildHeaderValue };
