/**
 * Built-in: reduce an image's colour (same type) to what the target allows, in
 * RFC 2534's order full → mapped → grey → binary, choosing the richest class the
 * target accepts and the format can write. Loss: a palette 25, grey 30, binary
 * 60 relative to full colour (grey → binary 30), plus the format's re-encoding loss.
 */
import { defineConverters, type Color, type Converter, type Reach } from '../src/conversion/api.ts';
import { alternativesFor, carried, colorLoss, decode, encode, encodeLoss, OUTPUT_TYPES, richer, SHORT, WRITABLE_COLORS } from './lib/sharp-image.ts';

const FREE = ['color', 'size'];

function colourConverter(type: string): Converter {
  const writable = WRITABLE_COLORS[type] ?? [];
  return {
    name: `sharp/colour-${SHORT[type]}`,
    from: type,
    to: type,
    loss: 30 + encodeLoss(type, 'full'),
    description: `reduce ${type} colour to ${writable.filter((c) => c !== 'full').join(' / ')} (sharp)`,
    reach(input, target) {
      const current = input.color;
      if (current === undefined || input['pix-x'] === undefined) return undefined;
      const out = new Map<Color, Reach>();
      for (const alt of alternativesFor(target, input, FREE)) {
        const b = alt.color;
        if (!b) continue; // colour unconstrained here: nothing to gain
        const allowed = writable.filter((c) => richer(current, c) && (b.eq === undefined || b.eq === c) && !(b.not ?? []).includes(c));
        // The richest class allowed loses least.
        const choice = allowed.reduce<Color | undefined>((best, c) => (best === undefined || richer(c, best) ? c : best), undefined);
        if (!choice) continue;
        out.set(choice, { features: { ...carried(input, target), color: choice }, loss: colorLoss(current, choice) + encodeLoss(type, choice) });
      }
      return [...out.values()];
    },
    async convert(input, ctx) {
      // encode() applies the colour class (flatten, grey, threshold) on the way out.
      return encode(decode(input, ctx), type, input.aim.color ?? 'grey', input, ctx);
    },
  };
}

export default defineConverters(...OUTPUT_TYPES.filter((t) => (WRITABLE_COLORS[t] ?? []).length > 1).map(colourConverter));
