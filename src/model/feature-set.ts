/**
 * FeatureSet — a parsed RFC 2533 feature-set expression (a recipient's
 * capabilities, or an RFC 4141 Content-Convert list) and PartFeatures, the
 * values the relay measures for one body part (protocols.md A7). Types only;
 * parsing and matching live in capabilities/feature-set (pure).
 *
 * Matching is RFC 2533 satisfiability: the part is usable when the expression is
 * satisfiable together with the part's measured values. A tag the part has no
 * value for does not constrain it; a tag listed in `unmeasured` (it applies, but
 * could not be measured, e.g. a corrupt image's pix-x) satisfies no constraint.
 */

/** One RFC 2533 `fvalue`. Numbers keep their source text (`200/100`) for printing. */
export type FeatureValue =
  | { readonly kind: 'boolean'; readonly value: boolean }
  | { readonly kind: 'number'; readonly value: number; readonly text: string }
  | { readonly kind: 'token'; readonly value: string }
  | { readonly kind: 'string'; readonly value: string };

/** One entry of a set `tag=[a,b,lo..hi]` (RFC 2533 §4.1 as fixed by RFC 2738). */
export type SetEntry =
  | { readonly kind: 'value'; readonly value: FeatureValue }
  | { readonly kind: 'range'; readonly lo: FeatureValue; readonly hi: FeatureValue };

export type Relation = '=' | '<=' | '>=';

/** The parse tree of a `filter`. Tags are kept lower-case (RFC 2506 tags ignore case). */
export type FeatureExpr =
  | { readonly op: 'and' | 'or'; readonly items: readonly FeatureExpr[] }
  | { readonly op: 'not'; readonly item: FeatureExpr }
  | { readonly op: 'cmp'; readonly tag: string; readonly rel: Relation; readonly value: FeatureValue }
  | { readonly op: 'set'; readonly tag: string; readonly entries: readonly SetEntry[] };

/** RFC 2534 colour tokens, poorest first. */
export const COLORS = ['binary', 'grey', 'limited', 'mapped', 'full'] as const;
export type Color = (typeof COLORS)[number];

/**
 * What the relay knows of one body part, as feature values (A7). `type` is the
 * media type without parameters, lower-case. Absent fields do not apply to the
 * part (or are unknown and harmless, like an image's dpi); names in `unmeasured`
 * apply but could not be measured.
 */
export interface PartFeatures {
  readonly type: string;
  readonly charset?: string;
  readonly 'pix-x'?: number;
  readonly 'pix-y'?: number;
  /** pix-x × pix-y (a private tag: a pixel budget). */
  readonly pixels?: number;
  readonly dpi?: number;
  readonly color?: Color;
  readonly 'paper-size'?: string;
  /** Bytes of the decoded part (a private tag, A7). */
  readonly size?: number;
  readonly unmeasured?: readonly string[];
}

export type MatchResult = { readonly ok: true } | { readonly ok: false; readonly reasons: readonly string[] };

/**
 * The bounds one alternative (DNF clause) of an expression puts on a tag, for a
 * converter's `reach()`: `eq` (one required value), `oneOf` (values allowed by
 * equality constraints), numeric `min`/`max` (inclusive unless `*Strict`) and
 * values excluded by negations.
 */
export interface TagBounds {
  readonly eq?: string | number;
  readonly min?: number;
  readonly minStrict?: boolean;
  readonly max?: number;
  readonly maxStrict?: boolean;
  readonly not?: readonly (string | number)[];
}

/** One way of satisfying an expression, given the part's fixed values: bounds per free tag. */
export type Alternative = Readonly<Record<string, TagBounds>>;

export interface FeatureSet {
  /** The expression as received (trimmed). */
  readonly expression: string;
  readonly expr: FeatureExpr;
  /** RFC 2533 satisfiability with the part's values; says why not. */
  matches(part: PartFeatures): MatchResult;
  /**
   * The ways the expression can be satisfied when the tags in `free` may take
   * any value and every other tag keeps the part's value: for each consistent
   * alternative, the bounds on each free tag it constrains. Empty: impossible
   * whatever the free tags become.
   */
  alternatives(part: PartFeatures, free: readonly string[]): readonly Alternative[];
}
