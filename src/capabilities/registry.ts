/**
 * The capability registry of the config (`capabilities`, protocols.md A10): what
 * the relay knows itself about a recipient's capabilities, answered to CONNEG
 * queries (A3) and counted as "specific information" for decisions (A8).
 * Lookup order: the exact address, then `*@domain`. Addresses compare without
 * regard to case, and a domain written as U-label or A-label (IDNA) is the same
 * domain (smtp-server hands us U-labels; configs may hold either).
 * Pure: no I/O; the async `CapabilityLookup` form is only a wrapper.
 */
import { domainToASCII } from 'node:url';
import type { CapabilityAnswer, CapabilityLookup } from '../model/capability.ts';

/** `local@domain` lower-cased, domain as A-label; `*@domain` keeps its star. */
export function normalizeAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.toLowerCase();
  const domain = address.slice(at + 1);
  // Address literals ([1.2.3.4]) and names that are not valid IDNA stay as written.
  const ascii = domain.startsWith('[') ? domain : domainToASCII(domain) || domain;
  return `${address.slice(0, at)}@${ascii}`.toLowerCase();
}

/**
 * A recipient-keyed table (exact address or `*@domain`, the A10 key shape shared
 * by `capabilities` and `policies`), compiled once for lookups.
 */
export class RecipientTable<T> {
  private readonly entries = new Map<string, T>();

  constructor(table: Readonly<Record<string, T>>) {
    for (const [key, value] of Object.entries(table)) {
      const k = normalizeAddress(key);
      // The first spelling of a key wins when two normalise alike.
      if (!this.entries.has(k)) this.entries.set(k, value);
    }
  }

  /** The entry for the exact address, else for `*@domain`, else undefined. */
  get(address: string): T | undefined {
    const norm = normalizeAddress(address);
    const exact = this.entries.get(norm);
    if (exact !== undefined) return exact;
    const at = norm.lastIndexOf('@');
    return at < 0 ? undefined : this.entries.get(`*${norm.slice(at)}`);
  }
}

/**
 * The registry as a synchronous lookup (the port `capabilities/resolve.ts` takes
 * first): `known` with source `config` when an entry matches, `unknown` otherwise.
 */
export function capabilityRegistry(capabilities: Readonly<Record<string, string>>): (recipient: string) => CapabilityAnswer {
  const table = new RecipientTable(capabilities);
  return (recipient) => {
    const expression = table.get(recipient)?.trim();
    return expression ? { kind: 'known', expression, source: 'config' } : { kind: 'unknown' };
  };
}

/** The registry as a `CapabilityLookup` port (the inbound stage's default for CONNEG answers). */
export function registryLookup(capabilities: Readonly<Record<string, string>>): CapabilityLookup {
  const registry = capabilityRegistry(capabilities);
  return (recipient) => Promise.resolve(registry(recipient));
}
