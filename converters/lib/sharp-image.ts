/**
 * Shared by the sharp converters (image-format, image-resize, image-colour): one
 * guarded decoder, one encoder per output type that keeps the colour class where
 * the format can, and the loss table they all use. Not a converter module itself
 * (the registry loads only the top-level files of converters/).
 *
 * Loss points = PSNR shortfall below 60 dB, measured with sharp 0.35.5 on a
 * 256×192 gradient-and-edges image (libraries.md §4): JPEG q80 28.0 dB → 32;
 * GIF / PNG palette (quantised to 256 colours) 35 dB → 25; PNG, TIFF LZW, WebP
 * and AVIF lossless: ∞ → 0. Quantising an image that already has ≤ 256 colours
 * (binary, grey, mapped) loses nothing → 0.
 */
import sharp, { type Sharp } from 'sharp';
import { measureImage } from '../../src/conversion/features.ts';
import type { Alternative, Color, ConvertContext, FeatureSet, PartFeatures, PartInput, PartOutput } from '../../src/conversion/api.ts';

// A relay converts each image once: libvips' operation cache (50 MB by default) would only
// hold memory (libraries.md §4: consider sharp.cache(false) in a daemon).
sharp.cache(false);

/** The types written (AVIF is written as image/avif; HEIF/HEIC is read only, as AVIF). */
export const OUTPUT_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/avif', 'image/gif', 'image/tiff'] as const;
/** The types read: the outputs plus image/heif (AV1-coded HEIF; this sharp build has no HEVC). */
export const INPUT_TYPES = [...OUTPUT_TYPES, 'image/heif'] as const;

export const SHORT: Readonly<Record<string, string>> = {
  'image/jpeg': 'jpeg',
  'image/png': 'png',
  'image/webp': 'webp',
  'image/avif': 'avif',
  'image/gif': 'gif',
  'image/tiff': 'tiff',
  'image/heif': 'heif',
};

export const LOSS = { jpeg: 32, quantise: 25 } as const;

const RICHNESS: Readonly<Record<Color, number>> = { binary: 0, grey: 1, limited: 2, mapped: 3, full: 4 };
/** Loss of reducing colour, relative to full colour (a palette is GIF's 25; grey and binary drop more). */
const COLOR_LOSS: Readonly<Record<Color, number>> = { full: 0, mapped: 25, limited: 28, grey: 30, binary: 60 };

export const richer = (a: Color, b: Color): boolean => RICHNESS[a] > RICHNESS[b];
export const colorLoss = (from: Color, to: Color): number => Math.max(1, COLOR_LOSS[to] - COLOR_LOSS[from]);

/** Colour classes each output format can write. */
export const WRITABLE_COLORS: Readonly<Record<string, readonly Color[]>> = {
  'image/jpeg': ['grey', 'full'],
  'image/png': ['binary', 'grey', 'mapped', 'full'],
  'image/webp': ['full'],
  'image/avif': ['full'],
  'image/gif': ['binary', 'mapped'],
  'image/tiff': ['binary', 'grey', 'full'],
};

/** The colour class an image of `color` has once written as `type`. */
export function outputColor(type: string, color: Color | undefined): Color {
  const c = color ?? 'full';
  switch (type) {
    case 'image/jpeg':
      return c === 'binary' || c === 'grey' ? 'grey' : 'full';
    case 'image/png':
      return c === 'limited' ? 'mapped' : c;
    case 'image/gif':
      return c === 'binary' ? 'binary' : 'mapped';
    case 'image/tiff':
      return c === 'binary' || c === 'grey' ? c : 'full';
    default:
      return 'full';
  }
}

/** Loss of (re-)encoding an image of `color` as `type`. */
export function encodeLoss(type: string, color: Color | undefined): number {
  if (type === 'image/jpeg') return LOSS.jpeg;
  if (type === 'image/gif') return color === 'binary' || color === 'grey' || color === 'mapped' ? 0 : LOSS.quantise;
  return 0;
}

/** A decoder with the relay's guards: pixel limit (decompression bombs), fail on corrupt data, EXIF orientation applied. */
export function decode(input: PartInput, ctx: ConvertContext): Sharp {
  return sharp(input.body, { limitInputPixels: ctx.limits.maxPixels, failOn: 'warning' }).rotate();
}

