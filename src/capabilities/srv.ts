/**
 * Capability servers of a domain (DRUCOF outline §2; our choice of prefix,
 * protocols.md A3): SRV records of `_conneg._tcp.<domain>`, in RFC 2782 order
 * (priority, then weight). Such servers need not accept mail; they are probed.
 */
import { promises as dns } from 'node:dns';

export interface SrvTarget {
  readonly host: string;
  readonly port: number;
}

export type SrvResolver = (name: string) => Promise<{ name: string; port: number; priority: number; weight: number }[]>;

export function srvName(domain: string): string {
  return `_conneg._tcp.${domain.toLowerCase().replace(/\.$/, '')}`;
}

/** Targets in order; [] when the domain publishes none (or says "none" with target "."). */
export async function capabilityServers(domain: string, resolve: SrvResolver = (n) => dns.resolveSrv(n)): Promise<SrvTarget[]> {
  try {
    const records = await resolve(srvName(domain));
    return records
      .filter((r) => r.name !== '' && r.name !== '.')
      .sort((a, b) => a.priority - b.priority || b.weight - a.weight || a.name.localeCompare(b.name))
      .map((r) => ({ host: r.name, port: r.port }));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENODATA' || code === 'ENOTFOUND') return [];
    throw err;
  }
}
