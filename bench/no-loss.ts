/**
 * "A 250 is a promise" (architecture.md, Durability rule), checked the hard way:
 * push M messages with several recipients each through the relay while killing
 * the relay process with SIGKILL at random moments and restarting it at once on
 * the same port (Redis, AOF appendfsync always, keeps running). Clients reconnect
 * and carry on. A message counts as accepted only if its 250 was read; one whose
 * reply was lost with the process may still arrive ("unacknowledged but
 * delivered"), which is fine. Afterwards we wait until the sink has every accepted
 * (message, recipient) and the queue is empty — a job active in a killed worker
 * comes back once its BullMQ lock expires (30 s) — or a timeout, then count.
 *
 *   node --import tsx bench/no-loss.ts [--messages 3000] [--recipients 3] [--sessions 8]
 *                                     [--kills 3] [--size 2048] [--timeout 150] [--seed N]
 *
 * Prints `accepted=A delivered=D lost=L duplicated=X (x.xx%) kills=K` (in messages;
 * a detail line gives recipient deliveries) and exits 1 if anything was lost.
 *
 * The machinery is shared with the fault tests (test/faults/crash.ts kills the
 * `listen` and `work` halves; test/faults/redis-restart.ts restarts Redis):
 * `startFaultBed` (private Redis, sink, probe), `runUnderFaults` (the load with
 * faults injected at seeded moments, the wait for the queue to drain, the ledger)
 * and `detailLine`.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { scriptArgs } from './script-args.ts';
import { Redis } from 'ioredis';
import { runLoad, type LoadResult, type MessageOutcome } from './client.ts';
import { startRedis, type AppendFsync, type PrivateRedis } from './redis.ts';
import { children, startRelayChild, type RelayChild, type RelayChildOptions } from './relay-child.ts';
import { seededRandom } from '../test/helpers/random.ts';
import { startSink, type Sink } from './sink.ts';
import { keys } from '../src/queue/keys.ts';

export interface NoLossOptions {
  readonly messages?: number;
  readonly recipients?: number;
  readonly sessions?: number;
  readonly kills?: number;
  readonly bodySize?: number;
  /** How long to wait, after the load, for every accepted delivery and an empty queue (ms). */
  readonly settleTimeoutMs?: number;
  /** Seed for the kill moments (reproducible runs). */
  readonly seed?: number;
  readonly log?: (line: string) => void;
}

/** What a run under faults found (counts in messages unless said otherwise). */
export interface FaultTally {
  /** Messages whose 250 the client read. */
  readonly accepted: number;
  /** Accepted messages that reached the sink for every recipient. */
  readonly delivered: number;
  /** Accepted messages with at least one recipient that never got it. */
  readonly lost: number;
  /** Accepted messages that some recipient got more than once. */
  readonly duplicated: number;
  readonly duplicatedPct: number;
  /** Faults injected (kills, restarts). */
  readonly faults: number;
  /** The same counts per (message, recipient). */
  readonly pairs: { readonly accepted: number; readonly delivered: number; readonly lost: number; readonly extraCopies: number };
  /** Messages refused with a reply (e.g. 451 while Redis was unreachable). */
  readonly refused: number;
  /** Refusals by reply code (`451 4.3.0`: …) and by where they came (`mail`, `rcpt`, `data`, `end`). */
  readonly refusedByCode: Readonly<Record<string, number>>;
  readonly refusedAt: Readonly<Record<string, number>>;
  /** Messages whose reply was never read (the connection died first). */
  readonly unacknowledged: number;
  readonly unacknowledgedDelivered: number;
  /** Refused with a reply and yet delivered (the safe direction: a client retry makes a duplicate). */
  readonly refusedDelivered: number;
  /** Message-IDs at the sink that the client never sent (should be 0). */
  readonly unknownAtSink: number;
  /** Accepted messages (250 read) whose queue id has no message hash in Redis after the run (must be 0). */
  readonly notStored: number;
  /**
   * Message hashes still holding a body once the queue drained: stored but never
   * delivered nor removed (a listener killed between the hash and the job, a refused
   * message whose removal never happened). Not a loss when unacknowledged or
   * refused; a leak. Some ids, with their client outcome.
   */
  readonly leftovers: number;
  readonly leftoverSamples: readonly string[];
  /** Connections that died under a session (no 221, no 421). */
  readonly dropped: number;
  /** Failed connection attempts (refused, or closed before the greeting / EHLO). */
  readonly connectFailures: number;
  /** Connections the relay closed with a 421. */
  readonly closedWith421: number;
  readonly queueDrained: boolean;
  readonly settleMs: number;
  readonly loadMs: number;
  /** Up to 20 lost (message, recipient) pairs with their queue ids. */
  readonly lostSamples: readonly string[];
  /** Extra copies as they arrived: seconds after the load started, and seconds after the latest fault before it. */
  readonly extraCopyTimes: readonly { readonly atS: number; readonly sinceFaultS: number; readonly fault: number }[];
  /**
   * Per duplicated message: when the sink took its first copy, relative to the
   * nearest fault (ms; negative = before the kill signal). A duplicate of the
   * RFC 1047 kind is taken just before (or, while the process dies, just after) a kill.
   */
  readonly duplicateOrigins: readonly { readonly fault: number; readonly ms: number }[];
  /** Seconds after the load started at which each fault was injected. */
  readonly faultTimesS: readonly number[];
  /** With `measureWindow`. */
  readonly window?: WindowStats;
}

