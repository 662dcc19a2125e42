/**
 * The SMTP dialogue fuzzer (fuzz-smtp.ts), small: ~5,000 seeded sessions against
 * one relay process (real Redis prefix, a sink as next hop). Every reply well
 * formed (syntax, CRLF, ≤ 512 octets, enhanced codes of the right class, one
 * reply per command, no reply without one but the greeting and 421), the process
 * alive with the same PID at the end and exiting 0 on SIGTERM, RSS not growing
 * past the limit, everything accepted delivered. The full run (100,000 sessions)
 * is the script: `node --import tsx test/faults/fuzz-smtp.ts`.
 */
import { describe, expect, it } from 'vitest';
import { formatReport, fuzzRelay } from './fuzz-smtp.ts';

const SESSIONS = 5000;
const SEED = Number(process.env.FUZZ_SEED ?? 20261124);
const CONCURRENCY = 48;

describe('SMTP dialogue fuzzer (small)', () => {
  it(`${SESSIONS} sessions: the relay survives, every reply is well formed, accepted mail flows`, async () => {
    const report = await fuzzRelay({ sessions: SESSIONS, seed: SEED, concurrency: CONCURRENCY, timeBudgetMs: 70_000 });
    const lines = formatReport(report, { seed: SEED, concurrency: CONCURRENCY });
    const shown = report.stats.violations
      .slice(0, 3)
      .map((v) => `session ${v.session} (replay: node --import tsx test/faults/fuzz-smtp.ts --seed ${SEED} --only ${v.session}): ${v.kind}: ${v.detail}\n${v.transcript}`);
    console.log(lines.join('\n'));
    expect(report.failures, [...lines, ...shown, ...report.errorLogs].join('\n')).toEqual([]);
    // Shared machines are slow at times: the time budget may cut the run, never below this.
    expect(report.stats.sessionsRun).toBeGreaterThan(1000);
    expect(report.alive).toBe(true);
    expect(report.exitCode).toBe(0);
    expect(report.stats.accepted).toBeGreaterThan(0);
    expect(report.sinkMessages).toBeGreaterThan(0);
    expect(report.queueLeft).toBe(0);
  }, 150_000);
});
