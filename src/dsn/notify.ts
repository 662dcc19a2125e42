/**
 * Which recipient states call for which delivery status notification (RFC 3461
 * §5–6, protocols.md Part B; Postfix's bounce/defer/trace decision, as a pure
 * function). Given a message's envelope and its recipient states before and after
 * one attempt, returns the reports due now: `failed`, `delayed` (at most once per
 * recipient) and the success report (only when the DSN request did not travel on):
 * `delivered` where the relay was the final hop, `relayed` elsewhere.
 * Never a report about a message from the null sender. No I/O.
 */
import type { Envelope } from '../model/envelope.ts';
import type { RecipientState, RecipientStatus } from '../model/recipient.ts';
import type { NotifyKind } from '../smtp/params.ts';

/**
 * The RFC 3464 actions the relay reports. `delivered` only where the relay was
 * the final hop (it wrote the Maildir, or an LMTP delivery agent accepted the
 * recipient); for mail it passed on it only knows that the next hop took it
 * (`relayed`). `expanded` is for mailing lists and aliases, which we do not do.
 */
export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

/**
 * A report a recipient is owed, as `RecipientState.reportOwed` keeps it (and as
 * `reportsDue` returns it): `relayed` there stands for the success report
 * (NOTIFY=SUCCESS) whatever its action, which `actionOf` reads from the
 * recipient's status — `delivered` for a `delivered` recipient. (The model's
 * `reportOwed` has no `delivered`; once it has, reportsDue can say it directly.)
 */
export type OwedReport = 'failed' | 'delayed' | 'relayed';

/** One recipient's line in a report: its index in the message's recipient list, its state after the attempt, the action. */
export interface ReportItem {
  readonly index: number;
  readonly recipient: RecipientState;
  readonly action: DsnAction;
}

/** A report item as `reportsDue` gives it: the action as `reportOwed` can keep it. */
export interface OwedItem extends ReportItem {
  readonly action: OwedReport;
}

/** The RFC 3464 action of an item: a success report for a recipient the relay delivered (final hop) says `delivered`. */
export function actionOf(item: Pick<ReportItem, 'action' | 'recipient'>): DsnAction {
  return item.action === 'relayed' && item.recipient.status === 'delivered' ? 'delivered' : item.action;
}

/**
 * A recipient state with the flag that keeps delay warnings to one per recipient.
 * The flag belongs in `model/recipient.ts` as `delayWarned?: boolean`; until it is
 * there, this module reads and writes it through this widened type.
 */
export type DelayTracked = RecipientState;

export interface NotifyOptions {
  /**
   * Age of the message (since `envelope.receivedAt`) after which a recipient still
   * deferred gets its one `delayed` report. `0`, a negative or a non-finite value
   * turns delay warnings off (Postfix's `delay_warning_time = 0` convention).
   */
  readonly delayWarningMs: number;
  /** Milliseconds since the epoch. */
  readonly now: number;
}

/**
 * Statuses meaning "the recipient has been handed on": to the next hop (`relayed`
 * and the DRUCOF statuses) or into the mailbox (`delivered`: a Maildir the relay
 * wrote, an LMTP delivery agent). A SUCCESS request is answered for all of them:
 * `relayed` (RFC 3461 §5.2.2: a relay that cannot pass the request on), or
 * `delivered` (§5.2.4) where the relay was the final MTA — see `actionOf`.
 */
const HANDED_ON: ReadonlySet<RecipientStatus> = new Set<RecipientStatus>([
  'relayed',
  'relayed-with-drucof',
  'converted-and-relayed',
  'delivered',
]);

/** Whether the sender asked for `kind`. No NOTIFY means FAILURE only (RFC 3461 §4.1; see reportsDue on DELAY). */
function asked(r: RecipientState, kind: NotifyKind): boolean {
  if (r.notify === 'NEVER') return false;
  if (r.notify === undefined) return kind === 'FAILURE';
  return r.notify.includes(kind);
}

/** Whether a delay warning has already gone out for this recipient. */
export function isDelayWarned(r: RecipientState): boolean {
  return (r as DelayTracked).delayWarned === true;
}

