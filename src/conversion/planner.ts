/**
 * The planner (pure): for each body part and a target FeatureSet, keep it, convert
 * it by the least lossy chain, omit it, or say why that is impossible
 * (architecture.md "Converters", layout.md §4, protocols.md A5/A8, section 5).
 *
 * The chain search is Dijkstra over part states (the features a part would have),
 * converters being the edges; a step's weight is its loss (`reach().loss` or the
 * declared `loss`). Keys compare by total loss, then fewer hops, then fewer user
 * converters, then converter names — so a user plug-in wins only by strictly
 * lower loss. A converted form must satisfy the target and any RFC 4141
 * Content-Convert list; a prohibited part never enters the search; a
 * `Conversion-With-Loss: Prohibited` message admits loss-0 steps only.
 * `size` is unknown after a conversion (it is checked on the real output by run.ts).
 */
import { parseFeatureSet } from '../capabilities/feature-set/index.ts';
import type { FeatureSet, PartFeatures } from '../model/feature-set.ts';
import type { BodyPartMarking } from '../model/marking.ts';
import { OMIT_LOSS, type ChainStep, type ConversionPlan, type PartAction, type PartPlan } from '../model/plan.ts';
import { reply, type Reply } from '../model/reply.ts';
import type { Converter, Reach } from './api.ts';

/** A converter as the planner sees it: the converter and where it came from. */
export interface PlannerConverter {
  readonly converter: Converter;
  readonly origin: 'builtin' | 'user';
}

export interface PlannerPart {
  readonly path: string;
  readonly features: PartFeatures;
  readonly marking: BodyPartMarking;
  /** File name, if any, for the omission note. */
  readonly filename?: string;
}

export interface PlannerOptions {
  /** Longest chain considered (default 4). */
  readonly maxHops?: number;
  /** States explored per part before giving up (default 2000). */
  readonly maxStates?: number;
}

export const conversionProhibited = (text: string): Reply => reply(554, 6, 2, text);
export const conversionUnsupported = (text: string): Reply => reply(554, 6, 3, text);
export const conversionFailed = (text: string): Reply => reply(554, 6, 5, text);

interface Node {
  readonly features: PartFeatures;
  readonly loss: number;
  readonly steps: readonly ChainStep[];
  readonly users: number;
  readonly names: string;
}

/** Total order of the search: loss, hops, user converters, names. */
function before(a: Node, b: Node): boolean {
  if (a.loss !== b.loss) return a.loss < b.loss;
  if (a.steps.length !== b.steps.length) return a.steps.length < b.steps.length;
  if (a.users !== b.users) return a.users < b.users;
  return a.names < b.names;
}

/** Canonical key of a state (features without `size`, which conversions make unknown). */
function stateKey(f: PartFeatures): string {
  const entries = Object.entries(f).filter(([k, v]) => k !== 'size' && v !== undefined);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify(entries);
}

/** Features after a step whose converter gives no `reach`: the same, in the new type. */
function defaultReach(input: PartFeatures, to: string): Reach {
  const { size: _size, ...rest } = input;
  return { features: { ...rest, type: to } };
}

function reaches(c: Converter, input: PartFeatures, target: FeatureSet): readonly Reach[] {
  if (!c.reach) return [defaultReach(input, c.to)];
  let r: Reach | readonly Reach[] | undefined;
  try {
    r = c.reach(input, target);
  } catch {
    return []; // a plug-in's reach that throws offers nothing
  }
  if (r === undefined) return [];
  const list = Array.isArray(r) ? (r as readonly Reach[]) : [r as Reach];
  return list.map((x) => {
    const { size: _size, ...rest } = x.features;
    return { ...x, features: { ...rest, type: rest.type ?? c.to } };
  });
}

/** Round away float noise so equal chains compare equal. */
const round = (n: number): number => Math.round(n * 1e6) / 1e6;

/**
 * The least lossy chain from `start` to a state that `accepts`, or undefined.
 * Pure; bounded by hops and explored states.
 */
export function cheapestChain(
  start: PartFeatures,
  accepts: (f: PartFeatures) => boolean,
  target: FeatureSet,
  converters: readonly PlannerConverter[],
  opts: PlannerOptions & { readonly lossless?: boolean } = {},
): Node | undefined {
  const maxHops = opts.maxHops ?? 4;
  const maxStates = opts.maxStates ?? 2000;
  const byType = new Map<string, PlannerConverter[]>();
  for (const pc of converters) {
    const list = byType.get(pc.converter.from) ?? [];
    list.push(pc);
    byType.set(pc.converter.from, list);
  }
  const settled = new Set<string>();
  const best = new Map<string, Node>();
  const frontier: Node[] = [{ features: start, loss: 0, steps: [], users: 0, names: '' }];
  best.set(stateKey(start), frontier[0]!);
  while (frontier.length > 0 && settled.size < maxStates) {
    // Linear extraction: frontiers stay small (tens of states).
    let i = 0;
    for (let j = 1; j < frontier.length; j++) if (before(frontier[j]!, frontier[i]!)) i = j;
    const node = frontier.splice(i, 1)[0]!;
    const key = stateKey(node.features);
    if (settled.has(key)) continue;
    settled.add(key);
    if (node.steps.length > 0 && accepts(node.features)) return node;
    if (node.steps.length >= maxHops) continue;
    for (const pc of byType.get(node.features.type) ?? []) {
      const c = pc.converter;
      for (const r of reaches(c, node.features, target)) {
        const loss = r.loss ?? c.loss;
        if (!Number.isFinite(loss) || loss < 0) continue;
        if (opts.lossless && Math.min(loss, r.minLoss ?? loss) > 0) continue;
        const step: ChainStep = { converter: c.name, from: node.features.type, to: r.features.type, aim: r.features, loss: round(loss) };
        const next: Node = {
          features: r.features,
          loss: round(node.loss + loss),
          steps: [...node.steps, step],
          users: node.users + (pc.origin === 'user' ? 1 : 0),
          names: node.names ? `${node.names}\u0000${c.name}` : c.name,
        };
        const nk = stateKey(next.features);
        if (settled.has(nk)) continue;
        const known = best.get(nk);
        if (known && !before(next, known)) continue;
        best.set(nk, next);
        frontier.push(next);
      }
    }
  }
  return undefined;
}

