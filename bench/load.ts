/**
 * `npm run bench:load` — sustained load (issue 8, item 7): first the maximum
 * end-to-end throughput is measured (closed loop, as fast as the relay takes
 * and delivers mail), then the relay carries a paced load at a fraction of it
 * (default 80 %) for a fixed time (default 10 minutes). Per interval: offered,
 * accepted and delivered msg/s, acceptance latency p50/p99, the relay's RSS and
 * the backlog (recipient deliveries accepted but not yet at the next hop).
 * Afterwards the queue must drain, every accepted recipient delivery arrive
 * exactly once, and we judge stability: p99 of the last intervals against the
 * first, RSS growth over the second half, drain time.
 *
 * The relay runs as users run it (`start`, one process), against a private
 * redis-server (AOF, `appendfsync always` unless --fsync everysec) and the raw
 * sink in a process of its own, all on loopback.
 *
 *   npm run bench:load -- [--minutes 10] [--fraction 0.8 | --rate MSG/S] [--probe-messages 8000]
 *                         [--size 10240] [--recipients 1] [--sessions 10] [--interval 60] [--fsync always]
 *
 * Prints a table and `load: … lost=0 duplicated=0 drained=yes` ; exits 1 on a
 * loss, a duplicate, a refusal or a queue that did not drain.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { scriptArgs } from './script-args.ts';
import { quantile, runLoad, type MessageOutcome } from './client.ts';
import { startRedis, type AppendFsync, type PrivateRedis } from './redis.ts';
import { children, peakRssMiB, startRelayChild, type RelayChild } from './relay-child.ts';
import { startSink, type Sink } from './sink.ts';
import { freePort } from '../test/helpers/ports.ts';

export interface LoadRunOptions {
  /** How long the paced load lasts, seconds (default 600). */
  readonly seconds?: number;
  /** Offered rate as a fraction of the measured maximum (default 0.8); ignored with `rate`. */
  readonly fraction?: number;
  /** Offer exactly this many msg/s instead of measuring the maximum. */
  readonly rate?: number;
  /** Messages of the closed-loop probe that measures the maximum (default 8000). */
  readonly probeMessages?: number;
  readonly bodySize?: number;
  readonly recipients?: number;
  readonly sessions?: number;
  /** Length of one reporting interval, seconds (default 60). */
  readonly intervalSeconds?: number;
  readonly appendfsync?: AppendFsync;
  /** Bound on the wait for the queue to drain after the load, seconds (default 120). */
  readonly drainTimeoutSeconds?: number;
  readonly log?: (line: string) => void;
}

export interface Interval {
  /** End of the interval, seconds since the paced load began. */
  readonly t: number;
  readonly offeredPerSec: number;
  readonly acceptedPerSec: number;
  readonly deliveredPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly rssMiB: number;
  /** Recipient deliveries accepted but not yet at the next hop, at the end of the interval. */
  readonly backlog: number;
  /** Jobs waiting, active or delayed in the relay's queue (its /metrics), at the end of the interval. */
  readonly queued: number;
}

export interface LoadRunResult {
  readonly maxPerSec: number | undefined;
  readonly ratePerSec: number;
  readonly seconds: number;
  readonly intervals: readonly Interval[];
  readonly accepted: number;
  readonly refused: number;
  readonly unacknowledged: number;
  readonly lost: number;
  readonly duplicated: number;
  readonly drained: boolean;
  /** Seconds from the last 250 until every accepted delivery was at the sink and the queue empty. */
  readonly drainSeconds: number;
  /** p99 of the last third of the intervals ÷ p99 of the first third. */
  readonly p99Drift: number;
  readonly p50Drift: number;
  /** RSS at the end of the load minus RSS halfway through, MiB. */
  readonly rssGrowthSecondHalfMiB: number;
  readonly peakRssMiB: number;
  readonly line: string;
}

const QUEUE_STATES = ['waiting', 'active', 'delayed'];

