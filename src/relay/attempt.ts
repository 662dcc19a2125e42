/**
 * One delivery attempt over every recipient of a message that is not yet final
 * (orchestration only: route → group → deliver → record). Each transaction's
 * outcome is written back to Redis as soon as it is known, so a worker killed
 * mid-attempt re-sends only to recipients whose outcome was not yet recorded.
 */
import type { Envelope } from '../model/envelope.ts';
import type { DeliveryResult, NextHop } from '../model/delivery.ts';
import { isFinal, type RecipientState } from '../model/recipient.ts';
import { reply, type Reply } from '../model/reply.ts';
import { status } from '../smtp/status.ts';
import type { Logger } from '../ops/log.ts';
import type { RelayConfig } from '../config/schema.ts';
import { afterAttempt } from './outcome.ts';
import { mxHop, routeFor, type MxRecord } from './route.ts';
import { groupByHop, type Routed } from './group.ts';
import { decide } from './decide.ts';
import type { DecisionBranch } from '../model/decision.ts';

export interface Deliverer {
  deliver(req: {
    readonly hop: NextHop;
    readonly envelope: Envelope;
    readonly recipients: readonly RecipientState[];
    readonly body: Buffer;
    readonly perRecipient?: ReadonlyMap<string, { readonly drucof?: boolean }>;
  }): Promise<DeliveryResult>;
  /** The hop's EHLO keywords (cached); rejects with an error carrying a `reply` when the hop cannot be reached. */
  hopKeywords(hop: NextHop): Promise<ReadonlySet<string>>;
}

/** DNS port: MX records of a domain; rejects with an Error whose `code` is node's DNS code. */
export type MxResolver = (domain: string) => Promise<MxRecord[]>;

export interface AttemptDeps {
  readonly config: Pick<RelayConfig, 'routes' | 'smarthost' | 'mx' | 'delivery'>;
  readonly deliverer: Deliverer;
  readonly resolveMx: MxResolver;
  readonly save: (updates: ReadonlyMap<number, RecipientState>) => Promise<void>;
  /** Adds what an outcome owes (a DSN) to the new state, so both are saved in one write. */
  readonly annotate: (before: RecipientState, after: RecipientState) => RecipientState;
  readonly log: Logger;
}

export interface AttemptInput {
  readonly envelope: Envelope;
  readonly recipients: readonly RecipientState[];
  readonly body: Buffer;
}

/** Runs the attempt; returns every recipient's state afterwards (index-aligned). */
export async function attemptDelivery(msg: AttemptInput, deps: AttemptDeps): Promise<RecipientState[]> {
  const states = [...msg.recipients];
  const now = () => new Date().toISOString();
  const routed: Routed[] = [];
  const unroutable = new Map<number, RecipientState>();
  const mxCache = new Map<string, Promise<NextHop | Reply>>();

  for (const [index, r] of states.entries()) {
    if (isFinal(r)) continue;
    const spec = routeFor(r.address, deps.config);
    if (spec.kind === 'hop') routed.push({ index, hop: spec.hop });
    else if (spec.kind === 'none') {
      unroutable.set(index, deps.annotate(r, afterAttempt(r, status.routingFailed('no next hop configured (set RELAY_SMARTHOST, routes or mx: true)'), { now: now(), dsnPassedOn: false })));
    } else {
      let hop = mxCache.get(spec.domain);
      if (!hop) mxCache.set(spec.domain, (hop = lookupMx(spec.domain, deps.resolveMx)));
      const found = await hop;
      if ('hosts' in found) routed.push({ index, hop: found });
      else unroutable.set(index, deps.annotate(r, afterAttempt(r, found, { now: now(), dsnPassedOn: false })));
    }
  }
  if (unroutable.size > 0) {
    await deps.save(unroutable);
    for (const [i, s] of unroutable) states[i] = s;
  }

  const transactions = groupByHop(routed, deps.config.delivery.maxRecipientsPerTransaction);
  await Promise.all(
    transactions.map(async (t) => {
      const { drucof, refused } = await drucofDecisions(t.hop, t.indices, states, deps);
      if (refused.size > 0) {
        await deps.save(refused);
        for (const [i, s] of refused) states[i] = s;
      }
      const indices = t.indices.filter((i) => !refused.has(i));
      if (indices.length === 0) return;
      const recipients = indices.map((i) => states[i]!);
      const perRecipient = new Map([...drucof.keys()].map((address) => [address, { drucof: true }]));
      const result = await deps.deliverer.deliver({ hop: t.hop, envelope: msg.envelope, recipients, body: msg.body, perRecipient });
      const updates = new Map<number, RecipientState>();
      const at = now();
      for (const i of indices) {
        const r = states[i]!;
        const got = result.perRecipient.get(r.address) ?? reply(451, 4, 4, 'no reply recorded for this recipient');
        let next = afterAttempt(r, got, { now: at, dsnPassedOn: result.dsnPassedOn, ...(result.remoteMta !== undefined && { remoteMta: result.remoteMta }) });
        const branch = drucof.get(r.address);
        if (branch) next = { ...next, decision: branch };
        if (next.status === 'relayed' && result.drucofPassedOn?.has(r.address)) next = { ...next, status: 'relayed-with-drucof' };
        updates.set(i, deps.annotate(r, next));
      }
      await deps.save(updates);
      for (const [i, s] of updates) states[i] = s;
    }),
  );
  return states;
}

