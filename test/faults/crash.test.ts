/**
 * Issue 8 item 1, small: a split relay (`listen` + `work` processes) while 600
 * messages × 3 recipients flow; the worker, the listener, both, and the worker
 * again are killed with SIGKILL at seeded moments and restarted at once. Every
 * message whose 250 was read must reach the next hop for every recipient and the
 * queue must drain (a killed worker's jobs come back after their lock expires).
 * The next hop takes 200 ms per message, so each worker kill strands deliveries in
 * flight. Duplicates are allowed and only logged. The full-size run is
 * test/faults/crash.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { children } from '../../bench/relay-child.ts';
import { runCrash } from './crash.ts';

afterAll(() => children.killAll());

describe('crash faults on a split relay', () => {
  it('loses nothing across kill -9 of the worker, the listener and both', async () => {
    const lines: string[] = [];
    const r = await runCrash({
      messages: 600,
      recipients: 3,
      sessions: 6,
      kills: 4,
      targets: ['worker', 'listener', 'both'],
      ratePerSec: 50,
      hopDelayMs: 200,
      settleTimeoutMs: 60_000,
      seed: 8,
      log: (l) => lines.push(l),
    });
    console.log(lines.join('\n'));
    expect(r.kills).toBe(4);
    expect(r.killed).toEqual({ worker: 2, listener: 1, both: 1 });
    expect(r.accepted).toBeGreaterThan(450);
    expect(r.unknownAtSink).toBe(0);
    expect(r.notStored).toBe(0);
    expect(r.lostSamples).toEqual([]);
    expect(r.lost).toBe(0);
    expect(r.queueDrained).toBe(true);
  }, 120_000);
});
