/**
 * RFC 2533 matching (§5, protocols.md A7), pure. The capability expression is
 * satisfiable together with a body part's measured values when, after fixing
 * those values, some assignment of the remaining tags makes it true:
 *
 * - negations are pushed down to the comparisons and sets expanded (RFC 2533 §5.2);
 * - a comparison on a tag the part has a value for is decided at once;
 * - a tag the part has no value for is free (it "does not constrain it"), but the
 *   constraints one alternative puts on it must be consistent (disjunctive normal
 *   form, merged per tag);
 * - a tag the part lists as `unmeasured` satisfies no comparison at all, negated
 *   or not (an image that cannot be measured must not pass a pix-x limit).
 *
 * Token values, and the values of `type`, `charset`, `color` and `paper-size`,
 * compare case-insensitively (RFC 2531 writes `Binary`, RFC 2534 `binary`).
 */
import type { Alternative, FeatureExpr, FeatureValue, MatchResult, PartFeatures, TagBounds } from '../../model/feature-set.ts';

type Rel = '=' | '!=' | '<=' | '>=' | '<' | '>';

interface Atom {
  readonly tag: string;
  readonly rel: Rel;
  readonly value: FeatureValue;
}

/** Negation normal form: only and/or over atoms and constants. */
type Nnf =
  | { readonly op: 'and' | 'or'; readonly items: readonly Nnf[] }
  | { readonly op: 'atom'; readonly atom: Atom }
  | { readonly op: 'const'; readonly value: boolean; readonly reason?: string };

/** Above this many alternatives the exact check gives way to a safe approximation. */
const MAX_CLAUSES = 4096;

const CASE_INSENSITIVE_TAGS = new Set(['type', 'charset', 'color', 'paper-size']);
const NEGATE: Record<Rel, Rel> = { '=': '!=', '!=': '=', '<=': '>', '>=': '<', '<': '>=', '>': '<=' };

/** The key two values compare by: numbers by value, tokens and case-free tags lower-cased. */
function key(tag: string, v: FeatureValue): string | number {
  switch (v.kind) {
    case 'number':
      return v.value;
    case 'boolean':
      return v.value ? 'true' : 'false';
    case 'token':
      return v.value.toLowerCase();
    case 'string':
      return CASE_INSENSITIVE_TAGS.has(tag) ? v.value.toLowerCase() : v.value;
  }
}

/** RFC 2533 text of one value: numbers as written, tokens bare, strings quoted. */
export function showValue(v: FeatureValue): string {
  switch (v.kind) {
    case 'number':
      return v.text;
    case 'boolean':
      return v.value ? 'TRUE' : 'FALSE';
    case 'token':
      return v.value;
    case 'string':
      return `"${v.value}"`;
  }
}

function showAtom(a: Atom): string {
  const v = showValue(a.value);
  switch (a.rel) {
    case '=':
    case '<=':
    case '>=':
      return `(${a.tag}${a.rel}${v})`;
    case '!=':
      return `(! (${a.tag}=${v}))`;
    case '<':
      return `(! (${a.tag}>=${v}))`;
    case '>':
      return `(! (${a.tag}<=${v}))`;
  }
}

const TOKEN = /^[A-Za-z][A-Za-z0-9-]*$/;

/** A measured value as an RFC 2533 value (strings that look like tokens are tokens). */
export function toFeatureValue(v: string | number): FeatureValue {
  if (typeof v === 'number') return { kind: 'number', value: v, text: String(v) };
  return TOKEN.test(v) ? { kind: 'token', value: v } : { kind: 'string', value: v };
}

function toNnf(e: FeatureExpr, negated: boolean): Nnf {
  switch (e.op) {
    case 'and':
    case 'or': {
      const op = (e.op === 'and') !== negated ? 'and' : 'or';
      return { op, items: e.items.map((i) => toNnf(i, negated)) };
    }
    case 'not':
      return toNnf(e.item, !negated);
    case 'cmp': {
      const rel: Rel = negated ? NEGATE[e.rel] : e.rel;
      return { op: 'atom', atom: { tag: e.tag, rel, value: e.value } };
    }
    case 'set': {
      // tag=[a, lo..hi] ≡ (| (tag=a) (& (tag>=lo) (tag<=hi)))
      const entries: Nnf[] = e.entries.map((entry) => {
        if (entry.kind === 'value') return { op: 'atom', atom: { tag: e.tag, rel: negated ? '!=' : '=', value: entry.value } };
        const lo: Nnf = { op: 'atom', atom: { tag: e.tag, rel: negated ? '<' : '>=', value: entry.lo } };
        const hi: Nnf = { op: 'atom', atom: { tag: e.tag, rel: negated ? '>' : '<=', value: entry.hi } };
        return { op: negated ? 'or' : 'and', items: [lo, hi] };
      });
      return { op: negated ? 'and' : 'or', items: entries };
    }
  }
}

