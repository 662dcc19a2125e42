/**
 * Route: which next hop a recipient goes to (Postfix's trivial-rewrite/transport
 * lookup). Pure over the config; MX resolution is behind a resolver port so the
 * worker can use DNS and tests a table. Order: per-domain route, smarthost, MX.
 * A per-domain route may also make the relay the final hop: LMTP to a delivery
 * agent (`lmtp:host:port`) or its own Maildir delivery (`maildir:DIR`).
 */
import type { NextHop } from '../model/delivery.ts';
import type { RelayConfig, RouteTarget } from '../config/schema.ts';

export type RouteSpec =
  | { readonly kind: 'hop'; readonly hop: NextHop }
  | { readonly kind: 'mx'; readonly domain: string }
  | { readonly kind: 'none' };

export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return (at < 0 ? '' : address.slice(at + 1)).toLowerCase();
}

type RouteConfig = Pick<RelayConfig, 'routes' | 'smarthost' | 'mx'>;

export function routeFor(address: string, config: RouteConfig): RouteSpec {
  const domain = domainOf(address);
  const route = lookupDomain(domain, config.routes);
  if (route) return { kind: 'hop', hop: routeHop(route) };
  if (config.smarthost) {
    const { host, port } = config.smarthost;
    return { kind: 'hop', hop: { key: `smarthost:${host}:${port}`, hosts: [{ host, port }] } };
  }
  if (config.mx && domain) return { kind: 'mx', domain };
  return { kind: 'none' };
}

/**
 * The hop of a per-domain route. Keys: `route:host:port` (SMTP, as always),
 * `route:lmtp:host:port`, `route:maildir:/dir`. A route object without a
 * transport (written by hand, not parsed from the config) is SMTP.
 */
export function routeHop(route: RouteTarget | { readonly host: string; readonly port: number }): NextHop {
  if ('dir' in route) return { key: `route:maildir:${route.dir}`, transport: 'maildir', dir: route.dir, hosts: [] };
  const { host, port } = route;
  if ('transport' in route && route.transport === 'lmtp') return { key: `route:lmtp:${host}:${port}`, transport: 'lmtp', hosts: [{ host, port }] };
  return { key: `route:${host}:${port}`, hosts: [{ host, port }] };
}

/** Exact domain, then each parent domain written as `.example.org` (Postfix transport style). */
function lookupDomain(domain: string, routes: RouteConfig['routes']): RouteTarget | undefined {
  const table = new Map(Object.entries(routes).map(([k, v]) => [k.toLowerCase(), v]));
  if (table.has(domain)) return table.get(domain);
  const labels = domain.split('.');
  for (let i = 1; i < labels.length; i++) {
    const parent = '.' + labels.slice(i).join('.');
    if (table.has(parent)) return table.get(parent);
  }
  return undefined;
}

export interface MxRecord {
  readonly exchange: string;
  readonly priority: number;
}

/** MX records → hosts in preference order; none → the domain itself (RFC 5321 §5.1 implicit MX). */
export function mxHop(domain: string, records: readonly MxRecord[], port = 25): NextHop {
  const sorted = [...records].sort((a, b) => a.priority - b.priority || a.exchange.localeCompare(b.exchange));
  const hosts = sorted.length > 0 ? sorted.map((r) => ({ host: r.exchange, port })) : [{ host: domain, port }];
  return { key: `mx:${domain}`, hosts };
}
