/**
 * `npm run bench`: throughput, CPU and memory of drucof-relay under SMTP load.
 *
 * A private redis-server (AOF, appendfsync always unless --fsync everysec), a fast
 * raw-socket sink as the next hop, the relay as a child process started as a user
 * starts it. For each cell of {10 KB, 100 KB} × {1, 5 recipients}: 10 parallel
 * sessions push N messages; we measure accepted msg/s (first send → last 250),
 * end-to-end msg/s (first send → the sink has every recipient delivery), relay and
 * Redis CPU seconds per 1000 messages (/proc utime+stime deltas), the relay's peak
 * RSS (VmHWM), acceptance latency p50/p99 and Redis commands per message. Each
 * cell runs 3 times on a fresh relay; the table shows medians. JSON goes to
 * bench/results/<date>.json.
 *
 *   npm run bench -- [--quick] [--messages N] [--runs R] [--fsync always|everysec]
 *                    [--sessions S] [--concurrency C] [--connections K]
 *                    [--only 10k-1,100k-5] [--cpu-prof DIR]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { Redis } from 'ioredis';
import { scriptArgs } from './script-args.ts';
import { quantile, runLoad } from './client.ts';
import { startRedis, type AppendFsync } from './redis.ts';
import { children, cpuSeconds, machineBusySeconds, peakRssMiB, startRelayChild } from './relay-child.ts';
import { startSink } from './sink.ts';

const args = scriptArgs(
  'relay-bench.ts',
  'npm run bench -- [--quick] [--messages N] [--runs R] [--fsync always|everysec] [--sessions S]\n' +
    '                 [--concurrency C] [--connections K] [--only 10k-1,10k-5,100k-1,100k-5] [--cpu-prof DIR]',
  {
    quick: { type: 'boolean', default: false },
    messages: { type: 'string' },
    runs: { type: 'string', default: '3' },
    fsync: { type: 'string', default: 'always' },
    sessions: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '50' },
    connections: { type: 'string', default: '10' },
    only: { type: 'string' },
    'cpu-prof': { type: 'string' },
  },
);

const usageError = (why: string): never => {
  process.stderr.write(`relay-bench.ts: ${why}\n`);
  process.exit(2);
};
if (!['always', 'everysec'].includes(args.fsync)) usageError(`--fsync must be always or everysec, not ${args.fsync}`);

interface Cell {
  readonly name: string;
  readonly bodySize: number;
  readonly recipients: number;
  readonly messages: number;
}

interface RunFigures {
  readonly accepted: number;
  readonly refused: number;
  readonly acceptedPerSec: number;
  readonly endToEndPerSec: number;
  readonly relayCpuPer1k: number;
  readonly redisCpuPer1k: number;
  readonly relayPeakRssMiB: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
  readonly redisCommandsPerMsg: number;
  readonly redisCommands: Record<string, number>;
  readonly missingDeliveries: number;
  readonly duplicateDeliveries: number;
  /** CPU seconds of this script (client + sink) per 1000 messages. */
  readonly benchCpuPer1k: number;
  /** Cores busy with processes other than relay, Redis and this script during the run (noise). */
  readonly otherLoadCores: number;
}

const FIGURES = [
  'acceptedPerSec', 'endToEndPerSec', 'relayCpuPer1k', 'redisCpuPer1k', 'relayPeakRssMiB',
  'latencyP50Ms', 'latencyP99Ms', 'redisCommandsPerMsg',
] as const;
type Figure = (typeof FIGURES)[number];

const REFERENCE = [
  'For scale (published figures, not measured here: end-to-end, fsynced queue, a 2-core machine):',
  '  Postfix 3.7   10 KB: ~430 msg/s   100 KB: ~280 msg/s',
  '  Haraka 3.3    10 KB: ~250 msg/s   100 KB: ~115 msg/s',
];

const runs = Math.max(1, Number(args.runs));
const sessions = Math.max(1, Number(args.sessions));
const count = (dflt: number) => (args.messages ? Number(args.messages) : args.quick ? 200 : dflt);
const ALL_CELLS: Cell[] = [
  { name: '10k-1', bodySize: 10 * 1024, recipients: 1, messages: count(2000) },
  { name: '10k-5', bodySize: 10 * 1024, recipients: 5, messages: count(2000) },
  { name: '100k-1', bodySize: 100 * 1024, recipients: 1, messages: count(1000) },
  { name: '100k-5', bodySize: 100 * 1024, recipients: 5, messages: count(1000) },
];
const unknownCells = (args.only?.split(',') ?? []).filter((n) => !ALL_CELLS.some((c) => c.name === n));
if (unknownCells.length > 0) usageError(`--only: no cell ${unknownCells.join(', ')} (cells: ${ALL_CELLS.map((c) => c.name).join(', ')})`);
const cells = ALL_CELLS.filter((c) => !args.only || args.only.split(',').includes(c.name));

