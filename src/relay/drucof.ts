/**
 * Section 4 for the recipients of one transaction, and the variants it splits
 * into (issue 6 §1–3). For each DRUCOF recipient: its capabilities (registry,
 * cache, the hop's CONNEG answer, SRV), the conversion plan for them, then
 * `decide()`; the recipients that are sent are grouped by the body they get:
 * the message as written (recipients without DRUCOF, and those whose request is
 * passed on) or one converted variant per distinct conversion. Plans are made
 * once per capability expression and conversions once per variant for the whole
 * message (`MessageVariants`), however many recipients and hops share them.
 */
import type { CapabilityAnswer } from '../model/capability.ts';
import type { DeliveryResult, NextHop } from '../model/delivery.ts';
import type { FeatureSet } from '../model/feature-set.ts';
import type { ConversionPlan, ConversionRecord, PlanSummary } from '../model/plan.ts';
import { OMIT_LOSS } from '../model/plan.ts';
import type { DrucofTrace, RecipientState } from '../model/recipient.ts';
import type { Decision, DecisionBranch } from '../model/decision.ts';
import { replyText, type Reply } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import type { Metrics } from '../ops/metrics.ts';
import { parseFeatureSet } from '../capabilities/feature-set/index.ts';
import type { RunResult } from '../conversion/run.ts';
import { decide, noPlan, type PlanVerdict } from './decide.ts';

/** The I/O the decisions need, wired by the worker (capabilities/resolve.ts, the conversion engine). */
export interface DrucofPorts {
  /** Capabilities of these DRUCOF recipients, who go through `hop` (which advertised `hopEhlo`). */
  readonly capabilities: (hop: NextHop, hopEhlo: ReadonlySet<string>, recipients: readonly string[]) => Promise<ReadonlyMap<string, CapabilityAnswer>>;
  readonly plan: (message: Buffer, target: FeatureSet) => Promise<ConversionPlan>;
  readonly convert: (message: Buffer, plan: ConversionPlan) => Promise<RunResult>;
  /** Counts decisions (per recipient) and conversions (per part, once per conversion run); default: nothing. */
  readonly metrics?: Pick<Metrics, 'decision' | 'conversion' | 'conversionFailed'>;
  /**
   * Keeps a transaction's decisions for the dashboard (cli/start.ts: a capped Redis
   * list, so every worker's decisions show wherever the dashboard runs). Not
   * awaited; a failure is the port's to report and never touches the delivery.
   */
  readonly noteDecisions?: (notes: readonly DecisionNote[]) => Promise<void>;
}

/** One DRUCOF decision as the dashboard shows it (JSON; every string in it may come from mail or a next hop). */
export interface DecisionNote {
  /** ISO 8601. */
  readonly at: string;
  readonly queueId: string;
  readonly recipient: string;
  readonly branch: DecisionBranch;
  readonly action: Decision['action'];
  /** The next hop's key. */
  readonly hop: string;
  readonly hopExtensions: readonly string[];
  /** The capabilities used: kind, source, expression or why none. */
  readonly capabilities: Readonly<Record<string, string>>;
  /** What the recipient is sent: `original`, `original, DRUCOF passed on`, or the converted parts (`2 sharp/png-to-jpeg`). */
  readonly variant?: string;
  /** The conversion's total loss, when converted. */
  readonly loss?: number;
  /** The reply the recipient is failed or deferred with, when not sent. */
  readonly result?: string;
}

/** The message as the sender wrote it. */
export const ORIGINAL = 'original';

interface Converted {
  readonly key: string;
  readonly body: Buffer;
  readonly record?: ConversionRecord;
}

/**
 * What one message turns into during one attempt: a plan per capability
 * expression, a converted body per variant. Shared by every transaction of the
 * attempt, so two hops needing the same conversion convert once.
 */
export class MessageVariants {
  private readonly plans = new Map<string, Promise<ConversionPlan | string>>();
  private readonly converted = new Map<string, Promise<Converted | Reply>>();

  constructor(
    readonly queueId: string,
    readonly body: Buffer,
    private readonly ports: DrucofPorts,
    private readonly log: Logger,
  ) {}

  /** The plan for an expression, or why the expression cannot be used. */
  plan(expression: string): Promise<ConversionPlan | string> {
    let p = this.plans.get(expression);
    if (!p) {
      const parsed = parseFeatureSet(expression);
      p = parsed.ok ? this.ports.plan(this.body, parsed.features) : Promise.resolve(`unparsable capability expression: ${parsed.error}`);
      this.plans.set(expression, p);
    }
    return p;
  }