function partValue(part: PartFeatures, tag: string): string | number | undefined {
  const v = (part as unknown as Record<string, unknown>)[tag];
  return typeof v === 'string' || typeof v === 'number' ? v : undefined;
}

/** Decides a comparison against a known value. */
function holds(atom: Atom, actual: FeatureValue): boolean {
  const a = key(atom.tag, actual);
  const want = key(atom.tag, atom.value);
  switch (atom.rel) {
    case '=':
      return a === want;
    case '!=':
      return a !== want;
    default:
      if (typeof a !== 'number' || typeof want !== 'number') return false;
      return atom.rel === '<=' ? a <= want : atom.rel === '>=' ? a >= want : atom.rel === '<' ? a < want : a > want;
  }
}

/** Fixes the part's values: atoms on measured tags become constants, free ones stay. */
function bind(n: Nnf, part: PartFeatures, free: ReadonlySet<string>): Nnf {
  switch (n.op) {
    case 'const':
      return n;
    case 'and':
    case 'or':
      return { op: n.op, items: n.items.map((i) => bind(i, part, free)) };
    case 'atom': {
      const { atom } = n;
      if (free.has(atom.tag)) return n;
      if (part.unmeasured?.includes(atom.tag)) {
        return { op: 'const', value: false, reason: `${atom.tag} could not be measured, so ${showAtom(atom)} cannot hold` };
      }
      const v = partValue(part, atom.tag);
      if (v === undefined) return n; // the tag does not apply to this part: unconstrained
      const actual = toFeatureValue(v);
      if (holds(atom, actual)) return { op: 'const', value: true };
      return { op: 'const', value: false, reason: `${atom.tag} is ${showValue(actual)}, not ${showAtom(atom)}` };
    }
  }
}

interface Bounds {
  eq?: string | number;
  eqValue?: FeatureValue;
  min?: number;
  minStrict: boolean;
  max?: number;
  maxStrict: boolean;
  not: (string | number)[];
  ordered: boolean;
}

/** Merges one alternative's atoms per tag; undefined when they contradict. */
function merge(atoms: readonly Atom[]): Map<string, Bounds> | undefined {
  const byTag = new Map<string, Bounds>();
  for (const a of atoms) {
    let b = byTag.get(a.tag);
    if (!b) byTag.set(a.tag, (b = { minStrict: false, maxStrict: false, not: [], ordered: false }));
    const k = key(a.tag, a.value);
    switch (a.rel) {
      case '=':
        if (b.eq !== undefined && b.eq !== k) return undefined;
        b.eq = k;
        b.eqValue = a.value;
        break;
      case '!=':
        b.not.push(k);
        break;
      case '<=':
      case '<':
        if (typeof k !== 'number') return undefined;
        b.ordered = true;
        if (b.max === undefined || k < b.max || (k === b.max && a.rel === '<')) {
          b.max = k;
          b.maxStrict = a.rel === '<';
        }
        break;
      case '>=':
      case '>':
        if (typeof k !== 'number') return undefined;
        b.ordered = true;
        if (b.min === undefined || k > b.min || (k === b.min && a.rel === '>')) {
          b.min = k;
          b.minStrict = a.rel === '>';
        }
        break;
    }
  }
  for (const b of byTag.values()) {
    if (b.eq !== undefined) {
      if (b.not.includes(b.eq)) return undefined;
      if (b.ordered) {
        if (typeof b.eq !== 'number') return undefined;
        if (b.min !== undefined && (b.eq < b.min || (b.eq === b.min && b.minStrict))) return undefined;
        if (b.max !== undefined && (b.eq > b.max || (b.eq === b.max && b.maxStrict))) return undefined;
      }
    } else if (b.min !== undefined && b.max !== undefined) {
      if (b.min > b.max) return undefined;
      if (b.min === b.max && (b.minStrict || b.maxStrict || b.not.includes(b.min))) return undefined;
    }
  }
  return byTag;
}

