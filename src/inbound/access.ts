/**
 * Who may relay (Postfix's permit_mynetworks + permit_sasl_authenticated, and
 * nothing else: never an open relay). Pure: no I/O, only ipaddr.js arithmetic.
 *
 * - A client whose address is inside `allowNetworks` may relay without AUTH.
 * - A client that authenticated may relay from anywhere.
 * - Everyone else: refused at connect with `554 5.7.1` when AUTH is not
 *   configured (they could never relay), else refused at RCPT with `550 5.7.1`
 *   (they may still authenticate first).
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are compared as IPv4, both as
 * client addresses and as networks.
 */
import ipaddr from 'ipaddr.js';
import type { Reply } from '../model/reply.ts';
import { status } from '../smtp/status.ts';

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** One parsed network: an address and a prefix length of the same kind. */
export type Network = readonly [Address, number];

export interface AccessPolicy {
  readonly networks: readonly Network[];
  /** AUTH is offered, so an outside client may still authenticate and relay. */
  readonly authConfigured: boolean;
}

/** What the relay knows about the client when it decides. */
export interface ClientFacts {
  readonly address: string;
  /** Authenticated user name, if the client authenticated. */
  readonly user?: string;
}

/** Parses one address, unwrapping IPv4-mapped IPv6; undefined when it is not an IP address. */
export function parseAddress(text: string): Address | undefined {
  const t = text.trim().replace(/^\[|\]$/g, '').replace(/^IPv6:/i, '');
  if (!ipaddr.isValid(t)) return undefined;
  return ipaddr.process(t);
}

/**
 * Parses `allowNetworks` entries (`10.0.0.0/8`, `::1/128`, or a bare address =
 * a host network). Throws on an invalid entry: the config schema has already
 * refused those, so this is a programming error.
 */
export function parseNetworks(entries: readonly string[]): Network[] {
  return entries.map((entry) => {
    const [addr, bits] = entry.includes('/') ? ipaddr.parseCIDR(entry) : hostNetwork(entry);
    // `::ffff:10.0.0.0/104` is the IPv4 network 10.0.0.0/8 written as IPv6.
    if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
      return [(addr as ipaddr.IPv6).toIPv4Address(), bits - 96] as const;
    }
    return [addr, bits] as const;
  });
}

function hostNetwork(entry: string): [Address, number] {
  const addr = ipaddr.parse(entry);
  return [addr, addr.kind() === 'ipv4' ? 32 : 128];
}

export function compilePolicy(allowNetworks: readonly string[], authConfigured: boolean): AccessPolicy {
  return { networks: parseNetworks(allowNetworks), authConfigured };
}

/** Whether the client address lies inside one of the networks. */
export function inNetworks(address: string, networks: readonly Network[]): boolean {
  const addr = parseAddress(address);
  if (!addr) return false;
  return networks.some(([net, bits]) => net.kind() === addr.kind() && addr.match(net, bits));
}

/** Whether this client may have mail relayed: inside allowNetworks, or authenticated. */
export function mayRelay(policy: AccessPolicy, client: ClientFacts): boolean {
  if (client.user !== undefined && client.user !== '') return true;
  return inNetworks(client.address, policy.networks);
}

/**
 * The verdict at connect: a client that can never relay (outside allowNetworks,
 * no AUTH offered) is refused with `554 5.7.1` (RFC 5321 §3.1 allows 554 as
 * the greeting). Undefined: carry on.
 */
export function checkConnect(policy: AccessPolicy, client: ClientFacts): Reply | undefined {
  if (policy.authConfigured || mayRelay(policy, client)) return undefined;
  return status.relayDenied(554, 'relay access denied: client not in allowNetworks');
}

/** The verdict at RCPT: `550 5.7.1` unless the client may relay. Undefined: accept. */
export function checkRecipient(policy: AccessPolicy, client: ClientFacts): Reply | undefined {
  if (mayRelay(policy, client)) return undefined;
  return status.relayDenied(
    550,
    policy.authConfigured ? 'relay access denied: authentication required' : 'relay access denied',
  );
}
