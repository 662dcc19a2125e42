/**
 * AUTH brute-force limits (Postfix: smtpd_hard_error_limit per session, anvil's
 * per-client rates across sessions). Pure bookkeeping, no I/O; the clock is passed in.
 *
 * - In one session, the `perSession`-th failed AUTH ends it: `421 4.7.0 too many
 *   authentication failures` (connection.ts).
 * - Across sessions, a client address with `perAddress` failures within `windowMs`
 *   gets `454 4.7.0` to every AUTH until the oldest of them leaves the window; its
 *   credentials are not even checked, so guessing stops paying.
 * The table is bounded (`maxAddresses`, the least recently failing address goes
 * first), so a client with many addresses cannot grow it without limit.
 */

export interface AuthLimits {
  /** Failed AUTHs that end a session (the last one gets 421). */
  readonly perSession: number;
  /** Failed AUTHs from one address within `windowMs` that lock it out. */
  readonly perAddress: number;
  readonly windowMs: number;
  /** Addresses remembered at most. */
  readonly maxAddresses: number;
}

export const DEFAULT_AUTH_LIMITS: AuthLimits = { perSession: 3, perAddress: 10, windowMs: 10 * 60_000, maxAddresses: 10_000 };

export class AuthFailures {
  /** Address → times of its failures in the window, oldest first (Map order: least recently failing first). */
  private readonly failures = new Map<string, number[]>();

  constructor(readonly limits: AuthLimits = DEFAULT_AUTH_LIMITS) {}

  /** Records a failure; returns how many the address has in the window now. */
  fail(address: string, now: number): number {
    const times = this.recent(address, now);
    times.push(now);
    this.failures.delete(address);
    this.failures.set(address, times);
    while (this.failures.size > this.limits.maxAddresses) {
      const oldest = this.failures.keys().next().value;
      if (oldest === undefined) break;
      this.failures.delete(oldest);
    }
    return times.length;
  }

  /** Whether the address is locked out now; with the milliseconds until it is not. */
  lockedOut(address: string, now: number): { readonly locked: boolean; readonly retryAfterMs: number } {
    const times = this.recent(address, now);
    if (times.length === 0) this.failures.delete(address);
    if (times.length < this.limits.perAddress) return { locked: false, retryAfterMs: 0 };
    const oldestCounted = times[times.length - this.limits.perAddress]!;
    return { locked: true, retryAfterMs: Math.max(0, oldestCounted + this.limits.windowMs - now) };
  }

  /** Addresses remembered (tests, metrics). */
  get size(): number {
    return this.failures.size;
  }

  private recent(address: string, now: number): number[] {
    const times = this.failures.get(address) ?? [];
    const from = now - this.limits.windowMs;
    let drop = 0;
    while (drop < times.length && times[drop]! <= from) drop++;
    if (drop > 0) times.splice(0, drop);
    return times;
  }
}
