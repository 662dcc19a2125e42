/**
 * Crash faults on a split relay (issue 8, item 1): a `listen` process and a `work`
 * process (`node bin/drucof-relay.js listen|work`, same Redis and prefix) while
 * clients push M messages with R recipients each. At seeded random moments the
 * worker, then the listener, then both are killed with SIGKILL (and so on, in
 * that order) and restarted at once. Clients reconnect and carry on; a message
 * counts as accepted only when its 250 was read. Afterwards we wait, bounded, for
 * every accepted (message, recipient) at the sink and an empty queue — a job
 * active in a killed worker is re-run once its BullMQ lock (30 s) expired and a
 * stalled check saw it — then count.
 *
 *   node --import tsx test/faults/crash.ts [--messages 5000] [--recipients 3] [--sessions 8]
 *                                         [--kills 12] [--size 2048] [--timeout 150] [--seed N]
 *                                         [--rate MSG/S] [--concurrency 50] [--connections 10] [--hop-delay MS] [--targets worker,listener,both] [--window]
 *
 * Prints `accepted=… delivered=… lost=… (must be 0) duplicated=… (x.xx%; goal < 0.1%) kills=…`
 * and a detail line; exits 1 on any loss (or a 250 without a stored message).
 */
import { pathToFileURL } from 'node:url';
import { scriptArgs } from '../../bench/script-args.ts';
import { children, startRelayChild, type RelayChild } from '../../bench/relay-child.ts';
import { detailLine, duplicateTimingLine, runUnderFaults, startFaultBed, windowLine, type FaultTally } from '../../bench/no-loss.ts';
import { seededRandom } from '../helpers/random.ts';

export type CrashTarget = 'worker' | 'listener' | 'both';

export interface CrashOptions {
  readonly messages?: number;
  readonly recipients?: number;
  readonly sessions?: number;
  readonly kills?: number;
  readonly bodySize?: number;
  /** What the kills hit, in turn (default worker, listener, both). */
  readonly targets?: readonly CrashTarget[];
  readonly settleTimeoutMs?: number;
  /**
   * Messages per second offered (over all sessions). Default: paced so the load
   * lasts about 2.5 s per kill — unpaced, 5,000 messages are in within ~15 s, too
   * short for a dozen kills each followed by a restart of a second or two.
   */
  readonly ratePerSec?: number;
  /** The next hop takes each message this long after its data (default 0: at once). */
  readonly hopDelayMs?: number;
  /** `queue.concurrency` of the worker (default 50, as the bench). */
  readonly concurrency?: number;
  /** `delivery.connectionsPerHop` of the worker (default 10, as the bench). */
  readonly connectionsPerHop?: number;
  readonly seed?: number;
  /** Also measure the duplicate window (see FaultRunOptions.measureWindow). */
  readonly measureWindow?: boolean;
  readonly log?: (line: string) => void;
}

export interface CrashResult extends FaultTally {
  readonly kills: number;
  /** Kills per target. */
  readonly killed: Readonly<Record<CrashTarget, number>>;
  readonly line: string;
  readonly detail: string;
}

