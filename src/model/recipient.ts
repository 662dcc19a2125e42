/**
 * RecipientState — the unit of truth (Postfix's REC_TYPE_DONE cross-off, maddy's
 * QueueMetadata). One per envelope recipient, written back to Redis after every
 * attempt, so a retry or a re-run of a stalled job sends only to recipients that
 * are not yet final.
 */
import type { Notify, Orcpt } from '../smtp/params.ts';
import type { CapabilityAnswer } from './capability.ts';
import type { DecisionBranch } from './decision.ts';
import type { ConversionRecord, PlanSummary } from './plan.ts';
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
  /** For a DRUCOF recipient: the section-4 decision of the last attempt and what it rested on (protocols.md A8). */
  readonly decision?: DrucofTrace;
}

/**
 * What a DRUCOF recipient's section-4 decision rested on (for `drucof-relay
 * explain`, the logs and the tests): the branch, the next hop and which of the
 * two extensions it advertised, the capabilities used and where they came from,
 * the plan for them, and what was converted for this recipient's copy.
 */
export interface DrucofTrace {
  readonly branch: DecisionBranch;
  /** The next hop's key (e.g. `route:example.net`). */
  readonly hop: string;
  /** Which of CONNEG and DRUCOF the hop advertised. */
  readonly hopExtensions: readonly ('CONNEG' | 'DRUCOF')[];
  /** The capabilities used, with their source; or why none were known. */
  readonly capabilities: CapabilityAnswer;
  /** The conversion plan for those capabilities (only when they were known). */
  readonly plan?: PlanSummary;
  /** What was converted in the copy this recipient was sent (absent: nothing). */
  readonly conversion?: ConversionRecord;
  /** ISO 8601, when the decision was made. */
  readonly at: string;
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