/** Applies the colour class `color` and the encoder of `type`; measures what came out. */
export async function encode(img: Sharp, type: string, color: Color, input: PartInput, ctx: ConvertContext): Promise<PartOutput> {
  if (ctx.signal.aborted) throw ctx.signal.reason;
  const dpi = input.aim.dpi;
  // Density is kept (fax resolution matters). withMetadata() would also convert grey back to
  // sRGB through the ICC profile, so grey and bi-level forms carry it only where the
  // format has its own field (TIFF resolution, pixels per mm).
  if (dpi !== undefined && color !== 'grey' && color !== 'binary') img = img.withMetadata({ density: dpi });
  const tiffRes = dpi !== undefined ? { xres: dpi / 25.4, yres: dpi / 25.4, resolutionUnit: 'inch' as const } : {};
  // Grey and bi-level forms have no alpha: flatten onto white; bi-level is thresholded
  // (idempotent on an image that is already black and white).
  if (color === 'binary') img = img.flatten({ background: '#ffffff' }).threshold(128).toColourspace('b-w');
  else if (color === 'grey') img = img.flatten({ background: '#ffffff' }).toColourspace('b-w');
  switch (type) {
    case 'image/jpeg':
      img = img.flatten({ background: '#ffffff' }).jpeg({ quality: 80, mozjpeg: true });
      break;
    case 'image/png':
      if (color === 'binary') img = img.png({ palette: true, colours: 2, dither: 0 });
      else if (color === 'grey') img = img.png();
      else if (color === 'mapped' || color === 'limited') img = img.png({ palette: true, quality: 100, dither: 0 });
      else img = img.png();
      break;
    case 'image/webp':
      img = img.webp({ lossless: true });
      break;
    case 'image/avif':
      img = img.avif({ lossless: true });
      break;
    case 'image/gif':
      img = img.gif(color === 'binary' ? { colours: 2, dither: 0 } : { dither: 0 });
      break;
    case 'image/tiff':
      if (color === 'binary') img = img.tiff({ bitdepth: 1, compression: 'ccittfax4', ...tiffRes });
      else img = img.tiff({ compression: 'lzw', ...tiffRes });
      break;
    default:
      throw new Error(`cannot write ${type}`);
  }
  const body = await img.toBuffer();
  if (body.length > ctx.limits.maxOutputBytes) throw new Error(`output of ${body.length} bytes exceeds the limit of ${ctx.limits.maxOutputBytes}`);
  const m = await measureImage(body, ctx.limits.maxPixels);
  const features: PartFeatures = { type, size: body.length, 'pix-x': m['pix-x'], 'pix-y': m['pix-y'], pixels: m.pixels, color: m.color, ...(m.dpi !== undefined && { dpi: m.dpi }) };
  return { body, contentType: type, features };
}

/**
 * The target's alternatives with `free` tags open; if none keep the part's own
 * type, those that a later step could reach by changing type and colour too.
 */
export function alternativesFor(target: FeatureSet, input: PartFeatures, free: readonly string[]): readonly Alternative[] {
  const own = target.alternatives(input, free);
  if (own.length > 0) return own;
  return target.alternatives(input, [...free, 'type', 'color', 'dpi']);
}

/** Largest integer allowed by an upper bound. */
const ceiling = (max: number, strict: boolean | undefined): number => (strict && Number.isInteger(max) ? max - 1 : Math.floor(max));

/** 10 loss points per halving of the pixel count (1 for an upscale: nothing is lost, edges soften). */
export const scaleLoss = (w0: number, h0: number, w: number, h: number): number => {
  const ratio = (w0 * h0) / (w * h);
  return Math.round((ratio > 1 ? 10 * Math.log2(ratio) : 1) * 10) / 10;
};

/**
 * The dimensions the target's alternatives allow for `input` (pix-x / pix-y maximum
 * or exact value, pixel budget), aspect ratio kept; one entry per distinct size,
 * none when the image already fits every bound it is given.
 */
export function fitDimensions(input: PartFeatures, target: FeatureSet, free: readonly string[]): { w: number; h: number }[] {
  const w0 = input['pix-x'];
  const h0 = input['pix-y'];
  if (w0 === undefined || h0 === undefined) return [];
  const out = new Map<string, { w: number; h: number }>();
  for (const alt of alternativesFor(target, input, free)) {
    const bx = alt['pix-x'];
    const by = alt['pix-y'];
    const bp = alt.pixels;
    let scale = 1;
    let exact = false;
    if (typeof bx?.eq === 'number') [scale, exact] = [bx.eq / w0, true];
    else if (typeof by?.eq === 'number') [scale, exact] = [by.eq / h0, true];
    if (!exact) {
      if (bx?.max !== undefined) scale = Math.min(scale, ceiling(bx.max, bx.maxStrict) / w0);
      if (by?.max !== undefined) scale = Math.min(scale, ceiling(by.max, by.maxStrict) / h0);
      if (bp?.max !== undefined) scale = Math.min(scale, Math.sqrt(ceiling(bp.max, bp.maxStrict) / (w0 * h0)));
      if (scale >= 1) continue; // already within: nothing to gain
    }
    if (!(scale > 0)) continue;
    const w: number = typeof bx?.eq === 'number' ? bx.eq : Math.max(1, Math.floor(w0 * scale + 1e-9));
    const h: number = typeof by?.eq === 'number' ? by.eq : Math.max(1, Math.floor(h0 * scale + 1e-9));
    if (w === w0 && h === h0) continue;
    out.set(`${w}x${h}`, { w, h });
  }
  return [...out.values()];
}

/**
 * The input's features as a sharp step carries them over: without `size` (known
 * once written) and without `dpi` unless the target constrains it — writing the
 * density means keeping metadata, which costs an ICC pass (about 10 % of a
 * 12-megapixel resize), for a value most JPEGs only carry as the JFIF default.
 */
export function carried(input: PartFeatures, target: FeatureSet): PartFeatures {
  const { size: _size, dpi, ...rest } = input;
  if (dpi === undefined) return rest;
  const wanted = alternativesFor(target, input, ['dpi']).some((a) => a.dpi !== undefined);
  return wanted ? { ...rest, dpi } : rest;
}
