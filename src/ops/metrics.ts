/**
 * Metrics: one typed façade the stages call (`sessionOpened()`,
 * `messageReceived(code)`, `recipientFinal(status, ms)`, `decision(branch)`,
 * `conversion(converter, loss)`, `redisError(connection)` …), and its Prometheus
 * implementation (prom-client, one Registry per process, every name prefixed
 * `drucof_`, Node's default process metrics included). A stage takes the façade
 * as an optional dependency and defaults to `noMetrics`, so tests and library use
 * need no registry.
 *
 * Metrics are per process: in a split set-up (`listen` and `work` run apart)
 * each process counts only what it does itself — the listener sessions and
 * messages received, the workers outcomes, decisions and conversions — and
 * serves its own `/metrics` (set `http.listen` in each, on its own port); sum
 * them in Prometheus. The queue gauges are read from Redis at scrape time, so
 * every process reports the same, shared queue.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DecisionBranch } from '../model/decision.ts';
import { isFinal, type RecipientStatus } from '../model/recipient.ts';
import { keys } from '../queue/keys.ts';
import type { MessageStore } from '../queue/store.ts';

/** The Redis connection an error was seen on: the listener's, the worker's, or the ops endpoint's own reads. */
export type RedisRole = 'listener' | 'worker' | 'ops';

/** What the stages report. Every method is cheap and never throws. */
export interface Metrics {
  /** An SMTP connection was accepted (refused ones too: they are sessions that got a 4xx/5xx greeting). */
  sessionOpened(): void;
  /** Its socket closed. */
  sessionClosed(): void;
  /** A transaction's DATA phase ended with this (final) reply code: a message accepted (2xx) or refused (4xx/5xx). */
  messageReceived(code: number): void;
  /** A recipient reached a final status; `ms` from acceptance (envelope.receivedAt) to now, when it was attempted. */
  recipientFinal(status: RecipientStatus, ms?: number): void;
  /** An attempt left a recipient deferred. */
  recipientDeferred(): void;
  /** A section-4 decision for a DRUCOF recipient. */
  decision(branch: DecisionBranch): void;
  /** One body part converted (`converter`: its chain, `a>b`) or omitted (`omit`), with its loss; once per conversion run. */
  conversion(converter: string, loss: number): void;
  /** A conversion run failed (the converter's 5.6.5). */
  conversionFailed(): void;
  /** A Redis error (a connection error event, or a failed read for a scrape). */
  redisError(connection: RedisRole): void;
  /** A delivery job threw (our bug or a Redis failure mid-attempt); BullMQ runs it again. */
  jobCrashed(): void;
}

/** The default: counts nothing. */
export const noMetrics: Metrics = Object.freeze({
  sessionOpened() {},
  sessionClosed() {},
  messageReceived() {},
  recipientFinal() {},
  recipientDeferred() {},
  decision() {},
  conversion() {},
  conversionFailed() {},
  redisError() {},
  jobCrashed() {},
});

/** The queue as Redis has it, read at scrape time (cli/start.ts wires it to the store). */
export interface QueueProbe {
  /** Messages per state: waiting (due, not yet picked up), active (being delivered), delayed (deferred until their retry), held. */
  depth(): Promise<QueueDepth>;
  /** Since when (epoch ms) the message that has waited longest in the wait list has been waiting; undefined when none waits. */
  oldestWaitingSince(): Promise<number | undefined>;
}

export interface QueueDepth {
  readonly waiting: number;
  readonly active: number;
  readonly delayed: number;
  readonly held: number;
}

/**
 * The queue probe over a MessageStore: BullMQ's job counts and the held set;
 * the oldest waiting message is the wait list's tail (BullMQ pushes on the left
 * and takes from the right), waiting since its retry fell due (the latest
 * `nextAttemptAt` of its pending recipients) or, never tried, since acceptance.
 */
