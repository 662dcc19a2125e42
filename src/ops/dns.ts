/**
 * The relay's DNS: one `node:dns` resolver built from `config.dns`, asking the
 * configured servers (or the system's, from /etc/resolv.conf) with the
 * configured per-try time-out, two tries per server. It answers the
 * look-ups the relay makes: MX (next hops), SRV (`_conneg._tcp` capability
 * servers) and the addresses of the capability servers found. Errors are node's own, `code` included (ENODATA, ENOTFOUND,
 * ETIMEOUT, ESERVFAIL, ECONNREFUSED, …), because callers branch on it.
 */
import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import type { RelayConfig } from '../config/schema.ts';

export type DnsConfig = Pick<RelayConfig['dns'], 'servers' | 'timeout'> & Partial<Pick<RelayConfig['dns'], 'srv'>>;

export interface MxAnswer {
  readonly exchange: string;
  readonly priority: number;
}

export interface SrvAnswer {
  readonly name: string;
  readonly port: number;
  readonly priority: number;
  readonly weight: number;
}

export interface Dns {
  /** MX records of a domain, in the order the server gave them. */
  resolveMx(domain: string): Promise<MxAnswer[]>;
  /** SRV records of a full name (e.g. `_conneg._tcp.example.net`), in the order the server gave them. */
  resolveSrv(name: string): Promise<SrvAnswer[]>;
  /** IPv4 then IPv6 addresses of a host (a literal is returned as is); rejects when it has none. */
  resolveAddresses(host: string): Promise<string[]>;
  /** The servers asked, as `ip:port` / `[ip6]:port` (port omitted when 53), for logs. */
  servers(): string[];
}

/** Tries per server (c-ares doubles the time-out on each round). */
const TRIES = 2;

export function createDns(config: DnsConfig): Dns {
  const resolver = new dns.Resolver({ timeout: Math.max(1, Math.ceil(config.timeout)), tries: TRIES });
  if (config.servers !== undefined) resolver.setServers([...config.servers]);
  return {
    resolveMx: (domain) => resolver.resolveMx(domain),
    resolveSrv: (name) => resolver.resolveSrv(name),
    async resolveAddresses(host) {
      if (isIP(host)) return [host];
      const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
      const found = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
      if (found.length > 0) return found;
      throw v4.status === 'rejected' ? v4.reason : new Error(`${host} has no address`);
    },
    servers: () => resolver.getServers(),
  };
}