const relayConfig = {
  queue: { concurrency: Number(args.concurrency), retrySchedule: ['1s'] },
  delivery: { connectionsPerHop: Number(args.connections) },
  log: { level: 'warn' },
};

children.installExitHandlers();
const runTag = `${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${process.pid}`;
const redis = await startRedis({ appendfsync: args.fsync as AppendFsync });
const sink = await startSink();
const redisVersion = (await redis.info('server'))['redis_version'] ?? '?';

process.stdout.write(
  `drucof-relay bench: ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, node ${process.version}, redis ${redisVersion} ` +
    `(AOF appendfsync ${redis.appendfsync}, data in ${redis.dir})\n` +
    `${sessions} sessions, ${runs} runs per cell (medians shown), relay ${JSON.stringify(relayConfig)}\n\n`,
);

const results: { cell: Cell; runs: RunFigures[]; median: Record<Figure, number> }[] = [];
try {
  for (const cell of cells) {
    const perRun: RunFigures[] = [];
    for (let rep = 0; rep < runs; rep++) {
      const f = await runOnce(cell, `${runTag}-${cell.name}-${rep}`);
      perRun.push(f);
      process.stdout.write(
        `  ${cell.name} run ${rep + 1}/${runs}: accepted ${f.acceptedPerSec.toFixed(0)} msg/s, end-to-end ${f.endToEndPerSec.toFixed(0)} msg/s, ` +
          `relay CPU ${f.relayCpuPer1k.toFixed(2)} s/1k, p99 ${f.latencyP99Ms.toFixed(0)} ms` +
          (f.otherLoadCores > 0.15 ? `  (noisy: other processes used ${f.otherLoadCores.toFixed(2)} cores)` : '') +
          (f.refused || f.missingDeliveries || f.duplicateDeliveries
            ? `  [refused ${f.refused}, missing ${f.missingDeliveries}, duplicate ${f.duplicateDeliveries}]`
            : '') +
          '\n',
      );
    }
    const median = Object.fromEntries(FIGURES.map((k) => [k, medianOf(perRun.map((r) => r[k]))])) as Record<Figure, number>;
    results.push({ cell, runs: perRun, median });
  }
} finally {
  await sink.close();
  await redis.stop();
}

const header = ['cell', 'msgs', 'accepted/s', 'e2e/s', 'relay cpu s/1k', 'redis cpu s/1k', 'relay rss MiB', 'p50 ms', 'p99 ms', 'redis cmds/msg'];
const rows = results.map(({ cell, median: m }) => [
  `${cell.bodySize / 1024} KB × ${cell.recipients} rcpt`,
  String(cell.messages),
  m.acceptedPerSec.toFixed(0),
  m.endToEndPerSec.toFixed(0),
  m.relayCpuPer1k.toFixed(2),
  m.redisCpuPer1k.toFixed(2),
  m.relayPeakRssMiB.toFixed(0),
  m.latencyP50Ms.toFixed(1),
  m.latencyP99Ms.toFixed(1),
  m.redisCommandsPerMsg.toFixed(1),
]);
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const fmt = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
process.stdout.write(`\n${fmt(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${rows.map(fmt).join('\n')}\n\n${REFERENCE.join('\n')}\n`);

mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
const out = new URL(`./results/${runTag}.json`, import.meta.url);
writeFileSync(
  out,
  JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, redis: redisVersion },
      options: { sessions, runs, appendfsync: redis.appendfsync, relayConfig, quick: args.quick },
      cells: results,
      reference: { postfix37: { '10k': 430, '100k': 280 }, haraka33: { '10k': 250, '100k': 115 } },
    },
    null,
    2,
  ),
);
process.stdout.write(`\nwritten: ${out.pathname}\n`);
process.exit(0);

