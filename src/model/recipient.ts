/**
 * RecipientState — the unit of truth (Postfix's REC_TYPE_DONE cross-off, maddy's
 * QueueMetadata). One per envelope recipient, written back to Redis after every
 * attempt, so a retry or a re-run of a stalled job sends only to recipients that
 * are not yet final.
 */
import type { Notify, Orcpt } from '../smtp/params.ts';
import type { DecisionBranch } from './decision.ts';
import type { Reply } from './reply.ts';

export type RecipientStatus =
  | 'queued'
  | 'deferred'
  | 'delivered'
  | 'relayed'
  | 'relayed-with-drucof'
  | 'converted-and-relayed'
  | 'failed';

export interface RecipientState {
  readonly address: string;
  readonly orcpt?: Orcpt;
  /** Absent: the sender gave no NOTIFY (RFC 3461 default: FAILURE). */
  readonly notify?: Notify;
  readonly drucof: boolean;
  readonly status: RecipientStatus;
  readonly attempts: number;
  /** ISO 8601, when the recipient is deferred. */
  readonly nextAttemptAt?: string;
  /** ISO 8601 of the last attempt. */
  readonly lastAttemptAt?: string;
  readonly lastReply?: Reply;
  /** The next hop's name as it greeted us, for RFC 3464 Remote-MTA. */
  readonly remoteMta?: string;
  /** Whether the DSN request travelled on (the hop advertised DSN), so no report of ours is due. */
  readonly dsnPassedOn?: boolean;
  /**
   * A report this recipient is owed and that is not yet queued. Written in the same
   * Redis write as the outcome that calls for it, cleared once the report is queued,
   * so a worker killed in between still sends it on the re-run.
   */
  readonly reportOwed?: 'failed' | 'delayed' | 'relayed';
  /** The one `delayed` report for this recipient has been queued. */
  readonly delayWarned?: boolean;
  /** For a DRUCOF recipient: the section-4 branch taken at the last attempt (protocols.md A8). */
  readonly decision?: DecisionBranch;
}

const FINAL: ReadonlySet<RecipientStatus> = new Set([
  'delivered',
  'relayed',
  'relayed-with-drucof',
  'converted-and-relayed',
  'failed',
]);

export const isFinal = (r: RecipientState): boolean => FINAL.has(r.status);

export function newRecipient(address: string, opts: { notify?: Notify; orcpt?: Orcpt; drucof?: boolean } = {}): RecipientState {
  return {
    address,
    drucof: opts.drucof ?? false,
    status: 'queued',
    attempts: 0,
    ...(opts.notify && { notify: opts.notify }),
    ...(opts.orcpt && { orcpt: opts.orcpt }),
  };
}
