/**
 * Built-in: transcode text/plain between charsets with iconv-lite. Into a
 * Unicode charset (or from US-ASCII) nothing can be lost: loss 0. Otherwise the
 * plan assumes 5 (the least a lost character costs; `minLoss` 0, since every
 * character may map) and the conversion measures the real loss: 0 when all map,
 * else 5 + 45 × the share of characters that do not (they become "?").
 */
import iconv from 'iconv-lite';
import { defineConverters, type Reach } from '../src/conversion/api.ts';

const UNICODE = new Set(['utf-8', 'utf8', 'utf-16', 'utf-16le', 'utf-16be', 'utf-32', 'utf-32le', 'utf-32be', 'gb18030']);
const FREE = ['charset', 'size'];

/** Loss of a transcoding that lost `lost` of `total` characters. */
export function charsetLoss(lost: number, total: number): number {
  return lost === 0 ? 0 : Math.round((5 + (45 * lost) / Math.max(1, total)) * 100) / 100;
}

/** Characters of `text` that `charset` cannot represent. */
export function unmappable(text: string, charset: string): { lost: number; total: number } {
  const seen = new Map<string, boolean>();
  let lost = 0;
  let total = 0;
  for (const ch of text) {
    total++;
    let ok = seen.get(ch);
    if (ok === undefined) {
      ok = iconv.decode(iconv.encode(ch, charset), charset) === ch;
      seen.set(ch, ok);
    }
    if (!ok) lost++;
  }
  return { lost, total };
}

export default defineConverters({
  name: 'text-charset',
  from: 'text/plain',
  to: 'text/plain',
  loss: 5,
  description: 'text/plain charset transcoding (iconv-lite); loss = characters that do not map',
  reach(input, target) {
    const from = (input.charset ?? 'us-ascii').toLowerCase();
    if (!iconv.encodingExists(from)) return undefined; // cannot read it (e.g. ISO-2022-JP): no conversion
    const out = new Map<string, Reach>();
    let alts = target.alternatives(input, FREE);
    if (alts.length === 0) alts = target.alternatives(input, [...FREE, 'type']);
    for (const alt of alts) {
      const b = alt.charset;
      if (!b) continue;
      const excluded = (b.not ?? []).map(String);
      const to = typeof b.eq === 'string' ? b.eq : !excluded.includes('utf-8') ? 'utf-8' : undefined;
      if (!to || to === from || excluded.includes(to) || !iconv.encodingExists(to)) continue;
      const loss = UNICODE.has(to) || from === 'us-ascii' ? 0 : 5;
      out.set(to, { features: { type: 'text/plain', charset: to }, loss, minLoss: 0 });
    }
    return [...out.values()];
  },
  async convert(input, ctx) {
    const from = input.features.charset ?? 'us-ascii';
    const to = input.aim.charset;
    if (!to) throw new Error('no target charset');
    if (!iconv.encodingExists(from)) throw new Error(`unknown charset ${from}`);
    const text = iconv.decode(input.body, from);
    if (ctx.signal.aborted) throw ctx.signal.reason;
    const { lost, total } = UNICODE.has(to.toLowerCase()) ? { lost: 0, total: 0 } : unmappable(text, to);
    const body = iconv.encode(text, to);
    return { body, contentType: 'text/plain', params: { charset: to }, features: { type: 'text/plain', charset: to, size: body.length }, loss: charsetLoss(lost, total) };
  },
});
