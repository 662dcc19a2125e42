/**
 * Measuring a body part's PartFeatures (protocols.md A7): `type` and `size` for
 * every part, `charset` for text, `pix-x`, `pix-y`, `pixels`, `color` and `dpi`
 * (when the file says) for images sharp can read. Reading an image's header only
 * (sharp `metadata()`), never its pixels, except to tell a 1-bit palette's
 * black-and-white from two colours. An image that cannot be read gets its image
 * tags listed as `unmeasured`, so it satisfies no constraint on them.
 */
import sharp from 'sharp';
import type { Color, PartFeatures } from '../model/feature-set.ts';

/** Media types sharp reads on this build (HEIF only with AV1, i.e. AVIF; libraries.md §4). */
export const SHARP_INPUT_TYPES: ReadonlySet<string> = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/avif', 'image/heif']);

/** The image tags a measurement provides. */
export const IMAGE_TAGS = ['pix-x', 'pix-y', 'pixels', 'color', 'dpi'] as const;

const FORMAT_TYPES: Readonly<Record<string, string>> = {
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  gif: 'image/gif',
  tiff: 'image/tiff',
  heif: 'image/heif',
  avif: 'image/avif',
  svg: 'image/svg+xml',
};

export interface ImageMeasure {
  readonly type?: string;
  readonly 'pix-x': number;
  readonly 'pix-y': number;
  readonly pixels: number;
  readonly color: Color;
  readonly dpi?: number;
}

/**
 * Reads an image's dimensions, colour class and density from its header.
 * Throws on data sharp cannot read. `maxPixels` bounds the one case that decodes.
 */
export async function measureImage(body: Buffer, maxPixels: number): Promise<ImageMeasure> {
  // Header only: no pixel limit here, so a decompression bomb is measured (and then refused when decoded).
  const meta = await sharp(body, { limitInputPixels: false }).metadata();
  if (!meta.width || !meta.height) throw new Error('image has no dimensions');
  // EXIF orientation 5–8 swaps the displayed axes.
  const swap = (meta.orientation ?? 1) >= 5;
  const w = swap ? meta.height : meta.width;
  const h = swap ? meta.width : meta.height;
  let color: Color;
  if (meta.space === 'b-w' || meta.space === 'grey16') color = meta.bitsPerSample === 1 ? 'binary' : 'grey';
  else if (meta.isPalette) color = meta.bitsPerSample === 1 && w * h <= maxPixels && (await isBlackAndWhite(body, maxPixels)) ? 'binary' : 'mapped';
  else color = 'full';
  const avif = meta.format === 'heif' && meta.compression === 'av1';
  const type = avif ? 'image/avif' : meta.format ? FORMAT_TYPES[meta.format] : undefined;
  return {
    ...(type && { type }),
    'pix-x': w,
    'pix-y': h,
    pixels: w * h,
    color,
    ...(meta.density && meta.density > 0 && { dpi: Math.round(meta.density) }),
  };
}

/** Whether a (two-colour palette) image has only grey levels. */
async function isBlackAndWhite(body: Buffer, maxPixels: number): Promise<boolean> {
  const stats = await sharp(body, { limitInputPixels: maxPixels }).stats();
  const [r, g, b] = stats.channels;
  if (!r || !g || !b) return true;
  return r.min === g.min && g.min === b.min && r.max === g.max && g.max === b.max && Math.abs(r.mean - g.mean) < 0.5 && Math.abs(g.mean - b.mean) < 0.5;
}

/**
 * The features of one decoded body part. `type` is the declared media type
 * (Content-Type rules, RFC 2912), `charset` defaults to us-ascii for text. For an
 * image, `body` may be just its beginning (the header is all that is read) when
 * `size` gives the whole decoded size.
 */
export async function measurePart(
  type: string,
  params: Readonly<Record<string, string>>,
  body: Buffer,
  opts: { readonly maxPixels: number; readonly size?: number },
): Promise<PartFeatures> {
  const base = { type, size: opts.size ?? body.length };
  if (type.startsWith('text/')) return { ...base, charset: (params.charset ?? 'us-ascii').toLowerCase() };
  if (!type.startsWith('image/')) return base;
  if (!SHARP_INPUT_TYPES.has(type)) return { ...base, unmeasured: [...IMAGE_TAGS] };
  try {
    const { type: _detected, ...m } = await measureImage(body, opts.maxPixels);
    return { ...base, ...m };
  } catch {
    return { ...base, unmeasured: [...IMAGE_TAGS] };
  }
}
