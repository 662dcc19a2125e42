/**
 * Redis restarts under load (issue 8, item 2): a private redis-server (AOF,
 * `appendfsync always`) is stopped mid-flow — SIGTERM and SIGKILL in turn — kept
 * down for a random 1–3 s (seeded) and started again on the same port and data
 * dir, while clients push M messages with R recipients each through one relay
 * (`node bin/drucof-relay.js start`). The relay is never restarted: it must
 * recover by itself. Checked:
 *
 * - no accepted message is lost (every (message, recipient) whose 250 was read
 *   reaches the sink, and the queue drains);
 * - every 250 names a message that is in Redis afterwards (its hash outlives the
 *   delivery by `queue.keepFinished`);
 * - clients connecting or sending during an outage get `451 4.3.0` (at MAIL, RCPT,
 *   DATA or after the data), never a dropped connection or another refusal.
 *
 * A client pauses 200 ms after a refusal (as a real one backs off; it does not
 * resend: a refused message is simply counted).
 *
 *   node --import tsx test/faults/redis-restart.ts [--messages 5000] [--recipients 3] [--sessions 8]
 *        [--restarts 6] [--rate MSG/S] [--down 1000-3000] [--size 2048] [--timeout 150] [--seed N]
 *
 * Prints `accepted=… delivered=… lost=… (must be 0) duplicated=… (x.xx%) restarts=…
 * 451s=… other-refusals=… dropped=… (must be 0) not-stored=… (must be 0)` and a detail
 * line; exits 1 on a loss, a 250 not stored, a dropped connection or a refusal
 * other than 451 4.3.0.
 */
import { pathToFileURL } from 'node:url';
import { scriptArgs } from '../../bench/script-args.ts';
import { children, startRelayChild, type RelayChild } from '../../bench/relay-child.ts';
import { detailLine, duplicateTimingLine, runUnderFaults, startFaultBed, type FaultTally } from '../../bench/no-loss.ts';
import { seededRandom } from '../helpers/random.ts';

export interface RedisRestartOptions {
  readonly messages?: number;
  readonly recipients?: number;
  readonly sessions?: number;
  readonly restarts?: number;
  readonly bodySize?: number;
  /** Outage per restart: a random duration in [min, max] ms (default 1000–3000). */
  readonly downMs?: readonly [number, number];
  /** Messages per second offered; default: paced so the load lasts ~4 s per restart. */
  readonly ratePerSec?: number;
  readonly settleTimeoutMs?: number;
  readonly seed?: number;
  readonly log?: (line: string) => void;
}

export interface RedisRestartResult extends FaultTally {
  readonly restarts: number;
  /** Refusals with 451 4.3.0 (Redis unavailable), and any other refusal (must be 0). */
  readonly refused451: number;
  readonly otherRefusals: number;
  /** True when every check held. */
  readonly ok: boolean;
  readonly line: string;
  readonly detail: string;
}

