/**
 * NextHop and DeliveryResult — where a group of recipients goes and what one
 * SMTP transaction to it returned, per recipient (maddy's StatusCollector, as a value).
 */
import type { CapabilityAnswer } from './capability.ts';
import type { Reply } from './reply.ts';

export interface NextHop {
  /** Stable key for grouping and connection reuse, e.g. `smarthost:127.0.0.1:2526` or `mx:example.org`. */
  readonly key: string;
  /** Hosts to try in order (MX preference order, or the one smarthost/route). */
  readonly hosts: readonly { readonly host: string; readonly port: number }[];
}

export interface DeliveryResult {
  readonly hop: string;
  /** The host we spoke to, as it named itself (RFC 3464 Remote-MTA). */
  readonly remoteMta?: string;
  /** The hop's EHLO keywords, upper-cased, first word of each line. */
  readonly ehlo: readonly string[];
  /** One reply per recipient: from RCPT, or the DATA reply for the accepted ones. */
  readonly perRecipient: ReadonlyMap<string, Reply>;
  /** Whether DSN parameters were passed on (hop advertised DSN). */
  readonly dsnPassedOn: boolean;
  /** CONNEG answers read during this transaction, per recipient. */
  readonly capabilities?: ReadonlyMap<string, CapabilityAnswer>;
  /** Recipients whose RCPT carried DRUCOF. */
  readonly drucofPassedOn?: ReadonlySet<string>;
  /** Which per-recipient verdict form the hop gave after DATA, if any. */
  readonly verdicts?: 'INLINE-DSN' | 'PRDR';
}
