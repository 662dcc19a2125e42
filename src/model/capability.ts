/**
 * What the relay knows of a recipient's capabilities (CONNEG, RFC 4141 / protocols.md
 * A3): the raw RFC 2533 expression and where it came from, or a failed query, or
 * nothing. The parsed FeatureSet is built from `expression` by capabilities/feature-set.
 */
import type { Reply } from './reply.ts';

export type CapabilitySource = 'config' | 'conneg' | 'srv' | 'cache';

export type CapabilityAnswer =
  | { readonly kind: 'known'; readonly expression: string; readonly source: CapabilitySource }
  | { readonly kind: 'query-failed'; readonly reply?: Reply; readonly reason: string; readonly source: 'conneg' | 'srv' }
  | { readonly kind: 'unknown' };

/** Port: capabilities for one recipient address, from whatever sources the caller wired. */
export type CapabilityLookup = (recipient: string) => Promise<CapabilityAnswer>;