/**
 * Section 4 for the DRUCOF recipients of one transaction. This release never
 * converts in the worker (conversion planning per recipient is not wired yet), so
 * the tree is evaluated with no capability information: a hop that advertises
 * DRUCOF gets the request passed on; any other hop means failure with the tree's
 * code (5.3.3). Either way the message is never delivered unusable on the
 * sender's behalf, which is the promise DRUCOF asks for.
 */
async function drucofDecisions(
  hop: NextHop,
  indices: readonly number[],
  states: readonly RecipientState[],
  deps: AttemptDeps,
): Promise<{ drucof: Map<string, DecisionBranch>; refused: Map<number, RecipientState> }> {
  const drucof = new Map<string, DecisionBranch>();
  const refused = new Map<number, RecipientState>();
  const asking = indices.filter((i) => states[i]!.drucof);
  if (asking.length === 0) return { drucof, refused };
  let hopEhlo: ReadonlySet<string>;
  try {
    hopEhlo = await deps.deliverer.hopKeywords(hop);
  } catch (err) {
    const why = (err as { reply?: Reply }).reply ?? status.connectionFailed(`cannot reach ${hop.key}: ${(err as Error).message}`);
    for (const i of asking) refused.set(i, deps.annotate(states[i]!, afterAttempt(states[i]!, why, { now: new Date().toISOString(), dsnPassedOn: false })));
    return { drucof, refused };
  }
  for (const i of asking) {
    const r = states[i]!;
    const d = decide({ drucof: true, hopEhlo, capability: { kind: 'unknown' } });
    if (d.action === 'fail') {
      const failed = { ...afterAttempt(r, d.reply, { now: new Date().toISOString(), dsnPassedOn: false }), decision: d.branch };
      refused.set(i, deps.annotate(r, failed));
    } else if (d.action === 'relay-with-drucof') {
      drucof.set(r.address, d.branch);
    }
  }
  deps.log.info({ hop: hop.key, passedOn: [...drucof.keys()], refused: [...refused.values()].map((r) => r.address) }, 'DRUCOF decisions');
  return { drucof, refused };
}

async function lookupMx(domain: string, resolve: MxResolver): Promise<NextHop | Reply> {
  try {
    return mxHop(domain, await resolve(domain));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENODATA') return mxHop(domain, []);
    if (code === 'ENOTFOUND') return reply(550, 1, 2, `domain ${domain} not found`);
    return reply(451, 4, 3, `DNS lookup for ${domain} failed (${code ?? 'error'})`);
  }
}