/**
 * The reports due now, given the recipient states *before* and *after* one
 * attempt (index-aligned; a missing `before` entry counts as never attempted).
 *
 * - **null sender** (`mailFrom === ''`): nothing, ever (RFC 5321 §4.5.5; a DSN
 *   itself goes out from `<>`, RFC 3461 §6.1, so there is never a report about a report).
 * - **`NOTIFY=NEVER`**: nothing for that recipient.
 * - **failed** (RFC 3461 §5.2.6): the recipient became `failed` in this attempt, and NOTIFY is
 *   absent (default FAILURE) or includes FAILURE. `dsnPassedOn` does not matter:
 *   a hop that refused the recipient in the session will send no report of its own.
 * - **delayed** (RFC 3461 §5.2.5): NOTIFY explicitly includes DELAY (RFC 3461 lets an MTA also
 *   warn when NOTIFY is absent; we do not, so a sender who did not ask gets no
 *   warning mail), the recipient is still `deferred`, no warning went out for it
 *   yet (`delayWarned`), and the message is at least `delayWarningMs` old.
 *   After sending, record the warning with `markDelayWarned`.
 * - **success** (item action `relayed`; `actionOf` gives `delivered` for a
 *   `delivered` recipient): the recipient was handed on in this attempt (see
 *   HANDED_ON), NOTIFY includes SUCCESS, and the request did not travel on
 *   (`dsnPassedOn` not true: the hop lacked DSN, RFC 3461 §5.2.2; always so for
 *   a Maildir, where the relay itself is the final MTA, §5.2.4). A hop that took
 *   the request on (an LMTP agent advertising DSN among them) reports itself.
 *
 * Items come in recipient order; group them with `groupByAction` for rendering.
 */
export function reportsDue(
  envelope: Envelope,
  before: readonly RecipientState[],
  after: readonly RecipientState[],
  opts: NotifyOptions,
): OwedItem[] {
  if (envelope.mailFrom === '') return [];
  const age = opts.now - Date.parse(envelope.receivedAt);
  const delayDue = opts.delayWarningMs > 0 && Number.isFinite(opts.delayWarningMs) && Number.isFinite(age) && age >= opts.delayWarningMs;
  const items: OwedItem[] = [];
  for (const [index, r] of after.entries()) {
    const prev = before[index];
    const action = actionFor(prev, r, delayDue);
    if (action) items.push({ index, recipient: r, action });
  }
  return items;
}

function actionFor(prev: RecipientState | undefined, r: RecipientState, delayDue: boolean): OwedReport | undefined {
  if (r.notify === 'NEVER') return undefined;
  if (r.status === 'failed') {
    return prev?.status !== 'failed' && asked(r, 'FAILURE') ? 'failed' : undefined;
  }
  if (r.status === 'deferred') {
    const warned = isDelayWarned(r) || (prev !== undefined && isDelayWarned(prev));
    return delayDue && !warned && Array.isArray(r.notify) && r.notify.includes('DELAY') ? 'delayed' : undefined;
  }
  if (HANDED_ON.has(r.status)) {
    const newly = prev === undefined || !HANDED_ON.has(prev.status);
    return newly && asked(r, 'SUCCESS') && r.dsnPassedOn !== true ? 'relayed' : undefined;
  }
  return undefined; // queued: nothing happened to it yet
}

/**
 * The recipient states with `delayWarned: true` set on every recipient of a
 * `delayed` item, for writing back once the warning is queued (so the next
 * attempt does not warn again). Other states are returned unchanged.
 */
export function markDelayWarned(states: readonly RecipientState[], items: readonly ReportItem[]): DelayTracked[] {
  const warned = new Set(items.filter((i) => i.action === 'delayed').map((i) => i.index));
  return states.map((s, i) => (warned.has(i) ? { ...s, delayWarned: true } : s));
}

/**
 * Items split by RFC 3464 action (`actionOf`), in the order failed, delayed,
 * delivered, relayed (each list in recipient order): one report message per
 * non-empty list, as `renderReport` takes them.
 */
export function groupByAction(items: readonly ReportItem[]): { readonly action: DsnAction; readonly items: readonly ReportItem[] }[] {
  const order: readonly DsnAction[] = ['failed', 'delayed', 'delivered', 'relayed'];
  return order
    .map((action) => ({ action, items: items.filter((i) => actionOf(i) === action) }))
    .filter((g) => g.items.length > 0);
}
