/**
 * Built-in: HTML to plain text with html-to-text (links kept as `text [url]`,
 * tables and lists laid out, images and styling dropped). Loss 40: the words
 * survive, the presentation does not. The output is UTF-8; a target that wants
 * another charset gets it from text-charset in a second step.
 */
import iconv from 'iconv-lite';
import { convert as htmlToText } from 'html-to-text';
import { defineConverters } from '../src/conversion/api.ts';

export const HTML_TO_TEXT_LOSS = 40;

/**
 * The charset of HTML whose Content-Type names none: a `<meta charset>` near the
 * top, else UTF-8 when the bytes are valid UTF-8, else Windows-1252 (what
 * browsers assume for unlabelled Western text).
 */
export function sniffCharset(body: Buffer): string {
  const head = body.subarray(0, 2048).toString('latin1');
  const meta = /<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_:.-]+)/i.exec(head);
  if (meta && iconv.encodingExists(meta[1]!)) return meta[1]!.toLowerCase();
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(body);
    return 'utf-8';
  } catch {
    return 'windows-1252';
  }
}

export default defineConverters({
  name: 'html-to-text',
  from: 'text/html',
  to: 'text/plain',
  loss: HTML_TO_TEXT_LOSS,
  description: 'text/html → text/plain (html-to-text, UTF-8)',
  reach(input) {
    // An HTML part in a charset iconv-lite cannot read cannot be converted.
    if (!iconv.encodingExists(input.charset ?? 'us-ascii')) return undefined;
    return { features: { type: 'text/plain', charset: 'utf-8' } };
  },
  async convert(input, ctx) {
    const charset = input.params.charset ?? sniffCharset(input.body);
    if (!iconv.encodingExists(charset)) throw new Error(`unknown charset ${charset}`);
    const html = iconv.decode(input.body, charset);
    if (ctx.signal.aborted) throw ctx.signal.reason;
    const text = htmlToText(html, { wordwrap: 78 }).replace(/\r?\n/g, '\r\n');
    const body = Buffer.from(text.endsWith('\r\n') ? text : `${text}\r\n`, 'utf8');
    return { body, contentType: 'text/plain', params: { charset: 'utf-8' }, features: { type: 'text/plain', charset: 'utf-8', size: body.length } };
  },
});
