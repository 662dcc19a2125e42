/**
 * Group recipients by next hop into transactions (Postfix qmgr's per-destination
 * batching), at most `maxPerTransaction` recipients each. Pure.
 */
import type { NextHop } from '../model/delivery.ts';

export interface Routed {
  readonly index: number;
  readonly hop: NextHop;
}

export interface Transaction {
  readonly hop: NextHop;
  readonly indices: readonly number[];
}

export function groupByHop(routed: readonly Routed[], maxPerTransaction: number): Transaction[] {
  const byHop = new Map<string, { hop: NextHop; indices: number[] }>();
  for (const r of routed) {
    const g = byHop.get(r.hop.key) ?? { hop: r.hop, indices: [] };
    g.indices.push(r.index);
    byHop.set(r.hop.key, g);
  }
  const out: Transaction[] = [];
  for (const { hop, indices } of byHop.values()) {
    for (let i = 0; i < indices.length; i += maxPerTransaction) out.push({ hop, indices: indices.slice(i, i + maxPerTransaction) });
  }
  return out;
}
