/**
 * Where a DRUCOF recipient's capabilities come from, in order (issue 6 §2):
 * the config registry (authoritative, protocols.md A8); the cache of earlier
 * answers; the next hop's CONNEG answer (asked only when the hop advertises
 * CONNEG); the domain's capability servers found by SRV, probed. Answers from a
 * query are cached through the caller's port (TTL 1 h, failures 5 min). The
 * sources are ports, so the order is tested without sockets.
 */
import type { CapabilityAnswer } from '../model/capability.ts';
import type { SrvTarget } from './srv.ts';

export interface CapabilitySources {
  readonly registry: (recipient: string) => CapabilityAnswer;
  readonly cached: (recipient: string) => Promise<CapabilityAnswer | undefined>;
  readonly remember: (recipient: string, answer: CapabilityAnswer) => Promise<void>;
  /** Present when the next hop advertises CONNEG. */
  readonly askHop?: (recipient: string) => Promise<CapabilityAnswer>;
  readonly srvTargets: (domain: string) => Promise<readonly SrvTarget[]>;
  readonly probe: (targets: readonly SrvTarget[], recipient: string) => Promise<CapabilityAnswer>;
}

export async function resolveCapabilities(recipient: string, s: CapabilitySources): Promise<CapabilityAnswer> {
  const fromRegistry = s.registry(recipient);
  if (fromRegistry.kind === 'known') return fromRegistry;
  const cached = await s.cached(recipient);
  if (cached) return cached.kind === 'known' ? { ...cached, source: 'cache' } : cached;

  let answer: CapabilityAnswer = { kind: 'unknown' };
  if (s.askHop) {
    answer = await s.askHop(recipient);
    if (answer.kind === 'known') return remember(s, recipient, answer);
  }
  const domain = recipient.slice(recipient.lastIndexOf('@') + 1);
  let targets: readonly SrvTarget[] = [];
  try {
    targets = await s.srvTargets(domain);
  } catch (err) {
    if (answer.kind === 'unknown') answer = { kind: 'query-failed', reason: `SRV lookup failed: ${(err as Error).message}`, source: 'srv' };
  }
  if (targets.length > 0) {
    const probed = await s.probe(targets, recipient);
    // A hop's failure stays the answer unless the capability server knows better.
    if (probed.kind === 'known' || answer.kind === 'unknown') answer = probed;
  }
  return answer.kind === 'unknown' ? answer : remember(s, recipient, answer);
}

async function remember(s: CapabilitySources, recipient: string, answer: CapabilityAnswer): Promise<CapabilityAnswer> {
  await s.remember(recipient, answer);
  return answer;
}