export async function runRedisRestart(o: RedisRestartOptions = {}): Promise<RedisRestartResult> {
  const messages = o.messages ?? 5000;
  const recipients = o.recipients ?? 3;
  const sessions = o.sessions ?? 8;
  const restarts = o.restarts ?? 6;
  const [downMin, downMax] = o.downMs ?? [1000, 3000];
  const rate = o.ratePerSec ?? Math.max(20, Math.round(messages / (restarts * 4)));
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const seed = o.seed ?? Date.now() % 1_000_000;
  const bed = await startFaultBed({ tag: 'redisrestart', appendfsync: 'always' });
  let relay: RelayChild | undefined;
  try {
    relay = await startRelayChild(bed.relayOpts);
    const r = relay;
    const t = await runUnderFaults(bed, {
      port: r.port,
      messages,
      recipients,
      sessions,
      bodySize: o.bodySize ?? 2048,
      ratePerSec: rate,
      refusedPauseMs: 200,
      faults: restarts,
      random: seededRandom(seed),
      settleTimeoutMs: o.settleTimeoutMs ?? 150_000,
      log,
      title:
        `redis-restart: ${messages} messages × ${recipients} recipients offered at ${rate}/s by ${sessions} sessions to one relay (start), ` +
        `${restarts} restarts of redis-server (SIGTERM and SIGKILL in turn, down ${downMin}–${downMax} ms; AOF appendfsync always); seed ${seed}`,
      inject: async (k, random) => {
        const signal = k % 2 === 0 ? 'SIGTERM' : 'SIGKILL';
        const down = Math.round(downMin + random() * (downMax - downMin));
        const { downMs } = await bed.redis.restart({ signal, downMs: down });
        if (r.exited()) throw new Error(`the relay died (${r.exited()}):\n${r.output().slice(-3000)}`);
        return `redis ${signal}, down ${down} ms, answering again after ${downMs} ms (pid ${bed.redis.pid})`;
      },
    });
    const refused451 = Object.entries(t.refusedByCode)
      .filter(([c]) => c === '451 4.3.0')
      .reduce((n, [, v]) => n + v, 0);
    const otherRefusals = t.refused - refused451;
    const dropped = t.dropped + t.connectFailures + t.closedWith421;
    const relayDied = r.exited();
    const ok = t.lost === 0 && t.notStored === 0 && dropped === 0 && otherRefusals === 0 && !relayDied && t.faults === restarts;
    const line =
      `accepted=${t.accepted} delivered=${t.delivered} lost=${t.lost} (must be 0) duplicated=${t.duplicated} (${t.duplicatedPct.toFixed(2)}%) ` +
      `restarts=${t.faults} 451s=${refused451} other-refusals=${otherRefusals} dropped=${dropped} (must be 0) not-stored=${t.notStored} (must be 0)`;
    const detail =
      `${detailLine(t)}; dropped connections ${t.dropped}, failed connects ${t.connectFailures}, closed with 421 ${t.closedWith421}; ` +
      `relay ${relayDied ? `DIED (${relayDied})` : 'still running (never restarted)'}`;
    log(detail);
    const timing = duplicateTimingLine(t);
    if (timing) log(timing);
    if (!ok) {
      if (t.lostSamples.length > 0) log(`  lost, e.g.:\n    ${t.lostSamples.join('\n    ')}`);
      log(`  relay output (tail):\n${r.output().slice(-4000)}`);
    }
    log(line);
    return { ...t, restarts: t.faults, refused451, otherRefusals, dropped, ok, line, detail };
  } finally {
    await relay?.stop().catch(() => null);
    await bed.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const a = scriptArgs(
    'redis-restart.ts',
    'node --import tsx test/faults/redis-restart.ts [--messages 5000] [--recipients 3] [--sessions 8] [--restarts 6]\n' +
      '    [--rate MSG/S] [--down 1000-3000 (ms)] [--size 2048] [--timeout 150] [--seed N]',
    {
      messages: { type: 'string', default: '5000' },
      recipients: { type: 'string', default: '3' },
      sessions: { type: 'string', default: '8' },
      restarts: { type: 'string', default: '6' },
      rate: { type: 'string' },
      down: { type: 'string', default: '1000-3000' },
      size: { type: 'string', default: '2048' },
      timeout: { type: 'string', default: '150' },
      seed: { type: 'string' },
    },
  );
  children.installExitHandlers();
  const r = await runRedisRestart({
    messages: Number(a.messages),
    recipients: Number(a.recipients),
    sessions: Number(a.sessions),
    restarts: Number(a.restarts),
    ...(a.rate && { ratePerSec: Number(a.rate) }),
    downMs: ((): [number, number] => {
      const [lo, hi = lo] = a.down.split('-').map(Number);
      if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new Error(`--down MIN-MAX (ms): ${a.down}?`);
      return [lo!, hi!];
    })(),
    bodySize: Number(a.size),
    settleTimeoutMs: Number(a.timeout) * 1000,
    ...(a.seed && { seed: Number(a.seed) }),
  });
  process.exit(r.ok ? 0 : 1);
}
