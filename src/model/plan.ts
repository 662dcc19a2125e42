/**
 * ConversionPlan and ConversionRecord — what the planner decided per body part
 * (layout.md §3) and what a conversion did (protocols.md A6). Plain data, JSON-safe,
 * so a plan can ride in a Decision and a record in a RecipientState.
 */
import type { PartFeatures } from './feature-set.ts';
import type { BodyPartMarking } from './marking.ts';
import type { Reply } from './reply.ts';

/** One converter run of a chain: which converter, the features it aims at, the loss it costs. */
export interface ChainStep {
  readonly converter: string;
  readonly from: string;
  readonly to: string;
  /** The features this step was planned to produce (its `reach()`), passed to `convert()`. */
  readonly aim: PartFeatures;
  readonly loss: number;
}

export type PartAction =
  /** Delivered as is. `usable: false` only for a non-critical part that cannot be made usable (A5 critical=no). */
  | { readonly kind: 'keep'; readonly usable: boolean; readonly reasons?: readonly string[] }
  | { readonly kind: 'convert'; readonly chain: readonly string[]; readonly steps: readonly ChainStep[]; readonly loss: number; readonly features: PartFeatures }
  /** Dropped and replaced by a short text/plain note (only where omission is permitted). */
  | { readonly kind: 'omit'; readonly note: string; readonly reasons: readonly string[] }
  /** 5.6.2 prohibited / 5.6.3 no conversion / 5.6.5 conversion failed. */
  | { readonly kind: 'impossible'; readonly reply: Reply; readonly reasons: readonly string[] };

export interface PartPlan {
  /** IMAP-style part number: "1", "2.1" … */
  readonly path: string;
  /** The part's features as measured before conversion. */
  readonly features: PartFeatures;
  readonly marking: BodyPartMarking;
  readonly action: PartAction;
}

export interface ConversionPlan {
  /** The capability expression planned for. */
  readonly target: string;
  readonly parts: readonly PartPlan[];
  /** Sum of the losses of converted parts (omitted parts count OMIT_LOSS each). */
  readonly loss: number;
  /** Every critical part is keep/convert (and nothing failed). */
  readonly possible: boolean;
  /** Why not possible: the first failing critical part's reply. */
  readonly reply?: Reply;
}

/** What one converted or omitted part went through, for the records (A6) and the recipient's state. */
export interface PartRecord {
  readonly path: string;
  readonly before: PartFeatures;
  /** Absent when the part was omitted. */
  readonly after?: PartFeatures;
  readonly chain: readonly string[];
  readonly loss: number;
  readonly omitted?: boolean;
}

export interface ConversionRecord {
  /** The converting host (RFC 4141 `By`). */
  readonly host: string;
  /** RFC 5322 date-time of the conversion. */
  readonly date: string;
  readonly parts: readonly PartRecord[];
  readonly loss: number;
}

/** The loss an omitted part counts for: all of it. */
export const OMIT_LOSS = 100;

/** One part of a plan as the records keep it: what the planner chose for it and why. */
export interface PartSummary {
  readonly path: string;
  /** The part's media type before conversion. */
  readonly type: string;
  readonly action: PartAction['kind'];
  /** keep: whether the part is usable as it is. */
  readonly usable?: boolean;
  readonly chain?: readonly string[];
  readonly loss?: number;
  /** Why the part was omitted, kept unusable, or could not be made usable. */
  readonly reasons?: readonly string[];
}

/** A ConversionPlan without the measured features (small enough for every recipient's state). */
export interface PlanSummary {
  readonly target: string;
  readonly possible: boolean;
  readonly loss: number;
  readonly reply?: Reply;
  readonly parts: readonly PartSummary[];
}
