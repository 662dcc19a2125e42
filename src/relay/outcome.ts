/**
 * Outcome: a next hop's reply → the recipient's next state (Postfix smtp_trouble.c's
 * job, as a pure function). 2xx: relayed — or delivered when the hop was the
 * final one (a Maildir the relay wrote, an LMTP delivery agent): a relay never
 * claims `delivered` for mail it only passed on; 4xx: deferred, retried; 5xx: failed. A deferred recipient past the queue
 * lifetime fails with 4.4.7, keeping the last reply it got in the text.
 */
import { isPermanent, isPositive, reply, replyText, type Reply } from '../model/reply.ts';
import type { RecipientState } from '../model/recipient.ts';

export interface AttemptFacts {
  readonly now: string;
  readonly remoteMta?: string;
  readonly dsnPassedOn: boolean;
  /** The hop was the recipient's final destination (`isFinalHop`): a 2xx is delivery, not relaying. */
  readonly finalHop?: boolean;
}

export function afterAttempt(state: RecipientState, r: Reply, facts: AttemptFacts): RecipientState {
  const base = {
    ...state,
    attempts: state.attempts + 1,
    lastAttemptAt: facts.now,
    lastReply: r,
    ...(facts.remoteMta !== undefined && { remoteMta: facts.remoteMta }),
  };
  if (isPositive(r)) return { ...withoutRetry(base), status: facts.finalHop ? 'delivered' : 'relayed', dsnPassedOn: facts.dsnPassedOn };
  if (isPermanent(r)) return { ...withoutRetry(base), status: 'failed' };
  return { ...base, status: 'deferred' };
}

export function scheduled(state: RecipientState, nextAttemptAt: string): RecipientState {
  return { ...state, nextAttemptAt };
}

export function expired(state: RecipientState, lifetimeText: string): RecipientState {
  const last = state.lastReply ? `last error: ${replyText(state.lastReply)}` : 'no attempt was made';
  return { ...withoutRetry(state), status: 'failed', lastReply: reply(451, 4, 7, `message expired after ${lifetimeText} in queue; ${last}`) };
}

function withoutRetry(s: RecipientState): RecipientState {
  const { nextAttemptAt: _drop, ...rest } = s;
  return rest;
}