/** One measured run on a fresh relay (new queue prefix, new process, so VmHWM is this run's). */
async function runOnce(cell: Cell, prefix: string): Promise<RunFigures> {
  const relay = await startRelayChild({
    smarthost: `127.0.0.1:${sink.port}`,
    redisUrl: redis.url,
    prefix,
    config: relayConfig,
    ...(args['cpu-prof'] && { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${args['cpu-prof']}`] }),
  });
  try {
    // Warm-up (JIT, connection pools), not measured.
    sink.reset();
    const warm = await runLoad({ port: relay.port, sessions, messages: 100, recipients: 1, bodySize: cell.bodySize, tag: `${prefix}-warm` });
    if (!(await sink.waitForDeliveries(warm.accepted.length, 60_000))) {
      throw new Error(`warm-up not delivered (relay ${relay.exited() ?? 'running'}):\n${relay.output().slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
    sink.reset();

    const died = () => {
      const how = relay.exited();
      if (how) throw new Error(`the relay died (${how}) during ${cell.name}:\n${relay.output().slice(-4000)}`);
    };
    died();
    const cpu0 = { relay: cpuSeconds(relay.pid), redis: cpuSeconds(redis.pid), self: selfCpu(), machine: machineBusySeconds(), at: performance.now() };
    const cmds0 = await redis.commandCalls();
    // A live count on a terminal (a cell takes tens of seconds); nothing when the output is redirected.
    const ticker = process.stderr.isTTY
      ? setInterval(() => process.stderr.write(`\r  ${cell.name}: ${sink.deliveries()} recipient deliveries so far`), 500)
      : undefined;
    const load = await runLoad({
      port: relay.port,
      sessions,
      messages: cell.messages,
      recipients: cell.recipients,
      bodySize: cell.bodySize,
      tag: prefix,
    });
    const expected = load.accepted.length * cell.recipients;
    const complete = await sink.waitForDeliveries(expected, 120_000);
    if (ticker) {
      clearInterval(ticker);
      process.stderr.write('\r\x1b[K');
    }
    const end = sink.lastDeliveryAt();
    // The figures of a run end when its work does: the last jobs are completed (outcomes
    // written, bodies dropped) a little after the sink took their messages.
    if (complete) await jobsDone(redis.url, prefix, 10_000);
    died();
    const cpu1 = { relay: cpuSeconds(relay.pid), redis: cpuSeconds(redis.pid), self: selfCpu(), machine: machineBusySeconds(), at: performance.now() };
    const ours = cpu1.relay - cpu0.relay + (cpu1.redis - cpu0.redis) + (cpu1.self - cpu0.self);
    const otherLoadCores = Math.max(0, (cpu1.machine - cpu0.machine - ours) / ((cpu1.at - cpu0.at) / 1000));
    const cmds1 = await redis.commandCalls();
    if (!complete) process.stderr.write(`  ! ${cell.name}: only ${sink.deliveries()}/${expected} deliveries within 120 s\n`);

    const redisCommands: Record<string, number> = {};
    let totalCmds = 0;
    for (const [k, v] of Object.entries(cmds1)) {
      const d = v - (cmds0[k] ?? 0);
      if (d > 0) {
        redisCommands[k] = d;
        if (k !== 'info') totalCmds += d;
      }
    }
    let missing = 0;
    let duplicate = 0;
    for (const m of load.accepted) {
      const got = sink.seen.get(m.messageId);
      for (const r of m.recipients) {
        const n = got?.get(r) ?? 0;
        if (n === 0) missing++;
        else if (n > 1) duplicate += n - 1;
      }
    }
    const n = load.accepted.length;
    return {
      accepted: n,
      refused: load.refused + load.unacknowledged,
      acceptedPerSec: n / (load.acceptWallMs / 1000),
      endToEndPerSec: n / ((end - load.startedAt) / 1000),
      relayCpuPer1k: ((cpu1.relay - cpu0.relay) / n) * 1000,
      redisCpuPer1k: ((cpu1.redis - cpu0.redis) / n) * 1000,
      relayPeakRssMiB: peakRssMiB(relay.pid),
      latencyP50Ms: quantile(load.latencies, 0.5),
      latencyP99Ms: quantile(load.latencies, 0.99),
      redisCommandsPerMsg: totalCmds / n,
      redisCommands,
      missingDeliveries: missing,
      duplicateDeliveries: duplicate,
      benchCpuPer1k: ((cpu1.self - cpu0.self) / n) * 1000,
      otherLoadCores,
    };
  } finally {
    await relay.stop();
    await redis.flushAll();
  }
}

/** Resolves once the relay's queue has no waiting or active job (or after `timeoutMs`). */
async function jobsDone(url: string, prefix: string, timeoutMs: number): Promise<void> {
  const r = new Redis(url);
  try {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const [wait, active] = await Promise.all([r.llen(`${prefix}:deliver:wait`), r.llen(`${prefix}:deliver:active`)]);
      if (wait + active === 0) return;
      await new Promise((res) => setTimeout(res, 20));
    }
  } finally {
    r.disconnect();
  }
}

/** This script's own CPU seconds (client + sink). */
function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function medianOf(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
