/**
 * The replies after the final dot, and what is stored, for the three forms of a
 * transaction (protocols.md A4, A4b): one verdict per recipient (verdicts.ts),
 * two wire forms and the old way. Pure: given the accepted RCPTs and the
 * verdicts, says which recipients are stored (and how) and which replies go out.
 *
 * - `plain` (neither INLINE-DSN nor PRDR): one reply. When any recipient accepts,
 *   the message is queued for those, and each refused recipient is stored already
 *   `failed` with its verdict, so it gets its failure DSN the old way. When none
 *   accepts, the one reply is the refusal and nothing is stored (the client knows).
 * - `inline-dsn` (A4): itemises the recipients answered 352, in acceptance
 *   order, between `353` and the final reply. One reply instead only when it is
 *   true for every recipient: `250` when every deferred recipient accepts; one
 *   4xx/5xx when none was accepted with 250 at RCPT and every deferred one got
 *   that same verdict.
 * - `prdr` (A4b): with two or more RCPTs accepted, `353`, one line for every
 *   accepted RCPT in RCPT order, then the final reply; with one, one ordinary reply.
 *
 * The final reply of a sequence: `250 [QUEUEID]` when at least one recipient
 * accepted (and only then is anything stored), `550` when every verdict is a
 * refusal, `450` when none accepted and some were deferred. Refused recipients
 * are never stored in the two per-recipient forms: the client has their verdict.
 */
import { isTransient, reply, withTags, type EnhancedCode, type Reply } from '../model/reply.ts';
import { status } from '../smtp/status.ts';

export type TransactionMode = 'plain' | 'inline-dsn' | 'prdr';

/** One RCPT answered positively, in RCPT order (a repeated address appears again). */
export interface AcceptedRcpt {
  /** The recipient's identity in the transaction (its lower-cased address). */
  readonly key: string;
  readonly address: string;
  /** Answered `352` (INLINE-DSN: the verdict comes after the data). */
  readonly deferred: boolean;
}

export type StoreAs = { readonly kind: 'queue' } | { readonly kind: 'failed'; readonly reply: Reply };

export interface DataPlan {
  /** Per recipient key, how it is stored; empty: nothing is stored. */
  readonly store: ReadonlyMap<string, StoreAs>;
  /** The replies after the dot, in order; `queueId` is the stored message's (unused when nothing is stored). */
  replies(queueId: string): Reply[];
}

/** `353` texts (A4, A4b). */
export const INLINE_DSN_353 = (): Reply => reply(353, 0, 0, 'data looks okay but wait for confirmation');
export const PRDR_353 = (): Reply => reply(353, 0, 0, 'PRDR content analysis beginning');

const accepted = (r: Reply): boolean => r.code >= 200 && r.code < 300;
const sameVerdict = (a: Reply, b: Reply): boolean => a.code === b.code && a.enhanced === b.enhanced;

function queuedReply(queueId: string, text: string): Reply {
  return withTags(reply(250, 0, 0, text), { queueId });
}

/** `{code} {enhanced} text`, keeping a verdict's codes but not its (recipient-naming) text. */
function retext(r: Reply, text: string): Reply {
  return r.enhanced ? { code: r.code, enhanced: r.enhanced, lines: [text] } : { code: r.code, lines: [text] };
}

/** The enhanced code every reply shares, else `fallback`. */
function commonEnhanced(rs: readonly Reply[], fallback: EnhancedCode): EnhancedCode {
  const first = rs[0]?.enhanced;
  return first !== undefined && rs.every((r) => r.enhanced === first) ? first : fallback;
}

/**
 * The one reply when no recipient accepted: a single recipient's own verdict;
 * several sharing one verdict: that verdict; otherwise `550` when all refused,
 * `450` when some were deferred (A4b).
 */
export function noneAccepted(verdicts: readonly Reply[]): Reply {
  if (verdicts.length === 1) return verdicts[0]!;
  const first = verdicts[0];
  if (first && verdicts.every((v) => sameVerdict(v, first))) return retext(first, 'refused by every recipient');
  return finalForNone(verdicts);
}

