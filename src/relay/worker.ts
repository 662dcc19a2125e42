/**
 * The relay worker (Postfix qmgr + smtp): a BullMQ Worker whose job is one
 * message. Each run loads the message, attempts every recipient not yet final,
 * writes the outcomes back, then either finishes the message or moves the job to
 * the delayed set for the next retry (without consuming a BullMQ attempt).
 * Stalled jobs are re-run, never failed for stalling: the attempt is idempotent
 * per recipient, so a re-run only sends to recipients with no recorded outcome.
 */
import { DelayedError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { promises as dns } from 'node:dns';
import type { RelayConfig } from '../config/schema.ts';
import { isFinal, type RecipientState } from '../model/recipient.ts';
import type { Logger } from '../ops/log.ts';
import { noMetrics, type Metrics } from '../ops/metrics.ts';
import { DELIVERY_QUEUE, keys } from '../queue/keys.ts';
import { isExpired, retryDelay } from '../queue/schedule.ts';
import type { DeliveryJobData, MessageStore } from '../queue/store.ts';
import { attemptDelivery, type Deliverer, type MxResolver } from './attempt.ts';
import type { DrucofPorts } from './drucof.ts';
import { expired, scheduled } from './outcome.ts';
import { queueOwedReports, reportsDue } from '../dsn/index.ts';

export interface RelayWorkerOptions {
  readonly config: RelayConfig;
  readonly store: MessageStore;
  readonly connection: Redis;
  readonly deliverer: Deliverer;
  readonly log: Logger;
  readonly resolveMx?: MxResolver;
  /** Capabilities, planning and conversion for DRUCOF recipients (cli/start.ts wires them). */
  readonly drucof: DrucofPorts;
  /** Our name, for the reports we send (Reporting-MTA). */
  readonly hostname: string;
  /** Final statuses with their latency, deferrals, worker (Redis) errors, crashed jobs; default: nothing. */
  readonly metrics?: Pick<Metrics, 'recipientFinal' | 'recipientDeferred' | 'redisError' | 'jobCrashed'>;
}

/** A stalled job is re-run however often it stalls (BullMQ's default fails it after one). */
const NEVER_FAIL_FOR_STALLING = Number.MAX_SAFE_INTEGER;
/** Lock per active job (renewed at half of it); a dead worker's jobs wait this long at most before a check may see them stalled. */
const STALLED_LOCK_MS = 30_000;
/** How often (queue-wide) active jobs are checked for a lost lock; same on every worker of the queue. */
const STALLED_CHECK_MS = 5_000;

export function createRelayWorker(opts: RelayWorkerOptions): Worker<DeliveryJobData> {
  const { config, store, log } = opts;
  const metrics = opts.metrics ?? noMetrics;
  const resolveMx: MxResolver = opts.resolveMx ?? ((d) => dns.resolveMx(d));

  const reports = { store, hostname: opts.hostname, maxLifetimeMs: config.queue.maxLifetime, returnLimit: config.queue.returnLimit };

  const processor = async (job: Job<DeliveryJobData>, token?: string): Promise<string> => {
    const id = job.data.id;
    const msg = await store.load(id);
    if (!msg) {
      log.warn({ queueId: id }, 'job without a stored message: nothing to deliver');
      return 'missing';
    }
    const { envelope } = msg;
    const save = async (updates: ReadonlyMap<number, RecipientState>) => {
      await store.saveRecipients(id, updates);
      for (const [i, r] of updates) states[i] = r;
    };
    // A report already owed (by an earlier, crashed run) stays owed.
    const annotate = (before: RecipientState, after: RecipientState): RecipientState => {
      if (after.reportOwed) return after;
      const [due] = reportsDue(envelope, [before], [after], { delayWarningMs: config.queue.delayWarning, now: Date.now() });
      return due ? { ...after, reportOwed: due.action } : after;
    };

    let states = [...msg.recipients];
    if (states.some((r) => !isFinal(r))) {
      states = await attemptDelivery(msg, { config, deliverer: opts.deliverer, resolveMx, save: (u) => store.saveRecipients(id, u), annotate, log, drucof: opts.drucof });
    }

    const now = Date.now();
    let pending = [...states.entries()].filter(([, r]) => !isFinal(r));
    let outcome: 'finished' | 'expired' | 'deferred' = pending.length === 0 ? 'finished' : 'deferred';
    let delay = 0;
    if (pending.length > 0 && isExpired(envelope.receivedAt, config.queue.maxLifetime, now)) {
      await save(new Map(pending.map(([i, r]) => [i, annotate(r, expired(r, formatDuration(config.queue.maxLifetime)))])));
      pending = [];
      outcome = 'expired';
    } else if (pending.length > 0) {
      const failedAttempts = Math.max(...pending.map(([, r]) => r.attempts));
      const hint = Math.min(...pending.map(([, r]) => r.lastReply?.tags?.retryAfter ?? Infinity));
      delay = retryDelay(failedAttempts, config.queue.retrySchedule, Number.isFinite(hint) ? hint : undefined);
      const at = new Date(now + delay).toISOString();
      await save(new Map(pending.map(([i, r]) => [i, annotate(r, scheduled(r, at))])));
    }

    // Counted once the outcomes are in Redis (a re-run starts from them, so nothing counts twice).
    countOutcomes(msg.recipients, states, envelope.receivedAt, outcome === 'deferred' ? pending.length : 0);
    await save(await queueOwedReports(reports, envelope, msg.body, states));

    if (outcome !== 'deferred') {
      await store.finish(id, config.queue.keepFinished);
      log.info({ queueId: id, recipients: summarize(states) }, outcome === 'expired' ? 'message expired' : 'message finished');
      return outcome;
    }
    log.info({ queueId: id, deferred: pending.length, nextAttemptAt: new Date(now + delay).toISOString() }, 'message deferred');
    await job.moveToDelayed(now + delay, token);
    throw new DelayedError();
  };

  /** Recipients this run made final (once each: a re-run starts from the records), with their time since acceptance. */
  const countOutcomes = (before: readonly RecipientState[], after: readonly RecipientState[], receivedAt: string, deferred: number) => {
    const ms = Date.now() - Date.parse(receivedAt);
    after.forEach((r, i) => {
      const was = before[i];
      if (isFinal(r) && was && !isFinal(was)) metrics.recipientFinal(r.status, ms);
    });
    for (let i = 0; i < deferred; i++) metrics.recipientDeferred();
  };

  const worker = new Worker<DeliveryJobData>(DELIVERY_QUEUE, processor, {
    connection: opts.connection,
    prefix: keys(config.redis.prefix).bullPrefix,
    concurrency: config.queue.concurrency,
    maxStalledCount: NEVER_FAIL_FOR_STALLING,
    // A job's lock lives 30 s and is renewed every 15 s while its worker lives; a job
    // whose worker died is re-run by the first stalled check after its lock expired
    // that had seen it active before. Checks are gated queue-wide (one per interval,
    // whichever worker runs it), so a worker restarted after a crash finds the gate
    // of the dead one's last check still set: with a 30 s interval the re-run came
    // ~60 s after the crash, with 5 s it comes 25–35 s after. A check is one small
    // script (the active list and a set), and a live worker's job is never moved
    // (its lock is there), so checking often costs nothing and duplicates nothing.
    lockDuration: STALLED_LOCK_MS,
    stalledInterval: STALLED_CHECK_MS,
  });
  // While Redis is unreachable BullMQ reports every reconnect attempt; one line per 30 s is enough.
  let lastError = '';
  let lastErrorAt = 0;
  worker.on('error', (err) => {
    metrics.redisError('worker');
    if (err.message === lastError && Date.now() - lastErrorAt < 30_000) return;
    lastError = err.message;
    lastErrorAt = Date.now();
    log.error({ err: err.message }, 'worker error (repeats suppressed for 30 s)');
  });
  worker.on('failed', (job, err) => {
    metrics.jobCrashed();
    log.error({ queueId: job?.data.id, err }, 'delivery job crashed; BullMQ will retry it');
  });
  return worker;
}

function summarize(states: readonly RecipientState[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of states) out[s.status] = (out[s.status] ?? 0) + 1;
  return out;
}

function formatDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000} days`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} hours`;
  return `${Math.round(ms / 1000)} seconds`;
}