export async function runCrash(o: CrashOptions = {}): Promise<CrashResult> {
  const messages = o.messages ?? 5000;
  const recipients = o.recipients ?? 3;
  const sessions = o.sessions ?? 8;
  const kills = o.kills ?? 12;
  const targets = o.targets ?? (['worker', 'listener', 'both'] as const);
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const seed = o.seed ?? Date.now() % 1_000_000;
  const rate = o.ratePerSec ?? Math.max(20, Math.round(messages / (kills * 2.5)));
  const concurrency = o.concurrency ?? 50;
  const hopDelayMs = o.hopDelayMs ?? 0;
  const connectionsPerHop = o.connectionsPerHop ?? 10;
  const bed = await startFaultBed({
    tag: 'crash',
    hopDelayMs,
    config: { queue: { concurrency, retrySchedule: ['1s'] }, delivery: { connectionsPerHop } },
  });
  const outputs: string[] = [];
  let listener: RelayChild | undefined;
  let worker: RelayChild | undefined;
  const killed: Record<CrashTarget, number> = { worker: 0, listener: 0, both: 0 };
  try {
    [listener, worker] = await Promise.all([
      startRelayChild({ ...bed.relayOpts, command: 'listen' }),
      startRelayChild({ ...bed.relayOpts, command: 'work' }),
    ]);
    const port = listener.port;
    const httpPort = worker.port;
    /** kill -9 the given halves at the same moment, then start them again at once; resolves when they are back. */
    const killAndRestart = async (which: readonly ('listen' | 'work')[]): Promise<string> => {
      const old = which.map((w) => (w === 'listen' ? listener! : worker!));
      await Promise.all(old.map((c) => c.kill9()));
      for (const c of old) outputs.push(`[${c.command} pid ${c.pid}]\n${c.output()}`);
      const t0 = Date.now();
      const fresh = await Promise.all(
        which.map((w) => startRelayChild({ ...bed.relayOpts, command: w, ...(w === 'listen' ? { port } : { httpPort }) })),
      );
      fresh.forEach((c) => (c.command === 'listen' ? (listener = c) : (worker = c)));
      const ms = Date.now() - t0;
      return which.map((w, i) => `${w === 'listen' ? 'listener' : 'worker'} ${old[i]!.pid} → ${fresh[i]!.pid}`).join(', ') + ` (back in ${ms} ms)`;
    };
    const t = await runUnderFaults(bed, {
      port,
      messages,
      recipients,
      sessions,
      bodySize: o.bodySize ?? 2048,
      ratePerSec: rate,
      measureWindow: o.measureWindow ?? false,
      faults: kills,
      random: seededRandom(seed),
      settleTimeoutMs: o.settleTimeoutMs ?? 150_000,
      log,
      title:
        `crash: ${messages} messages × ${recipients} recipients offered at ${rate}/s by ${sessions} sessions, ${kills} kill -9 (${targets.join(', ')}, in turn) ` +
        `of a split relay (listen + work, queue.concurrency ${concurrency}, delivery.connectionsPerHop ${connectionsPerHop}); next hop answers after ${hopDelayMs} ms; redis AOF appendfsync always; seed ${seed}`,
      inject: async (k) => {
        const target = targets[k % targets.length]!;
        killed[target]++;
        return `kill -9 ${target}: ${await killAndRestart(target === 'both' ? ['work', 'listen'] : target === 'worker' ? ['work'] : ['listen'])}`;
      },
    });
    const line =
      `accepted=${t.accepted} delivered=${t.delivered} lost=${t.lost} (must be 0) ` +
      `duplicated=${t.duplicated} (${t.duplicatedPct.toFixed(2)}%; goal < 0.1%) kills=${t.faults}`;
    const detail =
      `${detailLine(t)}; kills: worker ${killed.worker}, listener ${killed.listener}, both ${killed.both}; ` +
      `dropped connections ${t.dropped}, failed connects ${t.connectFailures}`;
    log(detail);
    for (const extra of [duplicateTimingLine(t), windowLine(t)]) if (extra) log(extra);
    if (t.lost > 0 || t.notStored > 0) {
      log(`  lost, e.g.:\n    ${t.lostSamples.join('\n    ')}`);
      for (const c of [listener, worker]) if (c) outputs.push(`[${c.command} pid ${c.pid}, last]\n${c.output()}`);
      log(`  relay output (tails):\n${outputs.slice(-4).map((x) => x.slice(-2000)).join('\n')}`);
    }
    log(line);
    return { ...t, kills: t.faults, killed, line, detail };
  } finally {
    await Promise.all([listener?.stop().catch(() => null), worker?.stop().catch(() => null)]);
    await bed.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const a = scriptArgs(
    'crash.ts',
    'node --import tsx test/faults/crash.ts [--messages 5000] [--recipients 3] [--sessions 8] [--kills 12] [--size 2048]\n' +
      '    [--timeout 150] [--seed N] [--rate MSG/S] [--concurrency 50] [--connections 10] [--hop-delay MS]\n' +
      '    [--targets worker,listener,both] [--window]',
    {
      messages: { type: 'string', default: '5000' },
      recipients: { type: 'string', default: '3' },
      sessions: { type: 'string', default: '8' },
      kills: { type: 'string', default: '12' },
      rate: { type: 'string' },
      concurrency: { type: 'string', default: '50' },
      connections: { type: 'string', default: '10' },
      'hop-delay': { type: 'string', default: '0' },
      window: { type: 'boolean', default: false },
      targets: { type: 'string', default: 'worker,listener,both' },
      size: { type: 'string', default: '2048' },
      timeout: { type: 'string', default: '150' },
      seed: { type: 'string' },
    },
  );
  children.installExitHandlers();
  const seed = a.seed ? Number(a.seed) : Date.now() % 1_000_000;
  const r = await runCrash({
    messages: Number(a.messages),
    recipients: Number(a.recipients),
    sessions: Number(a.sessions),
    kills: Number(a.kills),
    ...(a.rate && { ratePerSec: Number(a.rate) }),
    concurrency: Number(a.concurrency),
    connectionsPerHop: Number(a.connections),
    hopDelayMs: Number(a['hop-delay']),
    measureWindow: a.window,
    targets: a.targets.split(',').map((t) => {
      if (t !== 'worker' && t !== 'listener' && t !== 'both') throw new Error(`--targets: ${t}? (worker, listener, both)`);
      return t;
    }),
    bodySize: Number(a.size),
    settleTimeoutMs: Number(a.timeout) * 1000,
    seed,
  });
  process.exit(r.lost > 0 || r.notStored > 0 || r.kills < Number(a.kills) ? 1 : 0);
}