function describe(part: PlannerPart): string {
  return `part ${part.path} (${part.features.type}${part.filename ? `, "${part.filename}"` : ''})`;
}

/** The text/plain note an omitted part is replaced by. */
export function omissionNote(part: PlannerPart, reasons: readonly string[]): string {
  const size = part.features.size !== undefined ? `, ${part.features.size} bytes` : '';
  return (
    `[A ${part.features.type} part${part.filename ? ` "${part.filename}"` : ''}${size} was removed here by the relay:\r\n` +
    ` the recipient cannot use it, no conversion could make it usable, and the sender permitted omitting it.\r\n` +
    (reasons.length > 0 ? ` (${reasons.join('; ')})]\r\n` : ']\r\n')
  );
}

/** Plans one part. */
export function planPart(part: PlannerPart, target: FeatureSet, converters: readonly PlannerConverter[], opts: PlannerOptions = {}): PartAction {
  const fit = target.matches(part.features);
  if (fit.ok) return { kind: 'keep', usable: true };
  const reasons = fit.reasons;
  const { marking } = part;
  const unusable = (r: Reply, why: readonly string[]): PartAction =>
    marking.critical ? { kind: 'impossible', reply: r, reasons: why } : { kind: 'keep', usable: false, reasons: why };

  if (marking.conversion === 'prohibited') {
    const why = marking.source === 'rfc2156' ? 'the message forbids conversion (Conversion: Prohibited)' : 'conversion of this part is prohibited';
    return unusable(conversionProhibited(`${describe(part)} cannot be used by the recipient and ${why}`), reasons);
  }

  let forms: FeatureSet | undefined;
  if (marking.allowedForms !== undefined) {
    const parsed = parseFeatureSet(marking.allowedForms);
    if (!parsed.ok) return unusable(conversionProhibited(`${describe(part)}: its Content-Convert list cannot be read`), reasons);
    forms = parsed.features;
  }
  const accepts = (f: PartFeatures): boolean => target.matches(f).ok && (!forms || forms.matches(f).ok);
  const found = cheapestChain(part.features, accepts, target, converters, { ...opts, lossless: marking.lossless === true });
  if (found) {
    return { kind: 'convert', chain: found.steps.map((s) => s.converter), steps: found.steps, loss: found.loss, features: found.features };
  }

  let r: Reply;
  if (marking.lossless && cheapestChain(part.features, accepts, target, converters, opts)) {
    r = conversionProhibited(`${describe(part)} needs a conversion with loss, and the message forbids it (Conversion-With-Loss: Prohibited)`);
  } else if (forms && cheapestChain(part.features, (f) => target.matches(f).ok, target, converters, opts)) {
    r = conversionProhibited(`${describe(part)} can only be converted into forms its Content-Convert list does not allow`);
  } else if (part.features.unmeasured && part.features.unmeasured.length > 0) {
    // A corrupt image, or data that is not what its Content-Type or transfer encoding says: say so.
    r = conversionUnsupported(
      `no conversion makes ${describe(part)} usable by the recipient: its data cannot be read as ${part.features.type} (${part.features.unmeasured.join(', ')} unknown)`,
    );
  } else {
    r = conversionUnsupported(`no conversion makes ${describe(part)} usable by the recipient`);
  }
  if (marking.conversion === 'omission-permitted') {
    // Dropping is allowed; for a critical part it still makes the whole plan impossible.
    return { kind: 'omit', note: omissionNote(part, reasons), reasons };
  }
  return unusable(r, reasons);
}

/**
 * Plans a whole message. Possible only if every critical part is kept (usable) or
 * converted; the reply is then the first failing critical part's.
 */
export function planMessage(parts: readonly PlannerPart[], target: FeatureSet, converters: readonly PlannerConverter[], opts: PlannerOptions = {}): ConversionPlan {
  const planned: PartPlan[] = [];
  let loss = 0;
  let failure: Reply | undefined;
  for (const part of parts) {
    const action = planPart(part, target, converters, opts);
    planned.push({ path: part.path, features: part.features, marking: part.marking, action });
    switch (action.kind) {
      case 'keep':
        if (!action.usable && part.marking.critical) failure ??= conversionUnsupported(`no conversion makes ${describe(part)} usable`);
        break;
      case 'convert':
        loss += action.loss;
        break;
      case 'omit':
        loss += OMIT_LOSS;
        if (part.marking.critical) {
          failure ??= conversionUnsupported(`${describe(part)} is critical and no conversion makes it usable (omission is permitted, but the part is marked critical)`);
        }
        break;
      case 'impossible':
        if (part.marking.critical) failure ??= action.reply;
        break;
      default: {
        const _exhaustive: never = action;
        throw new Error(`unknown action ${String(_exhaustive)}`);
      }
    }
  }
  return { target: target.expression, parts: planned, loss: round(loss), possible: failure === undefined, ...(failure && { reply: failure }) };
}
