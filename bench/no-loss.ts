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
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { runLoad, type MessageOutcome } from './client.ts';
import { startRedis } from './redis.ts';
import { children, startRelayChild, type RelayChild } from './relay-child.ts';
import { seededRandom } from '../test/helpers/random.ts';
import { startSink } from './sink.ts';

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

export interface NoLossResult {
  /** Messages whose 250 the client read. */
  readonly accepted: number;
  /** Accepted messages that reached the sink for every recipient. */
  readonly delivered: number;
  /** Accepted messages with at least one recipient that never got it. */
  readonly lost: number;
  /** Accepted messages that some recipient got more than once. */
  readonly duplicated: number;
  readonly duplicatedPct: number;
  readonly kills: number;
  /** The same counts per (message, recipient). */
  readonly pairs: { readonly accepted: number; readonly delivered: number; readonly lost: number; readonly extraCopies: number };
  /** Messages refused with a reply (e.g. 451 while Redis was unreachable at restart). */
  readonly refused: number;
  /** Messages whose reply was never read (the relay died first). */
  readonly unacknowledged: number;
  readonly unacknowledgedDelivered: number;
  /** Refused with a reply and yet delivered (should be 0). */
  readonly refusedDelivered: number;
  /** Message-IDs at the sink that the client never sent (should be 0). */
  readonly unknownAtSink: number;
  readonly queueDrained: boolean;
  readonly settleMs: number;
  readonly loadMs: number;
  /** Up to 20 lost (message, recipient) pairs with their queue ids. */
  readonly lostSamples: readonly string[];
  /** The one-line summary. */
  readonly line: string;
}

export async function runNoLoss(o: NoLossOptions = {}): Promise<NoLossResult> {
  const messages = o.messages ?? 3000;
  const recipients = o.recipients ?? 3;
  const sessions = o.sessions ?? 8;
  const kills = o.kills ?? 3;
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const random = seededRandom(o.seed ?? Date.now());
  const prefix = `noloss-${Date.now().toString(36)}-${process.pid}`;

  const redis = await startRedis({ appendfsync: 'always' });
  const sink = await startSink();
  const relayOpts = {
    smarthost: `127.0.0.1:${sink.port}`,
    redisUrl: redis.url,
    prefix,
    config: { queue: { concurrency: 50, retrySchedule: ['1s'] }, delivery: { connectionsPerHop: 10 }, log: { level: 'warn' } },
  };
  let relay: RelayChild = await startRelayChild(relayOpts);
  const port = relay.port;
  const outputs: string[] = [];
  const probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  probe.on('error', () => {});

  try {
    // Kill moments: one in each of `kills` equal slices of the run (by messages answered), at a random point of its middle.
    const thresholds = Array.from({ length: kills }, (_, k) => Math.floor((messages * 0.9 * (k + 0.2 + 0.6 * random())) / kills));
    let done = 0;
    let killed = 0;
    let killing: Promise<void> | undefined;
    const killAndRestart = async () => {
      await sleep(random() * 150); // land anywhere inside a transaction, a store or a delivery
      await relay.kill9();
      killed++;
      outputs.push(relay.output());
      log(`  kill -9 #${killed} (pid ${relay.pid}) after ${done} messages answered; restarting on port ${port}`);
      const t0 = Date.now();
      relay = await startRelayChild({ ...relayOpts, port });
      log(`  relay back after ${Date.now() - t0} ms (pid ${relay.pid})`);
    };
    const onOutcome = (_m: MessageOutcome) => {
      done++;
      if (!killing && killed < kills && done >= thresholds[killed]!) {
        killing = killAndRestart().finally(() => (killing = undefined));
      }
    };

    log(`no-loss: ${messages} messages × ${recipients} recipients, ${sessions} sessions, ${kills} kill -9 at ~${thresholds.join(', ')} messages; redis AOF appendfsync always`);
    const t0 = Date.now();
    const load = await runLoad({
      port,
      sessions,
      messages,
      recipients,
      bodySize: o.bodySize ?? 2048,
      tag: prefix,
      reconnect: true,
      reconnectWindowMs: 60_000,
      onOutcome,
    });
    const loadMs = Date.now() - t0;
    while (killing) await killing;
    log(
      `  load done in ${(loadMs / 1000).toFixed(1)} s: accepted ${load.accepted.length}, refused ${load.refused}, unacknowledged ${load.unacknowledged}, reconnects ${load.reconnects}; waiting for the queue to drain`,
    );

    // Settle: every accepted pair at the sink and nothing left in the queue (re-runs of stalled jobs included).
    const settleStart = Date.now();
    const settleTimeout = o.settleTimeoutMs ?? 150_000;
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
      if (Date.now() - settleStart > settleTimeout) break;
      if (Date.now() - lastReport > 10_000) {
        lastReport = Date.now();
        log(`  … ${Math.round((Date.now() - settleStart) / 1000)} s: ${missing} accepted deliveries not yet at the sink, ${queued} jobs in the queue`);
      }
      await sleep(250);
    }
    const settleMs = Date.now() - settleStart;
    outputs.push(relay.output());

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

    const accepted = load.accepted.length;
    const duplicatedPct = accepted > 0 ? (100 * duplicated) / accepted : 0;
    const line = `accepted=${accepted} delivered=${delivered} lost=${lost} duplicated=${duplicated} (${duplicatedPct.toFixed(2)}%) kills=${killed}`;
    const result: NoLossResult = {
      accepted,
      delivered,
      lost,
      duplicated,
      duplicatedPct,
      kills: killed,
      pairs: { accepted: accepted * recipients, delivered: pairsDelivered, lost: pairsLost, extraCopies },
      refused: load.refused,
      unacknowledged: load.unacknowledged,
      unacknowledgedDelivered,
      refusedDelivered,
      unknownAtSink,
      queueDrained: drained,
      settleMs,
      loadMs,
      lostSamples,
      line,
    };
    log(
      `  recipient deliveries: promised ${result.pairs.accepted}, delivered ${pairsDelivered}, lost ${pairsLost}, extra copies ${extraCopies}; ` +
        `unacknowledged ${load.unacknowledged} (of which delivered ${unacknowledgedDelivered}), refused ${load.refused} (delivered ${refusedDelivered}), ` +
        `unknown at sink ${unknownAtSink}; queue ${drained ? 'drained' : 'NOT drained'} ${(settleMs / 1000).toFixed(1)} s after the load`,
    );
    if (lost > 0) {
      log(`  lost, e.g.:\n    ${lostSamples.join('\n    ')}`);
      log(`  relay output (last incarnation, tail):\n${outputs.at(-1)?.slice(-3000) ?? ''}`);
    }
    log(line);
    return result;
  } finally {
    probe.disconnect();
    await relay.stop().catch(() => null);
    await sink.close();
    await redis.stop();
  }
}

/** Jobs of the delivery queue still waiting, active, delayed or prioritized. */
async function queueSize(r: Redis, prefix: string): Promise<number> {
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


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values: a } = parseArgs({
    options: {
      messages: { type: 'string', default: '3000' },
      recipients: { type: 'string', default: '3' },
      sessions: { type: 'string', default: '8' },
      kills: { type: 'string', default: '3' },
      size: { type: 'string', default: '2048' },
      timeout: { type: 'string', default: '150' },
      seed: { type: 'string' },
    },
  });
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