export async function runSustainedLoad(o: LoadRunOptions = {}): Promise<LoadRunResult> {
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const seconds = o.seconds ?? 600;
  const sessions = o.sessions ?? 10;
  const recipients = o.recipients ?? 1;
  const bodySize = o.bodySize ?? 10 * 1024;
  const intervalSeconds = o.intervalSeconds ?? 60;
  const tag = `load-${process.pid}-${Date.now().toString(36)}`;
  const redis = await startRedis({ appendfsync: o.appendfsync ?? 'always' });
  let sink: Sink | undefined;
  let relay: RelayChild | undefined;
  try {
    sink = await startSink({ ownProcess: true });
    const httpPort = await freePort();
    relay = await startRelayChild({
      smarthost: `127.0.0.1:${sink.port}`,
      redisUrl: redis.url,
      prefix: tag,
      config: {
        queue: { concurrency: 50, retrySchedule: ['1s'] },
        delivery: { connectionsPerHop: 10 },
        http: { listen: `127.0.0.1:${httpPort}` },
        log: { level: 'warn' },
      },
    });
    const r = relay;
    const s = sink;
    log(
      `sustained load, ${bodySize / 1024} KB × ${recipients} rcpt, ${sessions} sessions, relay pid ${r.pid} (start), ` +
        `redis AOF appendfsync ${redis.appendfsync}, sink in its own process`,
    );

    const warm = await runLoad({ port: r.port, sessions, messages: 200, recipients, bodySize, tag: `${tag}-warm` });
    await s.waitForDeliveries(warm.accepted.length * recipients, 60_000);

    let maxPerSec: number | undefined;
    let rate = o.rate;
    if (rate === undefined) {
      const n = o.probeMessages ?? 8000;
      s.reset();
      const probe = await runLoad({ port: r.port, sessions, messages: n, recipients, bodySize, tag: `${tag}-probe` });
      if (!(await s.waitForDeliveries(probe.accepted.length * recipients, 120_000))) throw new Error('the probe load was not delivered within 120 s');
      maxPerSec = probe.accepted.length / ((s.lastDeliveryAt() - probe.startedAt) / 1000);
      rate = Math.max(1, Math.round(maxPerSec * (o.fraction ?? 0.8)));
      log(
        `maximum: ${n} messages closed-loop: accepted ${(probe.accepted.length / (probe.acceptWallMs / 1000)).toFixed(0)} msg/s, ` +
          `end-to-end ${maxPerSec.toFixed(0)} msg/s → offering ${rate} msg/s (${Math.round((o.fraction ?? 0.8) * 100)} %) for ${seconds} s`,
      );
    } else log(`offering ${rate} msg/s for ${seconds} s`);
    await settle(r, httpPort, s, 0, 60_000);

    s.reset();
    const messages = Math.round(rate * seconds);
    const bucket = { accepted: 0, latencies: [] as number[] };
    let acceptedTotal = 0;
    let offered = 0;
    // Only what the final count needs: which recipients of which message were promised.
    const promised: [string, readonly string[]][] = [];
    const onOutcome = (m: MessageOutcome) => {
      offered++;
      if (m.status !== 'accepted') return;
      acceptedTotal++;
      promised.push([m.messageId, m.recipients]);
      bucket.accepted++;
      bucket.latencies.push(m.latencyMs!);
    };
    const intervals: Interval[] = [];
    const began = performance.now();
    let last = { at: began, offered: 0, delivered: 0 };
    // The figures are taken synchronously (so a tick and the final cut never count one
    // span twice); only the queue depth is read afterwards.
    const cut = async () => {
      const at = performance.now();
      const delivered = s.deliveries();
      const lat = bucket.latencies.sort((a, b) => a - b);
      const dt = (at - last.at) / 1000;
      const figures = {
        t: Math.round((at - began) / 1000),
        offeredPerSec: (offered - last.offered) / dt,
        acceptedPerSec: bucket.accepted / dt,
        deliveredPerSec: (delivered - last.delivered) / recipients / dt,
        p50Ms: quantile(lat, 0.5),
        p99Ms: quantile(lat, 0.99),
        rssMiB: rssMiB(r.pid),
        backlog: acceptedTotal * recipients - delivered,
      };
      bucket.accepted = 0;
      bucket.latencies = [];
      last = { at, offered, delivered };
      const iv: Interval = { ...figures, queued: await queuedJobs(httpPort).catch(() => NaN) };
      intervals.push(iv);
      log(row(iv));
    };
    log(HEADER);
    const ticker = setInterval(() => void cut(), intervalSeconds * 1000);
    let load;
    try {
      load = await runLoad({ port: r.port, sessions, messages, recipients, bodySize, tag, ratePerSec: rate, keepOutcomes: false, onOutcome });
    } finally {
      clearInterval(ticker);
    }
    if ((performance.now() - last.at) / 1000 > intervalSeconds / 4) await cut();
    const loadEnd = performance.now();

    const expected = acceptedTotal * recipients;
    const drained = await settle(r, httpPort, s, expected, (o.drainTimeoutSeconds ?? 120) * 1000);
    const drainSeconds = (Math.max(s.lastDeliveryAt(), load.lastAcceptedAt) - load.lastAcceptedAt) / 1000;
    const died = r.exited();
    if (died) throw new Error(`the relay died (${died}) under load:\n${r.output().slice(-4000)}`);

    let lost = 0;
    let duplicated = 0;
    for (const [id, rcpts] of promised) {
      const got = s.seen.get(id);
      for (const rcpt of rcpts) {
        const n = got?.get(rcpt) ?? 0;
        if (n === 0) lost++;
        else duplicated += n - 1;
      }
    }

    const third = Math.max(1, Math.floor(intervals.length / 3));
    const head = intervals.slice(0, third);
    const tail = intervals.slice(-third);
    const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const p99Drift = mean(tail.map((i) => i.p99Ms)) / mean(head.map((i) => i.p99Ms));
    const p50Drift = mean(tail.map((i) => i.p50Ms)) / mean(head.map((i) => i.p50Ms));
    const mid = intervals[Math.floor((intervals.length - 1) / 2)]!;
    const rssGrowthSecondHalfMiB = intervals.at(-1)!.rssMiB - mid.rssMiB;
    const peak = peakRssMiB(r.pid);
    const line =
      `load: ${rate} msg/s${maxPerSec ? ` (${Math.round((rate / maxPerSec) * 100)} % of the measured maximum ${maxPerSec.toFixed(0)})` : ''} for ${Math.round((loadEnd - began) / 1000)} s: ` +
      `accepted=${acceptedTotal} refused=${load.refused} unacknowledged=${load.unacknowledged} lost=${lost} duplicated=${duplicated}; ` +
      `p50 ${mean(head.map((i) => i.p50Ms)).toFixed(1)} → ${mean(tail.map((i) => i.p50Ms)).toFixed(1)} ms, p99 ${mean(head.map((i) => i.p99Ms)).toFixed(1)} → ${mean(tail.map((i) => i.p99Ms)).toFixed(1)} ms (first → last third); ` +
      `rss ${intervals[0]!.rssMiB.toFixed(0)} → ${mid.rssMiB.toFixed(0)} → ${intervals.at(-1)!.rssMiB.toFixed(0)} MiB (peak ${peak.toFixed(0)}); ` +
      `drained=${drained ? 'yes' : 'no'} in ${drainSeconds.toFixed(2)} s`;
    log(line);
    return {
      maxPerSec,
      ratePerSec: rate,
      seconds: (loadEnd - began) / 1000,
      intervals,
      accepted: acceptedTotal,
      refused: load.refused,
      unacknowledged: load.unacknowledged,
      lost,
      duplicated,
      drained,
      drainSeconds,
      p99Drift,
      p50Drift,
      rssGrowthSecondHalfMiB,
      peakRssMiB: peak,
      line,
    };
  } finally {
    await relay?.stop();
    await sink?.close();
    await redis.stop();
  }
}