/** The final reply of a sequence in which no recipient accepted. */
function finalForNone(verdicts: readonly Reply[]): Reply {
  const transient = verdicts.filter(isTransient);
  if (transient.length > 0) {
    return { code: 450, enhanced: commonEnhanced(transient, '4.0.0'), lines: ['no recipient accepted the message now, try again later'] };
  }
  return { code: 550, enhanced: commonEnhanced(verdicts, '5.0.0'), lines: ['no recipient accepted the message'] };
}

function distinct(rcpts: readonly AcceptedRcpt[]): AcceptedRcpt[] {
  const seen = new Set<string>();
  return rcpts.filter((r) => !seen.has(r.key) && seen.add(r.key));
}

/**
 * `verdicts` is keyed by each recipient's address as first given (the engine's
 * output for the transaction's recipients); a recipient without one accepts.
 */
export function planData(mode: TransactionMode, rcpts: readonly AcceptedRcpt[], verdicts: ReadonlyMap<string, Reply>): DataPlan {
  const all = distinct(rcpts);
  const firstAddress = new Map(all.map((r) => [r.key, r.address]));
  const verdict = (r: AcceptedRcpt): Reply => {
    const address = firstAddress.get(r.key) ?? r.address;
    return verdicts.get(address) ?? reply(250, 1, 5, `<${address}> accepts the content`);
  };
  const takers = all.filter((r) => accepted(verdict(r)));

  /**
   * Stores the takers, and those of `failedKeys` that were refused as already
   * failed (their DSN the old way). Nothing at all when nobody accepted.
   */
  const storeFor = (failedKeys: ReadonlySet<string>): Map<string, StoreAs> => {
    const store = new Map<string, StoreAs>();
    if (takers.length === 0) return store;
    for (const r of all) {
      const v = verdict(r);
      if (accepted(v)) store.set(r.key, { kind: 'queue' });
      else if (failedKeys.has(r.key)) store.set(r.key, { kind: 'failed', reply: v });
    }
    return store;
  };
  const everyone = new Set(all.map((r) => r.key));
  const nobody = new Set<string>();
  const single = (failedKeys: ReadonlySet<string>): DataPlan => ({
    store: storeFor(failedKeys),
    replies: (id) => [takers.length > 0 ? status.queued(id) : noneAccepted(all.map(verdict))],
  });
  const sequence = (opening: Reply, itemised: readonly AcceptedRcpt[], texts: { some: string; all: string }, failedKeys: ReadonlySet<string>): DataPlan => ({
    store: storeFor(failedKeys),
    replies: (id) => [
      opening,
      ...itemised.map(verdict),
      takers.length === 0 ? finalForNone(all.map(verdict)) : queuedReply(id, takers.length === all.length ? texts.all : texts.some),
    ],
  });

  switch (mode) {
    case 'plain':
      return single(everyone);
    case 'inline-dsn': {
      const deferredKeys = new Set(rcpts.filter((r) => r.deferred).map((r) => r.key));
      const deferred = all.filter((r) => deferredKeys.has(r.key));
      // Answered 250 at RCPT: final then. Should a source refuse one after all (it
      // ought to have been answered 352), it cannot be itemised: its DSN the old way.
      const direct = new Set(all.filter((r) => !deferredKeys.has(r.key)).map((r) => r.key));
      // No 352 given: nothing to itemise, one reply as without INLINE-DSN.
      if (deferred.length === 0) return single(everyone);
      if (deferred.every((r) => accepted(verdict(r)))) return single(direct);
      const first = verdict(deferred[0]!);
      if (direct.size === 0 && deferred.every((r) => sameVerdict(verdict(r), first))) return single(nobody);
      return sequence(INLINE_DSN_353(), rcpts.filter((r) => r.deferred), { some: 'data accepted by some users', all: 'data accepted' }, direct);
    }
    case 'prdr':
      if (rcpts.length < 2) return single(nobody);
      return sequence(PRDR_353(), rcpts, { some: 'accepted for some recipients', all: 'accepted for all recipients' }, nobody);
    default: {
      const never: never = mode;
      throw new Error(`unknown transaction mode ${String(never)}`);
    }
  }
}
