/**
 * Where DRUCOF recipients' capabilities come from, in order (issue 6 §2): the
 * config registry (authoritative, protocols.md A8); the cache of earlier answers;
 * the next hop's CONNEG answer (asked only when the hop advertises CONNEG); the
 * domain's capability servers found by SRV (A3), probed. Recipients are resolved
 * together, so one hop is asked once for all of them (one probe session) and one
 * domain's SRV records are looked up once. The sources are ports (the probe port
 * caches what it learns), so the order is tested without sockets.
 */
import type { CapabilityAnswer } from '../model/capability.ts';
import { reply } from '../model/reply.ts';
import type { SrvTarget } from './srv.ts';

export interface CapabilitySources {
  readonly registry: (recipient: string) => CapabilityAnswer;
  /** Cached answers (known or failed) of the recipients that have one. */
  readonly cached: (recipients: readonly string[]) => Promise<ReadonlyMap<string, CapabilityAnswer>>;
  /** Present when the next hop advertises CONNEG: one probe for these recipients. */
  readonly askHop?: (recipients: readonly string[]) => Promise<ReadonlyMap<string, CapabilityAnswer>>;
  /** Absent when SRV discovery is switched off (`dns.srv: false`). */
  readonly srvTargets?: (domain: string) => Promise<readonly SrvTarget[]>;
  /** One probe of a domain's capability servers for these recipients. */
  readonly probe: (domain: string, targets: readonly SrvTarget[], recipients: readonly string[]) => Promise<ReadonlyMap<string, CapabilityAnswer>>;
}

const domainOf = (address: string): string => address.slice(address.lastIndexOf('@') + 1).toLowerCase();

/** DNS trouble that may clear (a timeout, a failing server): the decision waits for a retry. */
const srvLookupFailed = (domain: string, err: unknown): CapabilityAnswer => ({
  kind: 'query-failed',
  reason: `SRV lookup for ${domain} failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
  source: 'srv',
  reply: reply(451, 4, 3, `SRV lookup for the capability server of ${domain} failed; will retry`),
});

/** An answer for every recipient (duplicates collapse). */
export async function resolveCapabilities(recipients: readonly string[], s: CapabilitySources): Promise<Map<string, CapabilityAnswer>> {
  const out = new Map<string, CapabilityAnswer>();
  const open = (): string[] => [...new Set(recipients)].filter((r) => out.get(r)?.kind !== 'known');

  for (const r of new Set(recipients)) {
    const own = s.registry(r);
    if (own.kind === 'known') out.set(r, own);
  }
  if (open().length === 0) return out;
  for (const [r, a] of await s.cached(open())) out.set(r, a.kind === 'known' ? { ...a, source: 'cache' } : a);
  // A cached failure is as good as asking again within its TTL (A3: failures 5 minutes).
  let ask = open().filter((r) => !out.has(r));

  if (s.askHop && ask.length > 0) {
    for (const [r, a] of await s.askHop(ask)) out.set(r, a);
    ask = open();
  }
  if (s.srvTargets && ask.length > 0) {
    const byDomain = new Map<string, string[]>();
    for (const r of ask) byDomain.set(domainOf(r), [...(byDomain.get(domainOf(r)) ?? []), r]);
    await Promise.all(
      [...byDomain].map(async ([domain, rs]) => {
        let targets: readonly SrvTarget[];
        try {
          targets = await s.srvTargets!(domain);
        } catch (err) {
          for (const r of rs) if (!out.has(r)) out.set(r, srvLookupFailed(domain, err));
          return;
        }
        if (targets.length === 0) return;
        for (const [r, a] of await s.probe(domain, targets, rs)) {
          // A hop's failure stays the answer unless the capability server knows better.
          if (a.kind === 'known' || !out.has(r)) out.set(r, a);
        }
      }),
    );
  }
  for (const r of new Set(recipients)) if (!out.has(r)) out.set(r, { kind: 'unknown' });
  return out;
}