  /** The body for a possible plan: the original when nothing changes, else the converted variant (or the converter's failure). */
  variant(plan: ConversionPlan): Promise<Converted | Reply> {
    const key = variantKey(plan);
    if (key === ORIGINAL) return Promise.resolve({ key, body: this.body });
    let v = this.converted.get(key);
    if (!v) {
      const started = Date.now();
      v = this.ports.convert(this.body, plan).then((r): Converted | Reply => {
        const ms = Date.now() - started;
        if (!r.ok) {
          this.ports.metrics?.conversionFailed();
          this.log.warn({ queueId: this.queueId, variant: key, ms, result: r.reply }, 'conversion failed');
          return r.reply;
        }
        for (const p of r.record.parts) this.ports.metrics?.conversion(p.omitted ? 'omit' : p.chain.join('>'), p.loss);
        this.log.info(
          { queueId: this.queueId, variant: key, ms, loss: r.record.loss, bytes: r.message.length, parts: r.record.parts.map((p) => `${p.path} ${p.omitted ? 'omitted' : p.chain.join(' > ')}`) },
          'message converted',
        );
        return { key, body: r.message, record: r.record };
      });
      this.converted.set(key, v);
    }
    return v;
  }
}

/**
 * A variant's identity: what is done to which part (chains with the features
 * aimed at, omissions). Two recipients with different capability expressions
 * that lead to the same conversions share a variant.
 */
export function variantKey(plan: ConversionPlan): string {
  const changes = plan.parts.flatMap((p) => {
    if (p.action.kind === 'convert') return [`${p.path}:${p.action.steps.map((s) => `${s.converter}${JSON.stringify(s.aim)}`).join('>')}`];
    if (p.action.kind === 'omit') return [`${p.path}:omit`];
    return [];
  });
  return changes.length === 0 ? ORIGINAL : changes.join(';');
}

export function summarizePlan(plan: ConversionPlan): PlanSummary {
  return {
    target: plan.target,
    possible: plan.possible,
    loss: plan.loss,
    ...(plan.reply && { reply: plan.reply }),
    parts: plan.parts.map((p) => {
      const a = p.action;
      const base = { path: p.path, type: p.features.type, action: a.kind };
      if (a.kind === 'keep') return { ...base, usable: a.usable, ...(a.reasons && a.reasons.length > 0 && { reasons: a.reasons }) };
      if (a.kind === 'convert') return { ...base, chain: a.chain, loss: a.loss };
      if (a.kind === 'omit') return { ...base, loss: OMIT_LOSS, reasons: a.reasons };
      return { ...base, reasons: a.reasons };
    }),
  };
}

/** Recipients sent one body in one transaction. */
export interface Variant {
  readonly key: string;
  readonly body: Buffer;
  readonly conversion?: ConversionRecord;
  readonly indices: number[];
  /** Addresses whose DRUCOF request is passed on. */
  readonly passOn: Set<string>;
}

export interface TransactionChoice {
  /** Recipients not sent: failed by the tree, or deferred while a cause may clear. */
  readonly unsent: Map<number, Reply>;
  readonly variants: Variant[];
  /** The decision of every DRUCOF recipient. */
  readonly traces: Map<number, DrucofTrace>;
}

const isTransient = (a: CapabilityAnswer): a is Extract<CapabilityAnswer, { kind: 'query-failed' }> & { reply: Reply } =>
  a.kind === 'query-failed' && a.reply !== undefined && a.reply.code >= 400 && a.reply.code < 500;

/**
 * Section 4 for the recipients `indices` of one transaction to `hop`. Recipients
 * without DRUCOF go with the original; the others as their decision says.
 */
