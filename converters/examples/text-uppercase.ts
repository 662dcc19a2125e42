/**
 * Example plug-in: text/enriched (RFC 1896) → text/plain, bold text SHOUTED in
 * capitals. Copy this file into a directory named in `converters.dirs` (or export
 * the same shape from an npm package named in `converters.packages`).
 */
// Types only (erased when loaded), so this file runs from any directory.
import type { Converter, ConverterModule } from '../../src/conversion/api.ts';

const textUppercase: Converter = {
  // Unique across every loaded converter; prefix it with your package name.
  name: 'example/text-uppercase',
  // The media type read (lower-case, no parameters) …
  from: 'text/enriched',
  // … and the one written.
  to: 'text/plain',
  // 0 = lossless; fonts, colours and layout go, the words stay: 20 points.
  loss: 20,
  // One line for `drucof-relay converters`.
  description: 'text/enriched → text/plain, <bold> in CAPITALS (example)',
  // Optional: the features the output will have (the planner checks them against the recipient).
  reach: () => ({ features: { type: 'text/plain', charset: 'utf-8' } }),
  // Decoded body in, decoded body out; throw (or overrun ctx.signal) and only this part fails.
  async convert(input, ctx) {
    if (ctx.signal.aborted) throw new Error('aborted');
    const text = input.body
      .toString('utf8')
      .replace(/<bold>([\s\S]*?)<\/bold>/gi, (_m, t: string) => t.toUpperCase()) // bold → CAPITALS
      .replace(/<\/?[A-Za-z0-9-]+>/g, '') // every other formatting command goes
      .replace(/<</g, '<'); // "<<" is a literal "<" in text/enriched
    const body = Buffer.from(text, 'utf8');
    // contentType + params become the part's Content-Type; features its Content-Features.
    return { body, contentType: 'text/plain', params: { charset: 'utf-8' }, features: { type: 'text/plain', charset: 'utf-8', size: body.length } };
  },
};

// The module's default export: `{ converters: [...] }` (what defineConverters() returns).
export default { converters: [textUppercase] } satisfies ConverterModule;
