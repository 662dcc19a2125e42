/** Polling for what a test waits on (a delivery, a settled record, a report): every 50 ms until a value or the deadline. */

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The first value `fn` gives that is neither undefined nor false; throws naming `what` after `ms`. */
export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 25_000): Promise<T> {
  for (const end = Date.now() + ms; ; await sleep(50)) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
  }
}