const HEADER = `${'t s'.padStart(6)} ${'offered/s'.padStart(10)} ${'accepted/s'.padStart(10)} ${'delivered/s'.padStart(11)} ${'p50 ms'.padStart(7)} ${'p99 ms'.padStart(7)} ${'rss MiB'.padStart(8)} ${'backlog'.padStart(8)} ${'queued'.padStart(7)}`;

function row(i: Interval): string {
  return (
    `${String(i.t).padStart(6)} ${i.offeredPerSec.toFixed(0).padStart(10)} ${i.acceptedPerSec.toFixed(0).padStart(10)} ${i.deliveredPerSec.toFixed(0).padStart(11)} ` +
    `${i.p50Ms.toFixed(1).padStart(7)} ${i.p99Ms.toFixed(1).padStart(7)} ${i.rssMiB.toFixed(0).padStart(8)} ${String(i.backlog).padStart(8)} ${String(i.queued).padStart(7)}`
  );
}

/** Current resident set (VmRSS) of a live process, MiB. */
function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Jobs not yet done, as the relay's own /metrics reports them (`drucof_queue_messages`). */
async function queuedJobs(httpPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^drucof_queue_messages\{state="(\w+)"\} (\d+)/gm)) if (QUEUE_STATES.includes(m[1]!)) n += Number(m[2]);
  return n;
}

/** Waits until the sink has `deliveries` and the relay's queue is empty; false on timeout. */
async function settle(relay: RelayChild, httpPort: number, sink: Sink, deliveries: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (relay.exited()) return false;
    if (sink.deliveries() >= deliveries && (await queuedJobs(httpPort)) === 0) return true;
    await new Promise((res) => setTimeout(res, 250));
  }
  return false;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const a = scriptArgs(
    'load.ts',
    'npm run bench:load -- [--minutes 10] [--fraction 0.8 | --rate MSG/S] [--probe-messages 8000]\n' +
      '                      [--size 10240] [--recipients 1] [--sessions 10] [--interval 60] [--fsync always|everysec]',
    {
      minutes: { type: 'string', default: '10' },
      fraction: { type: 'string', default: '0.8' },
      rate: { type: 'string' },
      'probe-messages': { type: 'string', default: '8000' },
      size: { type: 'string', default: '10240' },
      recipients: { type: 'string', default: '1' },
      sessions: { type: 'string', default: '10' },
      interval: { type: 'string', default: '60' },
      fsync: { type: 'string', default: 'always' },
    },
  );
  if (!['always', 'everysec'].includes(a.fsync)) {
    process.stderr.write(`load.ts: --fsync must be always or everysec, not ${a.fsync}\n`);
    process.exit(2);
  }
  children.installExitHandlers();
  const res = await runSustainedLoad({
    seconds: Number(a.minutes) * 60,
    fraction: Number(a.fraction),
    ...(a.rate && { rate: Number(a.rate) }),
    probeMessages: Number(a['probe-messages']),
    bodySize: Number(a.size),
    recipients: Number(a.recipients),
    sessions: Number(a.sessions),
    intervalSeconds: Number(a.interval),
    appendfsync: a.fsync as AppendFsync,
  });
  process.exit(res.lost || res.duplicated || res.refused || res.unacknowledged || !res.drained ? 1 : 0);
}
