/**
 * Retry schedule (pure). Postfix-like by default: first retry after minutes,
 * backing off to about an hour (config `queue.retrySchedule`), a next hop's
 * `[RETRY-AFTER n]` hint honoured when present (protocols.md A9), and a maximum
 * queue lifetime after which a recipient fails with 4.4.7.
 */

/** Delay before the next attempt, after `failedAttempts` (≥ 1) failed attempts. */
export function retryDelay(failedAttempts: number, scheduleMs: readonly number[], hintSeconds?: number): number {
  if (hintSeconds !== undefined && Number.isFinite(hintSeconds) && hintSeconds >= 0) {
    // A hint moves the attempt but never below one second nor beyond the schedule's longest step.
    return Math.min(Math.max(1000, hintSeconds * 1000), Math.max(...scheduleMs));
  }
  const i = Math.min(Math.max(failedAttempts, 1), scheduleMs.length) - 1;
  return scheduleMs[i] ?? 300_000;
}

/** Whether a message received at `receivedAt` has outlived `maxLifetimeMs` at `now`. */
export function isExpired(receivedAt: string, maxLifetimeMs: number, now: number): boolean {
  return now - Date.parse(receivedAt) >= maxLifetimeMs;
}