export function storeQueueProbe(store: Pick<MessageStore, 'queue' | 'redis' | 'prefix' | 'loadMeta'>): QueueProbe {
  const held = keys(store.prefix).held;
  return {
    async depth() {
      const [c, h] = await Promise.all([store.queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed'), store.redis.scard(held)]);
      return { waiting: (c.waiting ?? 0) + (c.prioritized ?? 0), active: c.active ?? 0, delayed: c.delayed ?? 0, held: h };
    },
    async oldestWaitingSince() {
      const [job] = await store.queue.getJobs(['waiting'], 0, 0, true);
      if (!job) return undefined;
      const meta = job.data?.id ? await store.loadMeta(job.data.id) : undefined;
      if (!meta) return job.timestamp;
      const due = meta.recipients.filter((r) => !isFinal(r) && r.nextAttemptAt).map((r) => Date.parse(r.nextAttemptAt!));
      return Math.max(Date.parse(meta.envelope.receivedAt), ...due.filter(Number.isFinite));
    },
  };
}

/** Per converter chain: how many parts it converted and their mean loss (the dashboard's statistics). */
export interface ConversionStat {
  readonly converter: string;
  readonly count: number;
  readonly meanLoss: number;
}

/** Every branch of section 4, so each series exists (at 0) from the start. */
const BRANCHES = [
  'no-drucof',
  'conneg-ok/usable',
  'conneg-ok/pass-on',
  'conneg-ok/no-way',
  'conneg-failed/pass-on',
  'conneg-failed/no-way',
  'drucof-only',
  'neither',
] as const satisfies readonly DecisionBranch[];
// A branch added to the model but not here is a compile error.
const allBranches: Exclude<DecisionBranch, (typeof BRANCHES)[number]> extends never ? true : false = true;
void allBranches;

const FINAL_STATUSES = ['relayed', 'relayed-with-drucof', 'converted-and-relayed', 'delivered', 'failed'] as const;
const QUEUE_STATES = ['waiting', 'active', 'delayed', 'held'] as const;
const CODE_CLASSES = ['2xx', '4xx', '5xx'] as const;

/** Accepted → final: seconds to days (retries run for up to `queue.maxLifetime`, 5 days by default). */
const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86_400, 5 * 86_400];
/** Loss per part (the planner's scale; an omitted part counts 100). */
const LOSS_BUCKETS = [0, 1, 2, 5, 10, 20, 30, 50, 75, 100];

export function codeClass(code: number): '2xx' | '4xx' | '5xx' {
  return code < 400 ? '2xx' : code < 500 ? '4xx' : '5xx';
}

/** Rejects after `ms` (the scrape must answer even when Redis does not). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** A gauge without labels that reports nothing (rather than 0) while its value is unknown. */
class QueueGauge extends Gauge {
  unknown = false;

  override async get(): ReturnType<Gauge['get']> {
    const got = await super.get();
    return this.unknown ? { ...got, values: [] } : got;
  }
}

/**
 * The Prometheus implementation. Names (all counters end in `_total`):
 *
 * - `drucof_smtp_sessions_total`, `drucof_smtp_sessions_open`
 * - `drucof_messages_received_total{class="2xx|4xx|5xx"}` — DATA phases by final reply
 * - `drucof_recipient_outcomes_total{status}` — final statuses (once per recipient), and `deferred` (once per attempt that leaves one deferred)
 * - `drucof_delivery_latency_seconds{status}` — accepted → final, per final status
 * - `drucof_decisions_total{branch}` — section-4 decisions
 * - `drucof_conversions_total{converter}`, `drucof_conversion_loss{converter}` (histogram, per part), `drucof_conversion_failures_total`
 * - `drucof_queue_messages{state="waiting|active|delayed|held"}`, `drucof_queue_oldest_waiting_seconds` — read from Redis at scrape time
 * - `drucof_redis_errors_total{connection="listener|worker|ops"}`, `drucof_delivery_job_crashes_total`
 * - Node's defaults: `drucof_process_cpu_seconds_total`, `drucof_nodejs_heap_size_used_bytes`, …
 */
export class PromMetrics implements Metrics {
  readonly registry = new Registry();
  private readonly sessions: Counter;
  private readonly open: Gauge;
  private readonly received: Counter<'class'>;
  private readonly outcomes: Counter<'status'>;
  private readonly latency: Histogram<'status'>;
  private readonly decisions: Counter<'branch'>;
  private readonly conversions: Counter<'converter'>;
  private readonly loss: Histogram<'converter'>;
  private readonly conversionFailures: Counter;
  private readonly redisErrors: Counter<'connection'>;
  private readonly crashes: Counter;
  private queueRead?: { at: number; result: Promise<{ depth: QueueDepth; oldestSince: number | undefined }> };

  constructor(opts: { queue?: QueueProbe; queueTimeoutMs?: number; defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'drucof_' });
    this.sessions = new Counter({ name: 'drucof_smtp_sessions_total', help: 'SMTP connections accepted', registers });
    this.open = new Gauge({ name: 'drucof_smtp_sessions_open', help: 'SMTP connections open now', registers });
    this.received = new Counter({ name: 'drucof_messages_received_total', help: 'Messages whose data was received, by the class of the final reply (2xx accepted, 4xx/5xx refused)', labelNames: ['class'], registers });
    this.outcomes = new Counter({
      name: 'drucof_recipient_outcomes_total',
      help: 'Recipient outcomes: a final status once per recipient; deferred once per attempt that leaves the recipient deferred',
      labelNames: ['status'],
      registers,
    });
    this.latency = new Histogram({ name: 'drucof_delivery_latency_seconds', help: 'Time from acceptance to a final status, per status', labelNames: ['status'], buckets: LATENCY_BUCKETS, registers });
    this.decisions = new Counter({ name: 'drucof_decisions_total', help: 'DRUCOF section-4 decisions, by branch', labelNames: ['branch'], registers });
    this.conversions = new Counter({ name: 'drucof_conversions_total', help: 'Body parts converted (by converter chain) or omitted (converter="omit")', labelNames: ['converter'], registers });
    this.loss = new Histogram({ name: 'drucof_conversion_loss', help: 'Loss of each converted or omitted body part (planner scale; omitted = 100)', labelNames: ['converter'], buckets: LOSS_BUCKETS, registers });
    this.conversionFailures = new Counter({ name: 'drucof_conversion_failures_total', help: 'Conversion runs that failed (5.6.5)', registers });
    this.redisErrors = new Counter({ name: 'drucof_redis_errors_total', help: 'Redis errors, by connection (listener, worker, ops: the reads of this endpoint)', labelNames: ['connection'], registers });
    this.crashes = new Counter({ name: 'drucof_delivery_job_crashes_total', help: 'Delivery jobs that threw (re-run by BullMQ)', registers });

    for (const c of CODE_CLASSES) this.received.inc({ class: c }, 0);
    for (const b of BRANCHES) this.decisions.inc({ branch: b }, 0);
    for (const s of [...FINAL_STATUSES, 'deferred'] as const) this.outcomes.inc({ status: s }, 0);
    for (const c of ['listener', 'worker', 'ops'] as const) this.redisErrors.inc({ connection: c }, 0);

    const queue = opts.queue;
    if (queue) {
      const timeoutMs = opts.queueTimeoutMs ?? 1000;
      // One Redis read per scrape for both gauges (their collect() runs back to back).
      const read = () => {
        const now = Date.now();
        if (!this.queueRead || now - this.queueRead.at > 250) {
          const result = within(Promise.all([queue.depth(), queue.oldestWaitingSince()]), timeoutMs, 'queue read').then(([depth, oldestSince]) => ({ depth, oldestSince }));
          result.catch(() => this.redisError('ops'));
          this.queueRead = { at: now, result };
        }
        return this.queueRead.result;
      };
      new Gauge({
        name: 'drucof_queue_messages',
        help: 'Messages in the queue by state (read from Redis at scrape time; absent when Redis does not answer)',
        labelNames: ['state'],
        registers,
        async collect() {
          this.reset();
          const r = await read().catch(() => undefined);
          if (r) for (const s of QUEUE_STATES) this.set({ state: s }, r.depth[s]);
        },
      });
      new QueueGauge({
        name: 'drucof_queue_oldest_waiting_seconds',
        help: 'How long the message waiting longest to be picked up has been waiting: since acceptance, or since its retry fell due (0: none waits)',
        registers,
        async collect() {
          const r = await read().catch(() => undefined);
          (this as QueueGauge).unknown = r === undefined;
          if (r) this.set(r.oldestSince === undefined ? 0 : Math.max(0, (Date.now() - r.oldestSince) / 1000));
        },
      });
    }
  }

  sessionOpened(): void {
    this.sessions.inc();
    this.open.inc();
  }

  sessionClosed(): void {
    this.open.dec();
  }

  messageReceived(code: number): void {
    this.received.inc({ class: codeClass(code) });
  }

  recipientFinal(status: RecipientStatus, ms?: number): void {
    this.outcomes.inc({ status });
    if (ms !== undefined && Number.isFinite(ms)) this.latency.observe({ status }, Math.max(0, ms) / 1000);
  }

  recipientDeferred(): void {
    this.outcomes.inc({ status: 'deferred' });
  }

  decision(branch: DecisionBranch): void {
    this.decisions.inc({ branch });
  }

  conversion(converter: string, loss: number): void {
    this.conversions.inc({ converter });
    this.loss.observe({ converter }, loss);
  }

  conversionFailed(): void {
    this.conversionFailures.inc();
  }

  redisError(connection: RedisRole): void {
    this.redisErrors.inc({ connection });
  }

  jobCrashed(): void {
    this.crashes.inc();
  }

  /** The exposition text (for `/metrics`). */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Per converter chain: parts converted and mean loss, from the loss histogram (this process's counts). */
  async conversionStats(): Promise<ConversionStat[]> {
    const values = (await this.loss.get()).values;
    const by = new Map<string, { sum: number; count: number }>();
    for (const v of values) {
      const converter = String(v.labels.converter ?? '');
      const e = by.get(converter) ?? { sum: 0, count: 0 };
      if (v.metricName === 'drucof_conversion_loss_sum') e.sum = v.value;
      else if (v.metricName === 'drucof_conversion_loss_count') e.count = v.value;
      else continue;
      by.set(converter, e);
    }
    return [...by]
      .filter(([, e]) => e.count > 0)
      .map(([converter, e]) => ({ converter, count: e.count, meanLoss: e.sum / e.count }))
      .sort((a, b) => b.count - a.count || a.converter.localeCompare(b.converter));
  }
}