export interface NoLossResult extends FaultTally {
  readonly kills: number;
  /** The one-line summary. */
  readonly line: string;
}

/** Private Redis (AOF), the sink, a probe connection, a fresh queue prefix. */
export interface FaultBed {
  readonly redis: PrivateRedis;
  readonly sink: Sink;
  readonly prefix: string;
  /** A Redis connection of the harness (queue size, stored checks). */
  readonly probe: Redis;
  /** What every relay child of the run shares: next hop, Redis, prefix, config. */
  readonly relayOpts: RelayChildOptions;
  /** performance.now() when the sink first took each Message-ID (just before its 250). */
  readonly firstTakenAt: ReadonlyMap<string, number>;
  /** Later arrivals of a Message-ID already taken (candidate extra copies), with their time. */
  readonly repeatArrivals: readonly { readonly id: string; readonly at: number }[];
  close(): Promise<void>;
}

/** The relay config of the fault runs (as the bench's): 50 deliveries at once, 1 s retry. */
export const FAULT_RELAY_CONFIG = {
  queue: { concurrency: 50, retrySchedule: ['1s'] },
  delivery: { connectionsPerHop: 10 },
  log: { level: 'warn' },
} as const;

export async function startFaultBed(o: {
  tag: string;
  appendfsync?: AppendFsync;
  config?: Record<string, unknown>;
  /** The sink takes each message this long after its data (a slower next hop); default 0. */
  hopDelayMs?: number;
}): Promise<FaultBed> {
  const prefix = `${o.tag}-${Date.now().toString(36)}-${process.pid}`;
  const redis = await startRedis({ appendfsync: o.appendfsync ?? 'always' });
  // Arrivals are timed (the ledger itself is the sink's `seen`).
  const firstTakenAt = new Map<string, number>();
  const repeatArrivals: { id: string; at: number }[] = [];
  let sink: Sink;
  try {
    sink = await startSink({
      // The next hop on its own event loop, so a kill fired by this process's timers is not
      // correlated with the hop's backlog of unanswered final dots (see sink.ts).
      ownProcess: true,
      dataReplyDelayMs: o.hopDelayMs ?? 0,
      onMessage: (id) => {
        if (id === undefined) return;
        if (firstTakenAt.has(id)) repeatArrivals.push({ id, at: performance.now() });
        else firstTakenAt.set(id, performance.now());
      },
    });
  } catch (err) {
    await redis.stop();
    throw err;
  }
  const probe = new Redis(redis.url, { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  probe.on('error', () => {});
  return {
    redis,
    sink,
    prefix,
    probe,
    relayOpts: { smarthost: `127.0.0.1:${sink.port}`, redisUrl: redis.url, prefix, config: { ...FAULT_RELAY_CONFIG, ...o.config } },
    firstTakenAt,
    repeatArrivals,
    async close() {
      probe.disconnect();
      await sink.close();
      await redis.stop();
    },
  };
}

export interface FaultRunOptions {
  /** SMTP port the clients use (the listener's; it stays the same across restarts). */
  readonly port: number;
  readonly messages: number;
  readonly recipients: number;
  readonly sessions: number;
  readonly bodySize?: number;
  /** How many faults to inject: one in each equal slice of the run (by messages answered). */
  readonly faults: number;
  /** Injects fault number k (0-based); resolves once the system is back (restarted), with a line for the log. */
  readonly inject: (k: number, random: () => number) => Promise<string>;
  readonly random: () => number;
  /** After the load: how long to wait for every accepted delivery and an empty queue (ms). */
  readonly settleTimeoutMs: number;
  /** Clients pause this long after a refusal (see LoadOptions). */
  readonly refusedPauseMs?: number;
  /** Pace the load (messages per second over all sessions; see LoadOptions); unset: as fast as it goes. */
  readonly ratePerSec?: number;
  /** How long a client keeps trying to reconnect (default 60 s). */
  readonly reconnectWindowMs?: number;
  readonly log: (line: string) => void;
  /** Printed before the load. */
  readonly title: string;
  /**
   * Measure the duplicate window: per accepted message, the time from the sink
   * taking it (just before its 250) to the next write of its hash seen in Redis
   * (keyspace notifications) — the relay recording the outcome. A worker killed
   * inside that window re-sends the message.
   */
  readonly measureWindow?: boolean;
}

/** The duplicate window over the accepted messages (ms), and the observer's own event-loop delay. */
export interface WindowStats {
  readonly samples: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
  /** The harness's event-loop delay p50 / p99 (ms): it inflates every sample by about this much. */
  readonly observerLagP50: number;
  readonly observerLagP99: number;
}

/**
 * The load with faults: clients push `messages` through `port` with reconnects on;
 * fault k is injected (serially, never two at once) once a seeded threshold of
 * answered messages in slice k is passed, after a random 0–150 ms so it lands
 * anywhere inside a transaction, a store or a delivery. Then waits until the sink
 * has every accepted (message, recipient) and the queue is empty, or the timeout,
 * and counts.
 */
export async function runUnderFaults(bed: FaultBed, o: FaultRunOptions): Promise<FaultTally> {
  const { sink, probe, prefix } = bed;
  const { log, random } = o;
  const thresholds = Array.from({ length: o.faults }, (_, k) => Math.floor((o.messages * 0.9 * (k + 0.2 + 0.6 * random())) / o.faults));
  let done = 0;
  let injected = 0;
  let failed = false;
  let injecting: Promise<void> | undefined;
  let loadStart = performance.now();
  const faultAt: number[] = [];
  const inject = async () => {
    await sleep(random() * 150);
    const k = injected;
    const answered = done;
    faultAt.push(performance.now());
    const line = await o.inject(k, random);
    injected++;
    log(`  fault #${injected} at ${((faultAt[k]! - loadStart) / 1000).toFixed(1)} s, ${answered} messages answered: ${line}`);
  };
  const onOutcome = (_m: MessageOutcome) => {
    done++;
    if (!injecting && !failed && injected < o.faults && done >= thresholds[injected]!) {
      injecting = inject()
        .catch((err: unknown) => {
          // A restart that fails ends the faults (counted as not done); the count below still runs.
          log(`  fault #${injected + 1} FAILED: ${(err as Error).message}`);
          failed = true;
          throw err;
        })
        .finally(() => (injecting = undefined));
      injecting.catch(() => {});
    }
  };

  const watch = o.measureWindow ? await watchHashWrites(bed) : undefined;
  log(`${o.title}; faults at ~${thresholds.join(', ')} messages answered`);
  loadStart = performance.now();
  const load: LoadResult = await runLoad({
    port: o.port,
    sessions: o.sessions,
    messages: o.messages,
    recipients: o.recipients,
    bodySize: o.bodySize ?? 2048,
    tag: prefix,
    reconnect: true,
    reconnectWindowMs: o.reconnectWindowMs ?? 60_000,
    onOutcome,
    ...(o.refusedPauseMs !== undefined && { refusedPauseMs: o.refusedPauseMs }),
    ...(o.ratePerSec !== undefined && { ratePerSec: o.ratePerSec }),
  });
  const loadMs = performance.now() - loadStart;
  while (injecting) await injecting.catch(() => {});
  log(
    `  load done in ${(loadMs / 1000).toFixed(1)} s: accepted ${load.accepted.length}, refused ${load.refused}, unacknowledged ${load.unacknowledged}, ` +
      `dropped connections ${load.reconnects}, failed connects ${load.connectFailures}; waiting for the queue to drain`,
  );

  // Settle: every accepted pair at the sink and nothing left in the queue (re-runs of stalled jobs included).
  const settleStart = Date.now();
  const missingPairs = () => {
    let n = 0;
    for (const m of load.accepted) {
      const got = sink.seen.get(m.messageId);
      for (const r of m.recipients) if (!got?.get(r)) n++;
    }
    return n;
  };
  let drained = false;
  let lastReport = Date.now();
  for (;;) {
    const missing = missingPairs();
    const queued = await queueSize(probe, prefix).catch(() => -1);
    drained = queued === 0;
    if (missing === 0 && drained) break;
    if (Date.now() - settleStart > o.settleTimeoutMs) break;
    if (Date.now() - lastReport > 10_000) {
      lastReport = Date.now();
      log(`  … ${Math.round((Date.now() - settleStart) / 1000)} s: ${missing} accepted deliveries not yet at the sink, ${queued} jobs in the queue`);
    }
    await sleep(250);
  }
  const settleMs = Date.now() - settleStart;

  // Count.
  const sent = new Map(load.outcomes.map((m) => [m.messageId, m]));
  let delivered = 0;
  let lost = 0;
  let duplicated = 0;
  let pairsDelivered = 0;
  let pairsLost = 0;
  let extraCopies = 0;
  const lostSamples: string[] = [];
  for (const m of load.accepted) {
    const got = sink.seen.get(m.messageId);
    let allThere = true;
    let dup = false;
    for (const r of m.recipients) {
      const n = got?.get(r) ?? 0;
      if (n === 0) {
        allThere = false;
        pairsLost++;
        if (lostSamples.length < 20) lostSamples.push(`${m.messageId} → ${r} (queue id ${m.queueId ?? '?'})`);
      } else {
        pairsDelivered++;
        if (n > 1) {
          dup = true;
          extraCopies += n - 1;
        }
      }
    }
    if (allThere) delivered++;
    else lost++;
    if (dup) duplicated++;
  }
  const arrived = (m: MessageOutcome) => sink.seen.has(m.messageId);
  const unacknowledgedDelivered = load.outcomes.filter((m) => m.status === 'unacknowledged' && arrived(m)).length;
  const refusedDelivered = load.outcomes.filter((m) => m.status === 'refused' && arrived(m)).length;
  let unknownAtSink = 0;
  for (const id of sink.seen.keys()) if (!sent.has(id)) unknownAtSink++;
  const refusedByCode: Record<string, number> = {};
  const refusedAt: Record<string, number> = {};
  for (const m of load.outcomes) {
    if (m.status !== 'refused') continue;
    const code = m.code === undefined ? '?' : `${m.code}${m.enhanced ? ` ${m.enhanced}` : ''}`;
    refusedByCode[code] = (refusedByCode[code] ?? 0) + 1;
    refusedAt[m.refusedAt ?? '?'] = (refusedAt[m.refusedAt ?? '?'] ?? 0) + 1;
  }
  const notStored = await countNotStored(probe, prefix, load.accepted);
  const byQueueId = new Map(load.outcomes.filter((m) => m.queueId).map((m) => [m.queueId!, m]));
  const left = drained ? await leftoverMessages(probe, prefix).catch(() => []) : [];
  const leftoverSamples = left.slice(0, 10).map((id) => `${id} (${byQueueId.get(id)?.status ?? 'no 250 read'})`);

  // When the extra copies arrived (a copy of an id already seen, of an accepted message).
  const acceptedIds = new Set(load.accepted.map((m) => m.messageId));
  const extraCopyTimes = bed.repeatArrivals
    .filter((a) => acceptedIds.has(a.id) && [...(sink.seen.get(a.id)?.values() ?? [])].some((n) => n > 1))
    .map((a) => {
      let f = -1;
      for (let i = 0; i < faultAt.length; i++) if (faultAt[i]! <= a.at) f = i;
      return { atS: (a.at - loadStart) / 1000, sinceFaultS: f < 0 ? NaN : (a.at - faultAt[f]!) / 1000, fault: f + 1 };
    });

  const duplicateOrigins: { fault: number; ms: number }[] = [];
  for (const m of load.accepted) {
    if (![...(sink.seen.get(m.messageId)?.values() ?? [])].some((n) => n > 1)) continue;
    const first = bed.firstTakenAt.get(m.messageId);
    if (first === undefined || faultAt.length === 0) continue;
    let best = 0;
    for (let i = 1; i < faultAt.length; i++) if (Math.abs(faultAt[i]! - first) < Math.abs(faultAt[best]! - first)) best = i;
    duplicateOrigins.push({ fault: best + 1, ms: first - faultAt[best]! });
  }

  const writesSeen = watch ? await watch.stop() : undefined;
  const window = watch && writesSeen ? windowStats(writesSeen, load.accepted, bed, watch.lag) : undefined;
  if (writesSeen) {
    // Each duplicated message: when the sink took it, took it again, and when its hash was written (the outcome).
    const rel = (t: number) => ((t - loadStart) / 1000).toFixed(3);
    let shown = 0;
    for (const m of load.accepted) {
      if (![...(sink.seen.get(m.messageId)?.values() ?? [])].some((n) => n > 1)) continue;
      if (++shown > 20) break;
      const again = bed.repeatArrivals.filter((a) => a.id === m.messageId).map((a) => rel(a.at));
      const w = writesSeen.get(keys(prefix).message(m.queueId!)) ?? [];
      log(`  duplicate ${m.messageId}: taken at ${rel(bed.firstTakenAt.get(m.messageId)!)} s, again at ${again.join(', ')} s; hash written at ${w.map(rel).join(', ')} s`);
    }
  }

  const accepted = load.accepted.length;
  return {
    accepted,
    delivered,
    lost,
    duplicated,
    duplicatedPct: accepted > 0 ? (100 * duplicated) / accepted : 0,
    faults: injected,
    pairs: { accepted: accepted * o.recipients, delivered: pairsDelivered, lost: pairsLost, extraCopies },
    refused: load.refused,
    refusedByCode,
    refusedAt,
    unacknowledged: load.unacknowledged,
    unacknowledgedDelivered,
    refusedDelivered,
    unknownAtSink,
    notStored,
    leftovers: left.length,
    leftoverSamples,
    dropped: load.reconnects,
    connectFailures: load.connectFailures,
    closedWith421: load.closedWith421,
    queueDrained: drained,
    settleMs,
    loadMs,
    lostSamples,
    extraCopyTimes,
    duplicateOrigins,
    faultTimesS: faultAt.map((t) => (t - loadStart) / 1000),
    ...(window && { window }),
  };
}

/** Times of every HSET on the run's message hashes, from Redis keyspace notifications. */
async function watchHashWrites(bed: FaultBed) {
  await bed.probe.config('SET', 'notify-keyspace-events', 'Kh');
  const sub = new Redis(bed.redis.url, { maxRetriesPerRequest: 1 });
  sub.on('error', () => {});
  const writes = new Map<string, number[]>();
  const channelPrefix = '__keyspace@0__:';
  sub.on('pmessage', (_p: string, channel: string, event: string) => {
    if (event !== 'hset') return;
    const key = channel.slice(channelPrefix.length);
    let list = writes.get(key);
    if (!list) writes.set(key, (list = []));
    list.push(performance.now());
  });
  await sub.psubscribe(`${channelPrefix}${keys(bed.prefix).message('*')}`);
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  return {
    lag,
    async stop() {
      lag.disable();
      sub.disconnect();
      return writes;
    },
  };
}

function windowStats(writes: ReadonlyMap<string, number[]>, accepted: readonly MessageOutcome[], bed: FaultBed, lag: IntervalHistogram): WindowStats {
  const k = keys(bed.prefix);
  const w: number[] = [];
  for (const m of accepted) {
    const taken = bed.firstTakenAt.get(m.messageId);
    const times = m.queueId ? writes.get(k.message(m.queueId)) : undefined;
    if (taken === undefined || !times) continue;
    const next = times.find((t) => t >= taken);
    if (next !== undefined) w.push(next - taken);
  }
  w.sort((a, b) => a - b);
  const q = (p: number) => (w.length ? w[Math.min(w.length - 1, Math.floor(p * w.length))]! : NaN);
  return {
    samples: w.length,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    max: w.at(-1) ?? NaN,
    mean: w.length ? w.reduce((a, b) => a + b, 0) / w.length : NaN,
    observerLagP50: lag.percentile(50) / 1e6,
    observerLagP99: lag.percentile(99) / 1e6,
  };
}

/** One line on the duplicate window, when measured. */
export function windowLine(t: FaultTally): string | undefined {
  const s = t.window;
  if (!s) return undefined;
  const f = (n: number) => n.toFixed(1);
  return (
    `  duplicate window (sink took the message → its outcome written to Redis), ${s.samples} messages: ` +
    `p50 ${f(s.p50)} ms, p90 ${f(s.p90)} ms, p99 ${f(s.p99)} ms, max ${f(s.max)} ms, mean ${f(s.mean)} ms ` +
    `(observer event-loop delay p50 ${f(s.observerLagP50)} / p99 ${f(s.observerLagP99)} ms included)`
  );
}

/** The detail line every fault script prints under its result line. */
export function detailLine(t: FaultTally): string {
  const codes = Object.entries(t.refusedByCode).map(([c, n]) => `${c}×${n}`).join(' ') || 'none';
  const where = Object.entries(t.refusedAt).map(([w, n]) => `${w} ${n}`).join(', ');
  return (
    `  recipient deliveries: promised ${t.pairs.accepted}, delivered ${t.pairs.delivered}, lost ${t.pairs.lost}, extra copies ${t.pairs.extraCopies}; ` +
    `unacknowledged ${t.unacknowledged} (of which delivered ${t.unacknowledgedDelivered}), refused ${t.refused} [${codes}${where ? `; at ${where}` : ''}] (delivered ${t.refusedDelivered}), ` +
    `unknown at sink ${t.unknownAtSink}, 250 without a stored message ${t.notStored}, ` +
    `stored but left undelivered ${t.leftovers}${t.leftovers > 0 ? ` [${t.leftoverSamples.join(', ')}]` : ''}; ` +
    `queue ${t.queueDrained ? 'drained' : 'NOT drained'} ${(t.settleMs / 1000).toFixed(1)} s after the load (load ${(t.loadMs / 1000).toFixed(1)} s)`
  );
}

/** Extra copies by arrival, relative to the latest fault before each (diagnosing duplicates). */
export function duplicateTimingLine(t: FaultTally): string | undefined {
  if (t.extraCopyTimes.length === 0) return undefined;
  const origins = t.duplicateOrigins.slice(0, 30).map((d) => `#${d.fault} ${d.ms >= 0 ? '+' : ''}${Math.round(d.ms)}`);
  const again = t.extraCopyTimes.slice(0, 30).map((c) => `#${c.fault}+${c.sinceFaultS.toFixed(1)}`);
  return (
    `  duplicates: first copy taken (ms from the nearest fault) ${origins.join(', ')}${t.duplicateOrigins.length > 30 ? ' …' : ''}; ` +
    `extra copy arrived (s after the latest fault) ${again.join(', ')}${t.extraCopyTimes.length > 30 ? ' …' : ''}`
  );
}

/** Accepted messages whose queue id has no message hash (the hash outlives delivery by `queue.keepFinished`). */
async function countNotStored(r: Redis, prefix: string, accepted: readonly MessageOutcome[]): Promise<number> {
  const k = keys(prefix);
  let missing = 0;
  for (let i = 0; i < accepted.length; i += 1000) {
    const batch = accepted.slice(i, i + 1000);
    const withId = batch.filter((m) => m.queueId !== undefined);
    missing += batch.length - withId.length;
    if (withId.length === 0) continue;
    const p = r.pipeline();
    for (const m of withId) p.exists(k.message(m.queueId!));
    const res = (await p.exec()) ?? [];
    for (const [err, n] of res) if (err || n !== 1) missing++;
  }
  return missing;
}

/** Queue ids whose message hash still has its body (never finished) — call once the queue is empty. */
async function leftoverMessages(r: Redis, prefix: string): Promise<string[]> {
  const k = keys(prefix);
  const base = k.message('');
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await r.scan(cursor, 'MATCH', k.message('*'), 'COUNT', 1000);
    cursor = next;
    if (batch.length === 0) continue;
    const p = r.pipeline();
    for (const key of batch) p.hexists(key, 'body');
    const res = (await p.exec()) ?? [];
    res.forEach(([err, has], i) => {
      if (!err && has === 1) found.push(batch[i]!.slice(base.length));
    });
  } while (cursor !== '0');
  return found;
}

/** Jobs of the delivery queue still waiting, active, delayed or prioritized. */
export async function queueSize(r: Redis, prefix: string): Promise<number> {
  const q = `${prefix}:deliver`;
  const [wait, active, delayed, prioritized, paused] = await Promise.all([
    r.llen(`${q}:wait`),
    r.llen(`${q}:active`),
    r.zcard(`${q}:delayed`),
    r.zcard(`${q}:prioritized`),
    r.llen(`${q}:paused`),
  ]);
  return wait + active + delayed + prioritized + paused;
}

/** The kill -9 proof on one `start` process. */
export async function runNoLoss(o: NoLossOptions = {}): Promise<NoLossResult> {
  const messages = o.messages ?? 3000;
  const recipients = o.recipients ?? 3;
  const sessions = o.sessions ?? 8;
  const kills = o.kills ?? 3;
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const bed = await startFaultBed({ tag: 'noloss' });
  const outputs: string[] = [];
  let relay: RelayChild | undefined;
  try {
    relay = await startRelayChild(bed.relayOpts);
    const port = relay.port;
    const t = await runUnderFaults(bed, {
      port,
      messages,
      recipients,
      sessions,
      bodySize: o.bodySize ?? 2048,
      faults: kills,
      random: seededRandom(o.seed ?? Date.now()),
      settleTimeoutMs: o.settleTimeoutMs ?? 150_000,
      log,
      title: `no-loss: ${messages} messages × ${recipients} recipients, ${sessions} sessions, ${kills} kill -9 of the relay; redis AOF appendfsync always`,
      inject: async () => {
        const old = relay!;
        await old.kill9();
        outputs.push(old.output());
        const t0 = Date.now();
        relay = await startRelayChild({ ...bed.relayOpts, port });
        return `kill -9 relay (pid ${old.pid}), back after ${Date.now() - t0} ms (pid ${relay.pid})`;
      },
    });
    outputs.push(relay.output());
    const line = `accepted=${t.accepted} delivered=${t.delivered} lost=${t.lost} duplicated=${t.duplicated} (${t.duplicatedPct.toFixed(2)}%) kills=${t.faults}`;
    log(detailLine(t));
    const timing = duplicateTimingLine(t);
    if (timing) log(timing);
    if (t.lost > 0) {
      log(`  lost, e.g.:\n    ${t.lostSamples.join('\n    ')}`);
      log(`  relay output (last incarnation, tail):\n${outputs.at(-1)?.slice(-3000) ?? ''}`);
    }
    log(line);
    return { ...t, kills: t.faults, line };
  } finally {
    await relay?.stop().catch(() => null);
    await bed.close();
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const a = scriptArgs(
    'no-loss.ts',
    'npm run bench:no-loss -- [--messages 3000] [--recipients 3] [--sessions 8] [--kills 3] [--size 2048] [--timeout 150] [--seed N]',
    {
      messages: { type: 'string', default: '3000' },
      recipients: { type: 'string', default: '3' },
      sessions: { type: 'string', default: '8' },
      kills: { type: 'string', default: '3' },
      size: { type: 'string', default: '2048' },
      timeout: { type: 'string', default: '150' },
      seed: { type: 'string' },
    },
  );
  children.installExitHandlers();
  const seed = a.seed ? Number(a.seed) : Date.now() % 1_000_000;
  process.stdout.write(`seed ${seed}\n`);
  const r = await runNoLoss({
    messages: Number(a.messages),
    recipients: Number(a.recipients),
    sessions: Number(a.sessions),
    kills: Number(a.kills),
    bodySize: Number(a.size),
    settleTimeoutMs: Number(a.timeout) * 1000,
    seed,
  });
  process.exit(r.lost > 0 ? 1 : 0);
}