export async function chooseVariants(
  t: { readonly hop: NextHop; readonly hopEhlo: ReadonlySet<string>; readonly indices: readonly number[] },
  states: readonly RecipientState[],
  message: MessageVariants,
  ports: Pick<DrucofPorts, 'capabilities' | 'metrics' | 'noteDecisions'>,
  log: Logger,
): Promise<TransactionChoice> {
  const { hop, hopEhlo } = t;
  const unsent = new Map<number, Reply>();
  const traces = new Map<number, DrucofTrace>();
  const variants = new Map<string, Variant>();
  const send = (key: string, body: Buffer, index: number, opts: { passOn?: string; conversion?: ConversionRecord } = {}) => {
    let v = variants.get(key);
    if (!v) variants.set(key, (v = { key, body, indices: [], passOn: new Set(), ...(opts.conversion && { conversion: opts.conversion }) }));
    v.indices.push(index);
    if (opts.passOn) v.passOn.add(opts.passOn);
  };

  const asking = t.indices.filter((i) => states[i]!.drucof);
  for (const i of t.indices) if (!states[i]!.drucof) send(ORIGINAL, message.body, i);
  if (asking.length === 0) return { unsent, variants: [...variants.values()], traces };

  const answers = await ports.capabilities(hop, hopEhlo, asking.map((i) => states[i]!.address));
  const hopExtensions = (['CONNEG', 'DRUCOF'] as const).filter((k) => hopEhlo.has(k));
  const at = new Date().toISOString();
  const notes: DecisionNote[] = [];

  await Promise.all(
    asking.map(async (i) => {
      const r = states[i]!;
      let capability: CapabilityAnswer = answers.get(r.address) ?? { kind: 'unknown' };
      let plan: ConversionPlan | undefined;
      let verdict: PlanVerdict<ConversionPlan> | undefined;
      if (capability.kind === 'known') {
        const planned = await message.plan(capability.expression);
        if (typeof planned === 'string') capability = { kind: 'query-failed', reason: planned, source: capability.source === 'srv' ? 'srv' : 'conneg' };
        else {
          plan = planned;
          verdict = planned.possible ? { possible: true, plan: planned } : { possible: false, reply: planned.reply ?? noPlan() };
        }
      }
      let d = decide({ drucof: true, hopEhlo, capability, ...(verdict && { plan: verdict }) });
      let converted: Converted | undefined;
      if (d.action === 'convert-and-relay') {
        const v = await message.variant(d.plan);
        if ('body' in v) converted = v;
        // The converter failed (5.6.5): the relay cannot make it usable after all.
        else d = decide({ drucof: true, hopEhlo, capability, plan: { possible: false, reply: v } });
      }
      const trace: DrucofTrace = {
        branch: d.branch,
        hop: hop.key,
        hopExtensions,
        capabilities: capability,
        ...(plan && { plan: summarizePlan(plan) }),
        ...(converted?.record && { conversion: converted.record }),
        at,
      };
      traces.set(i, trace);
      if (d.action === 'fail') unsent.set(i, isTransient(capability) ? capability.reply : d.reply);
      else if (d.action === 'relay-with-drucof') send(ORIGINAL, message.body, i, { passOn: r.address });
      else if (converted) send(converted.key, converted.body, i, converted.record ? { conversion: converted.record } : {});
      ports.metrics?.decision(d.branch);
      const result = unsent.get(i);
      notes.push({
        at,
        queueId: message.queueId,
        recipient: r.address,
        branch: d.branch,
        action: d.action,
        hop: hop.key,
        hopExtensions,
        capabilities: describeAnswer(capability),
        ...(result
          ? { result: replyText(result) }
          : d.action === 'relay-with-drucof'
            ? { variant: `${ORIGINAL}, DRUCOF passed on` }
            : converted?.record
              ? { variant: describeConversion(converted.record), loss: converted.record.loss }
              : { variant: ORIGINAL }),
      });
      log.info(
        {
          queueId: message.queueId,
          rcpt: r.address,
          hop: hop.key,
          hopExtensions,
          branch: d.branch,
          capabilities: describeAnswer(capability),
          ...(plan && { plan: { possible: plan.possible, loss: plan.loss } }),
          ...(d.action === 'fail' ? { result: unsent.get(i) } : { variant: converted?.key ?? ORIGINAL }),
        },
        'DRUCOF decision',
      );
    }),
  );
  if (notes.length > 0 && ports.noteDecisions) {
    try {
      void ports.noteDecisions(notes).catch(() => {});
    } catch {
      // The dashboard's record is never worth a delivery.
    }
  }
  return { unsent, variants: [...variants.values()], traces };
}

/** `2 sharp/png-to-jpeg; 3 omitted`: what a conversion did, per part. */
function describeConversion(record: ConversionRecord): string {
  return record.parts.map((p) => `${p.path} ${p.omitted ? 'omitted' : p.chain.join(' > ')}`).join('; ');
}

function describeAnswer(a: CapabilityAnswer): Record<string, string> {
  if (a.kind === 'known') return { kind: a.kind, source: a.source, expression: a.expression };
  if (a.kind === 'query-failed') return { kind: a.kind, source: a.source, reason: a.reason };
  return { kind: a.kind };
}

/** The status a recipient sent in `v` ends with, once the hop accepted it. */
export function relayedStatus(v: Variant, address: string, result: Pick<DeliveryResult, 'drucofPassedOn'>): RecipientState['status'] {
  if (v.passOn.has(address) && result.drucofPassedOn?.has(address)) return 'relayed-with-drucof';
  if (v.conversion) return 'converted-and-relayed';
  return 'relayed';
}
