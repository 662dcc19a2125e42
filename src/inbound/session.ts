/**
 * Per-transaction state (Postfix smtpd's state->sender / recipient list), from
 * MAIL to the end of DATA, and what it turns into: one `Envelope` and one
 * `RecipientState` per distinct recipient.
 *
 * The state hangs off smtp-server's `session.envelope` object through a WeakMap,
 * so it lives exactly as long as the library's own transaction: `_resetSession`
 * (EHLO, RSET, after DATA, after STARTTLS) replaces that object, and the state of
 * the old transaction is gone with it. Nothing here does I/O.
 */
import type { SMTPServerEnvelope, SMTPServerSession } from 'smtp-server';
import type { ClientIdentity, Envelope, QueueId } from '../model/envelope.ts';
import { newRecipient, type RecipientState } from '../model/recipient.ts';
import type { MailParams, RcptParams } from '../smtp/params.ts';
import type { AcceptedRcpt, TransactionMode } from './data-replies.ts';

export interface Transaction {
  /** '' for the null sender `<>`. */
  readonly mailFrom: string;
  readonly params: MailParams;
  /**
   * How verdicts after the data are given (protocols.md A4, A4b): `inline-dsn`
   * when the client sent INLINE-DSN (it wins when a client sends both: it also
   * carries 352), `prdr` for PRDR, else `plain`.
   */
  readonly mode: TransactionMode;
  /** Distinct recipients in RCPT order, keyed by the lower-cased address. */
  readonly recipients: Map<string, RecipientState>;
  /** Every RCPT answered positively, in order, repeats included: the 353 sequence's lines. */
  readonly accepted: AcceptedRcpt[];
  /**
   * Recipients (lower-cased) whose verdict a source said at RCPT depends on the
   * content: after the data the message's parts are measured only for them, and
   * the sources are not asked again.
   */
  readonly dependsOnContent: Set<string>;
}

const transactions = new WeakMap<SMTPServerEnvelope, Transaction>();

export function transactionMode(params: MailParams): TransactionMode {
  return params.inlineDsn ? 'inline-dsn' : params.prdr ? 'prdr' : 'plain';
}

/** Starts the transaction of this envelope (at an accepted MAIL). */
export function beginTransaction(session: SMTPServerSession, mailFrom: string, params: MailParams): Transaction {
  const tx: Transaction = { mailFrom, params, mode: transactionMode(params), recipients: new Map(), accepted: [], dependsOnContent: new Set() };
  transactions.set(session.envelope, tx);
  return tx;
}

/** The transaction in progress, if MAIL was accepted since the last reset. */
export function currentTransaction(session: SMTPServerSession): Transaction | undefined {
  return transactions.get(session.envelope);
}

export type AddResult = 'added' | 'duplicate' | 'too-many';

/**
 * Adds a recipient. A repeated address (compared case-insensitively, as
 * smtp-server does) is accepted but kept once, with the parameters of its first
 * RCPT (Postfix cleanup's duplicate elimination). A new address beyond
 * `maxRecipients` is refused; a repeat never is.
 */
export function addRecipient(tx: Transaction, address: string, params: RcptParams, maxRecipients: number): AddResult {
  const key = address.toLowerCase();
  if (tx.recipients.has(key)) return 'duplicate';
  if (tx.recipients.size >= maxRecipients) return 'too-many';
  tx.recipients.set(
    key,
    newRecipient(address, {
      ...(params.notify && { notify: params.notify }),
      ...(params.orcpt && { orcpt: params.orcpt }),
      ...(params.drucof && { drucof: true }),
    }),
  );
  return 'added';
}

/**
 * Records a RCPT answered positively (250, or 352 when `deferred`), and whether
 * its verdict depends on the content (a repeat that does makes the recipient so).
 */
export function noteAccepted(tx: Transaction, address: string, deferred: boolean, dependsOnContent: boolean): void {
  tx.accepted.push({ key: address.toLowerCase(), address, deferred });
  if (dependsOnContent) tx.dependsOnContent.add(address.toLowerCase());
}

/** Whether a source said at one of the recipient's RCPTs that its verdict depends on the content. */
export function dependsOnContent(tx: Transaction, address: string): boolean {
  return tx.dependsOnContent.has(address.toLowerCase());
}

/** Whether the recipient would be a repeat in this transaction. */
export function hasRecipient(tx: Transaction, address: string): boolean {
  return tx.recipients.has(address.toLowerCase());
}

/** The recipient's state (its first RCPT's parameters), if it is in the transaction. */
export function recipientState(tx: Transaction, address: string): RecipientState | undefined {
  return tx.recipients.get(address.toLowerCase());
}

/** Who the client is, as the Received: header and the envelope record it. */
export function clientIdentity(session: SMTPServerSession): ClientIdentity {
  // smtp-server writes "[ip]" when the reverse lookup gave nothing.
  const rdns = session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : undefined;
  const user = userName(session.user);
  const tls = session.secure && session.tlsOptions ? [session.tlsOptions.version, session.tlsOptions.name].filter(Boolean).join(' ') : undefined;
  return {
    address: session.remoteAddress,
    helo: session.hostNameAppearsAs || '',
    ...(rdns && { hostname: rdns }),
    ...(user && { user }),
    ...(session.secure && { tls: tls || 'TLS' }),
  };
}

/** The authenticated user of a session (onAuth stores the user name as a string). */
export function userName(user: unknown): string | undefined {
  if (typeof user === 'string' && user !== '') return user;
  return undefined;
}

/** The envelope stored with the message. `size` is the stored size, trace header included. */
export function buildEnvelope(
  tx: Transaction,
  id: QueueId,
  client: ClientIdentity,
  receivedAt: Date,
  size: number,
): Envelope {
  const p = tx.params;
  return {
    id,
    mailFrom: tx.mailFrom,
    ...(p.ret && { ret: p.ret }),
    ...(p.envid && { envid: p.envid }),
    body: p.body ?? '7BIT',
    smtpUtf8: p.smtpUtf8,
    client,
    receivedAt: receivedAt.toISOString(),
    size,
  };
}

/** The recipients to store, in RCPT order, each once. */
export function recipientStates(tx: Transaction): RecipientState[] {
  return [...tx.recipients.values()];
}
