/**
 * "A 250 is a promise" (architecture.md, Durability rule): the relay is killed
 * with SIGKILL twice while clients push mail, restarted at once on the same port,
 * and every message whose 250 the client read must reach the next hop for every
 * recipient. Duplicates are allowed (a delivery whose outcome was not yet
 * recorded is sent again) and only logged. The full-size run is bench/no-loss.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { children } from '../../bench/relay-child.ts';
import { runNoLoss } from '../../bench/no-loss.ts';

afterAll(() => children.killAll());

describe('no loss under kill -9', () => {
  it('delivers every accepted message to every recipient across two kill -9 restarts', async () => {
    const lines: string[] = [];
    const r = await runNoLoss({
      messages: 600,
      recipients: 2,
      sessions: 6,
      kills: 2,
      bodySize: 2048,
      settleTimeoutMs: 110_000,
      log: (l) => lines.push(l),
    });
    console.log(lines.join('\n'));
    expect(r.kills).toBe(2);
    expect(r.accepted).toBeGreaterThan(400);
    expect(r.unknownAtSink).toBe(0);
    expect(r.lostSamples).toEqual([]);
    expect(r.lost).toBe(0);
  }, 180_000);
});
