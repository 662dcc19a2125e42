/**
 * DRUCOF fail-fast at the inbound (issue 6 item 5, protocols.md A4/A4b/A8): a
 * verdict source that refuses a DRUCOF recipient right after the data — inline,
 * under INLINE-DSN or PRDR; the old way (stored failed, report owed) otherwise —
 * when the worker's section-4 decision is already certain to be `fail`, and with
 * exactly the reply the worker would give, because the verdict is `decide()`'s.
 *
 * Certain means: the capabilities are `known` from the config registry or from
 * the capability cache (a cached failure or a miss is not), the recipient's
 * route is static (a per-domain route or the smarthost: MX routes are not
 * decided here), the hop's EHLO keywords are cached (no older than the cache's
 * `ehloTtl`) and lack DRUCOF, and the conversion plan for those capabilities is
 * impossible. Anything less is "no opinion": the worker decides later, as
 * before. The source never rejects: a lookup or planning error is no opinion.
 *
 * At RCPT the source says "depends on the content" (352 under INLINE-DSN) for a
 * DRUCOF recipient whose refusal is possible; after the data it checks again
 * (the cache may have changed) and plans once per distinct capability
 * expression per message, so recipients sharing capabilities share one plan.
 */
import type { CapabilityCache } from '../capabilities/cache.ts';
import { parseFeatureSet, type FeatureSet } from '../capabilities/feature-set/index.ts';
import { capabilityRegistry } from '../capabilities/registry.ts';
import type { RelayConfig } from '../config/schema.ts';
import type { ConversionEngine } from '../conversion/index.ts';
import type { VerdictSource } from '../inbound/verdicts.ts';
import type { CapabilityAnswer } from '../model/capability.ts';
import type { ConversionPlan } from '../model/plan.ts';
import type { Reply } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import { decide, noPlan } from './decide.ts';
import { routeFor } from './route.ts';

export interface FailFastOptions {
  readonly config: Pick<RelayConfig, 'routes' | 'smarthost' | 'mx' | 'capabilities'>;
  /** Cached CONNEG answers and hop EHLO keywords; without it nothing is ever certain. */
  readonly cache?: Pick<CapabilityCache, 'get' | 'hopKeywords' | 'ehloTtl'>;
  readonly engine: Pick<ConversionEngine, 'plan'>;
  readonly log: Logger;
}

/** What a certain refusal rests on, apart from the plan. */
interface Grounds {
  readonly hop: string;
  readonly hopEhlo: ReadonlySet<string>;
  readonly capability: Extract<CapabilityAnswer, { kind: 'known' }>;
  readonly features: FeatureSet;
}

export function drucofFailFast(opts: FailFastOptions): VerdictSource {
  const { config, cache, engine } = opts;
  const log = opts.log.child({ source: 'drucof-fail-fast' });
  const registry = capabilityRegistry(config.capabilities);
  // One plan per distinct expression per message (the message Buffer is the same for every recipient).
  const plans = new WeakMap<Buffer, Map<string, Promise<ConversionPlan | undefined>>>();

  /** The grounds for a refusal, when every condition but the plan holds; else undefined. */
  async function grounds(address: string): Promise<Grounds | undefined> {
    if (!cache) return undefined;
    const route = routeFor(address, config);
    if (route.kind !== 'hop') return undefined;
    const fromRegistry = registry(address);
    const [cached, keywords] = await Promise.all([
      fromRegistry.kind === 'known' ? undefined : cache.get(address),
      cache.hopKeywords(route.hop.key),
    ]);
    let capability: Grounds['capability'];
    if (fromRegistry.kind === 'known') capability = fromRegistry;
    else if (cached?.kind === 'known') capability = { ...cached, source: 'cache' };
    else return undefined;
    if (!keywords || Date.now() - keywords.at > cache.ehloTtl) return undefined;
    const hopEhlo = new Set([...keywords.keywords].map((k) => k.toUpperCase()));
    if (hopEhlo.has('DRUCOF')) return undefined;
    const parsed = parseFeatureSet(capability.expression);
    if (!parsed.ok) return undefined;
    return { hop: route.hop.key, hopEhlo, capability, features: parsed.features };
  }

  function planFor(message: Buffer, target: FeatureSet): Promise<ConversionPlan | undefined> {
    let perMessage = plans.get(message);
    if (!perMessage) plans.set(message, (perMessage = new Map()));
    let plan = perMessage.get(target.expression);
    if (!plan) {
      plan = engine.plan(message, target, { drucof: true }).catch((err: unknown) => {
        log.warn({ target: target.expression, err: (err as Error)?.message ?? String(err) }, 'fail-fast planning failed: no verdict');
        return undefined;
      });
      perMessage.set(target.expression, plan);
    }
    return plan;
  }

  return {
    name: 'drucof',

    async atRcpt(r) {
      if (!r.drucof) return undefined;
      try {
        return (await grounds(r.address)) ? { kind: 'content' } : undefined;
      } catch (err) {
        log.warn({ rcpt: r.address, err: (err as Error)?.message ?? String(err) }, 'fail-fast lookup failed: no verdict');
        return undefined;
      }
    },

    async afterData(r, m): Promise<Reply | undefined> {
      if (!r.drucof) return undefined;
      try {
        const g = await grounds(r.address);
        if (!g) return undefined;
        const plan = await planFor(m.raw, g.features);
        if (!plan) return undefined;
        const decision = decide<ConversionPlan>({
          drucof: true,
          hopEhlo: g.hopEhlo,
          capability: g.capability,
          plan: plan.possible ? { possible: true, plan } : { possible: false, reply: plan.reply ?? noPlan() },
        });
        if (decision.action !== 'fail') return undefined;
        log.debug({ rcpt: r.address, hop: g.hop, capabilities: g.capability.source, branch: decision.branch, code: decision.reply.enhanced }, 'DRUCOF recipient refused after the data');
        return decision.reply;
      } catch (err) {
        log.warn({ rcpt: r.address, err: (err as Error)?.message ?? String(err) }, 'fail-fast failed: no verdict');
        return undefined;
      }
    },
  };
}
