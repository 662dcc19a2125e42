/**
 * RFC 2533 feature sets: the one entry other stages use (pure). `parseFeatureSet`
 * turns a capability expression (CONNEG answer, config registry, RFC 4141
 * Content-Convert list) into a FeatureSet whose `matches()` is RFC 2533
 * satisfiability (protocols.md A7); `formatFeatures` prints a part's measured
 * values as an expression (RFC 4141 Content-Features / Content-Previous).
 */
import type { Alternative, FeatureExpr, FeatureSet, MatchResult, PartFeatures } from '../../model/feature-set.ts';
import { alternativesOf, matchExpr, showValue, toFeatureValue } from './match.ts';
import { parseExpression } from './parse.ts';

export type { Alternative, FeatureSet, MatchResult, PartFeatures, TagBounds } from '../../model/feature-set.ts';
export { parseExpression } from './parse.ts';

export function parseFeatureSet(expr: string): { ok: true; features: FeatureSet } | { ok: false; error: string; position: number } {
  const parsed = parseExpression(expr);
  if (!parsed.ok) return { ok: false, error: parsed.error, position: parsed.position };
  return { ok: true, features: featureSet(expr.trim(), parsed.expr) };
}

/** A FeatureSet over an already parsed tree. */
export function featureSet(expression: string, expr: FeatureExpr): FeatureSet {
  // The planner asks the same questions many times while searching: remember the answers.
  const memo = new Map<string, readonly Alternative[]>();
  const matched = new Map<string, MatchResult>();
  return {
    expression,
    expr,
    matches: (part) => {
      const key = JSON.stringify(part);
      let r = matched.get(key);
      if (r === undefined) {
        r = matchExpr(expr, part);
        if (matched.size >= MEMO_SIZE) matched.delete(matched.keys().next().value!);
        matched.set(key, r);
      }
      return r;
    },
    alternatives: (part, free) => {
      const key = JSON.stringify([free, part]);
      let alts = memo.get(key);
      if (alts === undefined) {
        alts = alternativesOf(expr, part, free);
        if (memo.size >= MEMO_SIZE) memo.delete(memo.keys().next().value!);
        memo.set(key, alts);
      }
      return alts;
    },
  };
}

const MEMO_SIZE = 512;

/** The set that every part satisfies (no constraint at all). */
export const ANYTHING: FeatureSet = featureSet('(& )', { op: 'and', items: [] });

/** Order in which measured tags are printed. */
const PRINT_ORDER = ['type', 'charset', 'pix-x', 'pix-y', 'dpi', 'color', 'paper-size', 'size'] as const;

/**
 * A part's measured values as one RFC 2533 filter, e.g.
 * `(& (type="image/jpeg") (pix-x=1024) (pix-y=768) (color=full))`. `type` is always
 * a quoted string (RFC 2913); other strings are tokens where the grammar allows.
 */
export function formatFeatures(part: PartFeatures, opts: { readonly size?: boolean } = {}): string {
  const items: string[] = [];
  for (const tag of PRINT_ORDER) {
    if (tag === 'size' && opts.size === false) continue;
    const v = part[tag];
    if (v === undefined) continue;
    items.push(tag === 'type' ? `(type="${v}")` : `(${tag}=${showValue(toFeatureValue(v))})`);
  }
  return items.length === 1 ? items[0]! : `(& ${items.join(' ')})`;
}
