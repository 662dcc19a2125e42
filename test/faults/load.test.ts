/**
 * Issue 8 item 7, small: the sustained-load script end to end — the maximum
 * measured by a closed-loop probe, then a paced load at 80 % of it through one
 * relay process, sampled per interval (rates, acceptance latency, the relay's
 * RSS, backlog, queue depth from the relay's /metrics), then the drain. Nothing
 * may be lost, refused or duplicated and the queue must drain; how stable the
 * latency and RSS stay is a measurement (`npm run bench:load`, 10 minutes), not
 * a timed assertion on a shared machine.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { children } from '../../bench/relay-child.ts';
import { runSustainedLoad } from '../../bench/load.ts';

afterAll(() => children.killAll());

describe('sustained load', () => {
  it('carries 80 % of the measured maximum for 20 s and drains with nothing lost', async () => {
    const lines: string[] = [];
    const r = await runSustainedLoad({ seconds: 20, intervalSeconds: 5, probeMessages: 1500, recipients: 2, log: (l) => lines.push(l) });
    console.log(lines.join('\n'));
    expect(r.maxPerSec).toBeGreaterThan(0);
    expect(r.ratePerSec).toBe(Math.round(r.maxPerSec! * 0.8));
    expect(r.accepted).toBe(Math.round(r.ratePerSec * 20));
    expect([r.refused, r.unacknowledged, r.lost, r.duplicated]).toEqual([0, 0, 0, 0]);
    expect(r.drained).toBe(true);
    expect(r.intervals.length).toBeGreaterThanOrEqual(4);
    for (const iv of r.intervals) {
      expect(iv.acceptedPerSec).toBeGreaterThan(0);
      expect(iv.p99Ms).toBeGreaterThanOrEqual(iv.p50Ms);
      expect(iv.rssMiB).toBeGreaterThan(20);
      expect(Number.isFinite(iv.queued)).toBe(true);
    }
    expect(r.line).toMatch(/^load: \d+ msg\/s \(80 % of the measured maximum \d+\) for \d+ s: accepted=\d+ refused=0 unacknowledged=0 lost=0 duplicated=0; .* drained=yes/);
  }, 180_000);
});
