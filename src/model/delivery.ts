/**
 * NextHop and DeliveryResult — where a group of recipients goes (an SMTP or
 * LMTP hop, or a local Maildir) and what one transaction to it returned, per
 * recipient (maddy's StatusCollector, as a value).
 */
import type { CapabilityAnswer } from './capability.ts';
import type { Reply } from './reply.ts';

/** An SMTP or LMTP next hop: hosts tried in order. */
export interface RemoteHop {
  /** Stable key for grouping and connection reuse, e.g. `smarthost:127.0.0.1:2526`, `mx:example.org`, `route:lmtp:127.0.0.1:24`. */
  readonly key: string;
  /** Hosts to try in order (MX preference order, or the one smarthost/route). */
  readonly hosts: readonly { readonly host: string; readonly port: number }[];
  /**
   * `lmtp`: LMTP (RFC 2033) to a delivery agent; the hop is the final one, and a
   * 2xx after the data is the recipient's delivery. Absent or `smtp`: SMTP relaying.
   */
  readonly transport?: 'smtp' | 'lmtp';
}

/** Final delivery into Maildirs under `dir` (`<dir>/<domain>/<local part>/`): the relay itself is the final hop. */
export interface MaildirHop {
  /** `route:maildir:<dir>`. */
  readonly key: string;
  readonly transport: 'maildir';
  /** Absolute path of the directory holding one directory per domain. */
  readonly dir: string;
  /** Nothing to connect to. */
  readonly hosts: readonly [];
}

/** Where a group of recipients goes. */
export type NextHop = RemoteHop | MaildirHop;

/** Whether a 2xx from this hop is final delivery (`delivered`) rather than relaying (`relayed`): Maildir and LMTP hops. */
export const isFinalHop = (hop: NextHop): boolean => hop.transport === 'maildir' || hop.transport === 'lmtp';

export interface DeliveryResult {
  readonly hop: string;
  /** The host we spoke to, as it named itself (RFC 3464 Remote-MTA). */
  readonly remoteMta?: string;
  /** The hop's EHLO (LHLO) keywords, upper-cased, first word of each line; none for a Maildir. */
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
