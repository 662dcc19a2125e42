/**
 * One delivery attempt over every recipient of a message that is not yet final
 * (orchestration only: route → group → decide and convert (drucof.ts) →
 * deliver each variant → record). A hop may be the final one (Maildir, LMTP):
 * its 2xx makes the recipient `delivered`. Each transaction's
 * outcome is written back to Redis as soon as it is known, so a worker killed
 * mid-attempt re-sends only to recipients whose outcome was not yet recorded.
 */
import type { Envelope } from '../model/envelope.ts';
import { isFinalHop, type DeliveryResult, type NextHop } from '../model/delivery.ts';
import { isFinal, type RecipientState } from '../model/recipient.ts';
import { reply, type Reply } from '../model/reply.ts';
import { status } from '../smtp/status.ts';
import type { Logger } from '../ops/log.ts';
import type { RelayConfig } from '../config/schema.ts';
import { afterAttempt } from './outcome.ts';
import { mxHop, routeFor, type MxRecord } from './route.ts';
import { groupByHop, type Routed } from './group.ts';
import { chooseVariants, MessageVariants, relayedStatus, type DrucofPorts, type TransactionChoice, type Variant } from './drucof.ts';
import type { DrucofTrace } from '../model/recipient.ts';

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
  /** Capabilities, planning and conversion for DRUCOF recipients. */
  readonly drucof: DrucofPorts;
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
  const variants = new MessageVariants(msg.envelope.id, msg.body, deps.drucof, deps.log);
  const record = async (updates: Map<number, RecipientState>) => {
    if (updates.size === 0) return;
    await deps.save(updates);
    for (const [i, s] of updates) states[i] = s;
  };
  await Promise.all(
    transactions.map(async (t) => {
      const choice = await choose(t.hop, t.indices, states, variants, deps);
      const at = now();
      await record(new Map([...choice.unsent].map(([i, why]) => [i, deps.annotate(states[i]!, withTrace(afterAttempt(states[i]!, why, { now: at, dsnPassedOn: false }), choice.traces.get(i)))])));
      await Promise.all(choice.variants.map((v) => send(t.hop, v, choice.traces)));
    }),
  );
  return states;

  /** One transaction: the recipients of one variant to one hop; outcomes written back at once. */
  async function send(hop: NextHop, v: Variant, traces: ReadonlyMap<number, DrucofTrace>): Promise<void> {
    const recipients = v.indices.map((i) => states[i]!);
    const perRecipient = new Map([...v.passOn].map((address) => [address, { drucof: true }]));
    const result = await deps.deliverer.deliver({ hop, envelope: msg.envelope, recipients, body: v.body, perRecipient });
    const updates = new Map<number, RecipientState>();
    const at = now();
    const finalHop = isFinalHop(hop);
    for (const i of v.indices) {
      const r = states[i]!;
      const got = result.perRecipient.get(r.address) ?? reply(451, 4, 4, 'no reply recorded for this recipient');
      let next = afterAttempt(r, got, { now: at, dsnPassedOn: result.dsnPassedOn, finalHop, ...(result.remoteMta !== undefined && { remoteMta: result.remoteMta }) });
      // Delivered (a Maildir, LMTP) stays delivered, converted or not: the trace says what was done.
      if (next.status === 'relayed') next = { ...next, status: relayedStatus(v, r.address, result) };
      updates.set(i, deps.annotate(r, withTrace(next, traces.get(i))));
    }
    await record(updates);
  }
}

const withTrace = (s: RecipientState, trace: DrucofTrace | undefined): RecipientState => (trace ? { ...s, decision: trace } : s);

/**
 * The hop's EHLO keywords, then section 4 for the transaction (drucof.ts). A
 * hop that cannot be reached defers its DRUCOF recipients (nothing can be
 * decided about a hop we cannot read); the others go on to be tried as usual.
 */
async function choose(hop: NextHop, indices: readonly number[], states: readonly RecipientState[], variants: MessageVariants, deps: AttemptDeps): Promise<TransactionChoice> {
  if (!indices.some((i) => states[i]!.drucof)) return chooseVariants({ hop, hopEhlo: new Set(), indices }, states, variants, deps.drucof, deps.log);
  let hopEhlo: ReadonlySet<string>;
  try {
    hopEhlo = await deps.deliverer.hopKeywords(hop);
  } catch (err) {
    const why = (err as { reply?: Reply }).reply ?? status.connectionFailed(`cannot reach ${hop.key}: ${(err as Error).message}`);
    const drucof = indices.filter((i) => states[i]!.drucof);
    const plain = indices.filter((i) => !states[i]!.drucof);
    const others = await chooseVariants({ hop, hopEhlo: new Set(), indices: plain }, states, variants, deps.drucof, deps.log);
    return { ...others, unsent: new Map(drucof.map((i) => [i, why])) };
  }
  return chooseVariants({ hop, hopEhlo, indices }, states, variants, deps.drucof, deps.log);
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
