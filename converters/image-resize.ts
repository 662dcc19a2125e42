/**
 * Built-in: downscale an image (same type) to what the target allows — a maximum
 * (or exact) pix-x / pix-y, or a pixel budget (`pixels`, a private tag) — keeping
 * the aspect ratio. Loss = 10 points per halving of the pixel count, plus the
 * re-encoding loss of the format (JPEG 32; lossless formats 0). On JPEG input
 * sharp decodes at reduced size (shrink-on-load), so a 12-megapixel photo is
 * never fully decoded. (A change of format and size together is one step of
 * image-format, which resizes on the way.)
 */
import { defineConverters, type Converter } from '../src/conversion/api.ts';
import { carried, decode, encode, encodeLoss, fitDimensions, OUTPUT_TYPES, outputColor, scaleLoss, SHORT } from './lib/sharp-image.ts';

const FREE = ['pix-x', 'pix-y', 'pixels', 'size'];

function resizeConverter(type: string): Converter {
  return {
    name: `sharp/resize-${SHORT[type]}`,
    from: type,
    to: type,
    loss: 10 + encodeLoss(type, 'full'),
    description: `downscale ${type} to a maximum pix-x / pix-y / pixel count (sharp)`,
    reach(input, target) {
      const w0 = input['pix-x'];
      const h0 = input['pix-y'];
      if (w0 === undefined || h0 === undefined) return undefined;
      const rest = carried(input, target);
      return fitDimensions(input, target, FREE).map(({ w, h }) => ({
        features: { ...rest, 'pix-x': w, 'pix-y': h, pixels: w * h, color: outputColor(type, input.color) },
        loss: scaleLoss(w0, h0, w, h) + encodeLoss(type, input.color),
      }));
    },
    async convert(input, ctx) {
      const w = input.aim['pix-x'];
      const h = input.aim['pix-y'];
      if (w === undefined || h === undefined) throw new Error('resize without target dimensions');
      const img = decode(input, ctx).resize(w, h, { fit: 'fill' });
      return encode(img, type, outputColor(type, input.features.color), input, ctx);
    },
  };
}

export default defineConverters(...OUTPUT_TYPES.map(resizeConverter));