type Clauses = Atom[][] | 'too-many';

const signature = (a: Atom): string => `${a.tag}\u0000${a.rel}\u0000${key(a.tag, a.value)}`;

/** Disjunctive normal form over the free atoms, dropping contradictory alternatives. */
function dnf(n: Nnf): Clauses {
  switch (n.op) {
    case 'const':
      return n.value ? [[]] : [];
    case 'atom':
      return [[n.atom]];
    case 'or': {
      const out: Atom[][] = [];
      for (const item of n.items) {
        const c = dnf(item);
        if (c === 'too-many') return c;
        out.push(...c);
        if (out.length > MAX_CLAUSES) return 'too-many';
      }
      return out;
    }
    case 'and': {
      let acc: Atom[][] = [[]];
      for (const item of n.items) {
        const c = dnf(item);
        if (c === 'too-many') return c;
        const next: Atom[][] = [];
        for (const left of acc) {
          const have = new Set(left.map(signature));
          for (const right of c) {
            const fresh = right.filter((a) => !have.has(signature(a)));
            if (fresh.length === 0) {
              next.push(left);
              continue;
            }
            // Only the tags the new atoms touch can become contradictory.
            const touched = new Set(fresh.map((a) => a.tag));
            if (!merge(left.filter((a) => touched.has(a.tag)).concat(fresh))) continue;
            next.push(left.concat(fresh));
            if (next.length > MAX_CLAUSES) return 'too-many';
          }
        }
        acc = next;
        if (acc.length === 0) return acc;
      }
      return acc;
    }
  }
}

/** Approximate evaluation (free atoms count as true) that says which comparisons failed. */
function explain(n: Nnf): { ok: boolean; reasons: string[] } {
  switch (n.op) {
    case 'const':
      return { ok: n.value, reasons: n.value || !n.reason ? [] : [n.reason] };
    case 'atom':
      return { ok: true, reasons: [] };
    case 'and':
    case 'or': {
      const results = n.items.map(explain);
      const ok = n.op === 'and' ? results.every((r) => r.ok) : results.some((r) => r.ok);
      if (ok) return { ok, reasons: [] };
      const reasons = [...new Set(results.filter((r) => !r.ok).flatMap((r) => r.reasons))];
      return { ok, reasons };
    }
  }
}

/** RFC 2533 satisfiability of `expr` with the part's values; reasons when not. */
export function matchExpr(expr: FeatureExpr, part: PartFeatures): MatchResult {
  return alternativesOf(expr, part, []).length > 0 ? { ok: true } : { ok: false, reasons: whyNot(expr, part) };
}

function whyNot(expr: FeatureExpr, part: PartFeatures): string[] {
  const bound = bind(toNnf(expr, false), part, new Set());
  const { reasons } = explain(bound);
  return reasons.length > 0 ? reasons : ['the expression contradicts itself for this part'];
}

function toTagBounds(b: Bounds): TagBounds {
  return {
    ...(b.eq !== undefined && { eq: b.eqValue?.kind === 'number' ? b.eqValue.value : b.eq }),
    ...(b.min !== undefined && { min: b.min, minStrict: b.minStrict }),
    ...(b.max !== undefined && { max: b.max, maxStrict: b.maxStrict }),
    ...(b.not.length > 0 && { not: b.not }),
  };
}

/**
 * The ways `expr` can hold when the `free` tags may change and every other tag
 * keeps the part's value (see FeatureSet.alternatives).
 */
export function alternativesOf(expr: FeatureExpr, part: PartFeatures, free: readonly string[]): readonly Alternative[] {
  const freeSet = new Set(free);
  const bound = bind(toNnf(expr, false), part, freeSet);
  const clauses = dnf(bound);
  if (clauses === 'too-many') {
    // Pathological expression: fall back to "free tags unconstrained" (never wrongly refuses a part).
    return explain(bound).ok ? [{}] : [];
  }
  const seen = new Set<string>();
  const out: Alternative[] = [];
  for (const clause of clauses) {
    const merged = merge(clause);
    if (!merged) continue;
    const alt: Record<string, TagBounds> = {};
    for (const [tag, b] of merged) if (freeSet.has(tag)) alt[tag] = toTagBounds(b);
    const id = JSON.stringify(Object.keys(alt).sort().map((k) => [k, alt[k]]));
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(alt);
  }
  return out;
}
