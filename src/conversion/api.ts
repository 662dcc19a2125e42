/**
 * The public converter interface (layout.md §4; the API a plug-in is written
 * against). A converter reads one media type and writes one, declares a loss
 * score and, optionally, which feature values it can reach for a target; the
 * planner chains converters by least loss. Built-ins and user plug-ins use this
 * same interface and load through the same validator (registry.ts).
 *
 * Loss scale (points, additive along a chain; 0 = lossless): image re-encodings
 * count the PSNR shortfall below 60 dB measured in libraries.md §4 (JPEG q80 ≈ 28
 * dB → 32, GIF ≈ 35 dB → 25); an omitted part counts 100 (all of it). Converters
 * of other kinds pick a score on the same scale and document why.
 */
import type { FeatureSet, PartFeatures } from '../model/feature-set.ts';

export type { FeatureSet, PartFeatures, Alternative, TagBounds, Color } from '../model/feature-set.ts';

/** What a converter would produce when aiming at a target, and what that costs. */
export interface Reach {
  /** The features of the output (the planner checks them against the target). */
  readonly features: PartFeatures;
  /** Loss of this step if it differs from the converter's declared `loss`. */
  readonly loss?: number;
  /**
   * The least the step can lose, when the real loss is only known once converted
   * (e.g. characters that may not map). A message that forbids lossy conversion
   * admits the step when this is 0; the measured loss (`PartOutput.loss`) decides.
   */
  readonly minLoss?: number;
}

export interface Converter {
  /** Unique, e.g. "sharp/jpeg-to-png". Plug-ins should prefix their package name. */
  readonly name: string;
  /** Media type read, lower-case, no parameters: "image/jpeg". */
  readonly from: string;
  /** Media type written: "image/png". */
  readonly to: string;
  /** 0 = lossless; higher = more is lost (scale above). */
  readonly loss: number;
  /** One line for `drucof-relay converters`. */
  readonly description?: string;
  /**
   * What this converter would produce for `input` when aiming at `target`, or
   * undefined if it cannot get closer (e.g. resize: already within pix-x). Pure
   * and cheap: called many times while planning. Several results = several
   * choices (e.g. grey or binary). Without `reach`, the output is assumed to be
   * the input's features with `type` = `to` (and `size` unknown).
   */
  reach?(input: PartFeatures, target: FeatureSet): Reach | readonly Reach[] | undefined;
  /** Converts one decoded body. Throwing, or not finishing before `ctx.signal` aborts, fails the part (5.6.5). */
  convert(input: PartInput, ctx: ConvertContext): Promise<PartOutput>;
}

export interface PartInput {
  /** Decoded body (transfer encoding removed). */
  readonly body: Buffer;
  /** Features measured (or, mid-chain, produced) for `body`. */
  readonly features: PartFeatures;
  /** The features this step was planned to reach (the chosen `reach()` result). */
  readonly aim: PartFeatures;
  /** Content-Type parameters of the part (charset, name, format …), names lower-case. */
  readonly params: Readonly<Record<string, string>>;
}

export interface PartOutput {
  readonly body: Buffer;
  /** Media type written (normally the converter's `to`). */
  readonly contentType: string;
  /** Content-Type parameters to set (e.g. charset); others are dropped when the type changes. */
  readonly params?: Readonly<Record<string, string>>;
  /** Features of `body` as produced. */
  readonly features: PartFeatures;
  /** Loss actually incurred, when it can be measured (e.g. characters that did not map). */
  readonly loss?: number;
}

/** The minimum logger a converter gets (pino's shape). */
export interface ConverterLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface ConvertContext {
  /** Aborted when the time limit (config conversion.timeout) runs out. */
  readonly signal: AbortSignal;
  readonly limits: { readonly maxPixels: number; readonly maxOutputBytes: number };
  readonly log: ConverterLogger;
}

/** A plug-in module's default export. */
export interface ConverterModule {
  readonly converters: readonly Converter[];
}

export function defineConverters(...converters: Converter[]): ConverterModule {
  return { converters };
}
