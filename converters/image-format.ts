/**
 * Built-in: image format conversion with sharp, one converter per (from, to) pair
 * among JPEG, PNG, WebP, AVIF, GIF, TIFF (and HEIF as input, AV1-coded only on
 * this sharp build). Lossless targets (PNG, WebP/AVIF lossless, TIFF LZW) cost 0;
 * JPEG q80 costs 32; GIF 25 unless the image already fits a palette (see lib/).
 * The colour class is kept where the target format can hold it. When the target
 * also limits the size, the same step can downscale on the way (one decode, one
 * encode — the loss is the resize's plus the encoding's, as for two steps).
 */
import { defineConverters, type Converter, type Reach } from '../src/conversion/api.ts';
import { carried, decode, encode, encodeLoss, fitDimensions, INPUT_TYPES, OUTPUT_TYPES, outputColor, scaleLoss, SHORT } from './lib/sharp-image.ts';

const FREE = ['pix-x', 'pix-y', 'pixels', 'size'];

function formatConverter(from: string, to: string): Converter {
  return {
    name: `sharp/${SHORT[from]}-to-${SHORT[to]}`,
    from,
    to,
    loss: encodeLoss(to, 'full'),
    description: `${from} → ${to} (sharp${encodeLoss(to, 'full') === 0 ? ', lossless' : ''}), downscaling on the way if needed`,
    reach(input, target) {
      const w0 = input['pix-x'];
      const h0 = input['pix-y'];
      if (w0 === undefined || h0 === undefined) return undefined; // unreadable image: nothing to aim at
      const converted = { ...carried(input, target), type: to, color: outputColor(to, input.color) };
      const loss = encodeLoss(to, input.color);
      const out: Reach[] = [{ features: converted, loss }];
      for (const { w, h } of fitDimensions(converted, target, FREE)) {
        out.push({ features: { ...converted, 'pix-x': w, 'pix-y': h, pixels: w * h }, loss: loss + scaleLoss(w0, h0, w, h) });
      }
      return out;
    },
    async convert(input, ctx) {
      let img = decode(input, ctx);
      const w = input.aim['pix-x'];
      const h = input.aim['pix-y'];
      if (w !== undefined && h !== undefined && (w !== input.features['pix-x'] || h !== input.features['pix-y'])) img = img.resize(w, h, { fit: 'fill' });
      return encode(img, to, outputColor(to, input.features.color), input, ctx);
    },
  };
}

export default defineConverters(...INPUT_TYPES.flatMap((from) => OUTPUT_TYPES.filter((to) => to !== from).map((to) => formatConverter(from, to))));
