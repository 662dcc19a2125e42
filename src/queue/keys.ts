/**
 * Every Redis key the relay uses, and nothing else does (one home for key names).
 * All keys start with the queue prefix (RELAY_QUEUE_PREFIX), so several relays —
 * or several test files — share one Redis without meeting.
 */
export const DELIVERY_QUEUE = 'deliver';

export function keys(prefix: string) {
  return {
    /** BullMQ's own prefix: its keys are `${prefix}:deliver:*`. */
    bullPrefix: prefix,
    /** Hash per message: `envelope` (JSON), `body` (raw bytes), `r:<n>` (RecipientState JSON). */
    message: (id: string) => `${prefix}:msg:${id}`,
    /** Set of queue ids on hold: their job is removed until released (Postfix's hold queue). */
    held: `${prefix}:held`,
    /** Capped list (newest first, LPUSH + LTRIM) of recent DRUCOF decisions as JSON, for the dashboard; written by every worker. */
    recentDecisions: `${prefix}:recent-decisions`,
    /** Capped list (newest first) of the queue ids of recently accepted messages, for the dashboard; written by every listener. */
    recentMessages: `${prefix}:recent-messages`,
  };
}

export const recipientField = (index: number) => `r:${index}`;
export const isRecipientField = (field: string) => /^r:\d+$/.test(field);
