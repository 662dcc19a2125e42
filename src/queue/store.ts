/**
 * The durable store: one Redis hash per message (envelope, body, one field per
 * recipient state) and one BullMQ job per message that drives its attempts.
 * The 250 promise (architecture.md, "Durability rule") is kept here: `enqueue`
 * resolves only after both the hash and the job are in Redis, and if either
 * write fails nothing stays behind that a worker could pick up.
 */
import { Queue, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Envelope, QueueId } from '../model/envelope.ts';
import type { RecipientState } from '../model/recipient.ts';
import { DELIVERY_QUEUE, isRecipientField, keys, recipientField } from './keys.ts';

export interface StoredMessage {
  readonly envelope: Envelope;
  /** In envelope order; the index is the recipient's stable identity in the hash. */
  readonly recipients: readonly RecipientState[];
}

export interface DeliveryJobData {
  readonly id: QueueId;
}

/** Job options every delivery job gets; retries are ours (moveToDelayed), so BullMQ's attempts are only a safety net for crashes in our own code. */
export const DELIVERY_JOB_OPTIONS: JobsOptions = {
  attempts: 1_000_000,
  backoff: { type: 'fixed', delay: 60_000 },
  removeOnComplete: true,
  removeOnFail: false,
};

export class StoreUnavailableError extends Error {}

/** How often an undo that failed is tried again while Redis stays away (also on every reconnect). */
const UNDO_RETRY_MS = 250;
/** At most this many undos are kept waiting (one per refused message; a bound for a very long outage). */
const UNDO_MAX_PENDING = 100_000;

export class MessageStore {
  readonly queue: Queue<DeliveryJobData>;
  private readonly k: ReturnType<typeof keys>;
  /** Hashes of refused messages whose removal failed (Redis went away mid-write): removed once it answers. */
  private readonly undoPending = new Set<string>();
  private undoTimer: NodeJS.Timeout | undefined;
  private undoRunning = false;
  private readonly onReady = () => void this.retryUndo();

  constructor(
    readonly redis: Redis,
    readonly prefix: string,
    private readonly writeTimeoutMs = 5000,
  ) {
    this.k = keys(prefix);
    this.queue = new Queue<DeliveryJobData>(DELIVERY_QUEUE, { connection: redis, prefix: this.k.bullPrefix });
    // The queue reports connection errors as events; callers see them as rejected writes.
    this.queue.on('error', () => {});
    redis.on('ready', this.onReady);
  }

  /** Refused messages whose hash is still waiting to be removed (Redis unreachable since). */
  get pendingUndos(): number {
    return this.undoPending.size;
  }

  /** Stores message and recipients, then queues the delivery job. Throws StoreUnavailableError. */
  async enqueue(envelope: Envelope, recipients: readonly RecipientState[], body: Buffer): Promise<QueueId> {
    const key = this.k.message(envelope.id);
    const fields: (string | Buffer)[] = ['envelope', JSON.stringify(envelope), 'body', body];
    recipients.forEach((r, i) => fields.push(recipientField(i), JSON.stringify(r)));
    try {
      // Both writes go out together (one round trip, one fsync with appendfsync always);
      // the 250 waits for both. A job whose hash failed finds nothing and is dropped.
      await this.withTimeout(
        Promise.all([
          this.redis.hset(key, ...fields),
          this.queue.add('deliver', { id: envelope.id }, { ...DELIVERY_JOB_OPTIONS, jobId: envelope.id }),
        ]),
      );
      return envelope.id;
    } catch (err) {
      // Undo the hash so nothing half-stored is left: a job whose hash is gone finds
      // nothing and is dropped. A write can fail *and* have been applied (Redis took
      // it, then died or was stopped before it answered); if Redis is gone the undo
      // fails too, so it is tried again as soon as Redis answers — otherwise the
      // message would be delivered although the client got 451 (and, as told, sends
      // it again: a duplicate).
      await this.redis.del(key).catch(() => this.undoLater(key));
      throw new StoreUnavailableError((err as Error).message);
    }
  }

  private undoLater(key: string): void {
    if (this.undoPending.size >= UNDO_MAX_PENDING) return;
    this.undoPending.add(key);
    this.undoTimer ??= setTimeout(() => {
      this.undoTimer = undefined;
      void this.retryUndo();
    }, UNDO_RETRY_MS).unref();
  }

  private async retryUndo(): Promise<void> {
    if (this.undoRunning || this.undoPending.size === 0) return;
    this.undoRunning = true;
    try {
      const batch = [...this.undoPending];
      for (let i = 0; i < batch.length; i += 500) {
        const chunk = batch.slice(i, i + 500);
        await this.redis.del(...chunk);
        for (const k of chunk) this.undoPending.delete(k);
      }
    } catch {
      // Still unreachable: the timer tries again.
    } finally {
      this.undoRunning = false;
      if (this.undoPending.size > 0) {
        this.undoTimer ??= setTimeout(() => {
          this.undoTimer = undefined;
          void this.retryUndo();
        }, UNDO_RETRY_MS).unref();
      }
    }
  }

  async load(id: QueueId): Promise<(StoredMessage & { body: Buffer }) | undefined> {
    const all = await this.redis.hgetallBuffer(this.k.message(id));
    const body = all.body;
    const envelope = all.envelope;
    if (!body || !envelope) return undefined;
    const recipients = Object.keys(all)
      .filter(isRecipientField)
      .sort((a, b) => Number(a.slice(2)) - Number(b.slice(2)))
      .map((f) => JSON.parse(all[f]!.toString('utf8')) as RecipientState);
    return { envelope: JSON.parse(envelope.toString('utf8')) as Envelope, recipients, body };
  }

  /** Envelope and recipient states without the body (queue inspection). */
  async loadMeta(id: QueueId): Promise<StoredMessage | undefined> {
    const key = this.k.message(id);
    const fieldNames = (await this.redis.hkeys(key)).filter((f) => f === 'envelope' || isRecipientField(f));
    if (!fieldNames.includes('envelope')) return undefined;
    const values = await this.redis.hmget(key, ...fieldNames);
    let envelope: Envelope | undefined;
    const recipients: [number, RecipientState][] = [];
    fieldNames.forEach((f, i) => {
      const v = values[i];
      if (v == null) return;
      if (f === 'envelope') envelope = JSON.parse(v) as Envelope;
      else recipients.push([Number(f.slice(2)), JSON.parse(v) as RecipientState]);
    });
    if (!envelope) return undefined;
    recipients.sort((a, b) => a[0] - b[0]);
    return { envelope, recipients: recipients.map(([, r]) => r) };
  }

  /** Writes back recipient states by index, in one command (atomic per attempt). */
  async saveRecipients(id: QueueId, updates: ReadonlyMap<number, RecipientState>): Promise<void> {
    if (updates.size === 0) return;
    const fields: string[] = [];
    for (const [i, r] of updates) fields.push(recipientField(i), JSON.stringify(r));
    await this.redis.hset(this.k.message(id), ...fields);
  }

  /** Every recipient is final: drop the body, keep the records readable for `keepMs`. */
  async finish(id: QueueId, keepMs: number): Promise<void> {
    const key = this.k.message(id);
    // Two plain commands, not MULTI: on a connection BullMQ shares, ioredis copies every
    // BullMQ script into each new pipeline, which cost a quarter of the worker's CPU.
    await Promise.all([this.redis.hdel(key, 'body'), this.redis.pexpire(key, Math.max(1, Math.round(keepMs)))]);
  }

  /** Ids on hold. */
  async heldIds(): Promise<string[]> {
    return (await this.redis.smembers(this.k.held)).sort();
  }

  /**
   * Operator actions (postsuper/postqueue). Each answers what it did, or why not:
   * a message being delivered right now cannot be held or deleted until the
   * attempt ends (its worker holds the job's lock).
   */
  async hold(id: QueueId): Promise<'held' | 'already-held' | 'active' | 'missing'> {
    if (await this.redis.sismember(this.k.held, id)) return 'already-held';
    const job = await this.queue.getJob(id);
    if (!job || !(await this.loadMeta(id))) return 'missing';
    if ((await job.getState()) === 'active') return 'active';
    await this.redis.sadd(this.k.held, id);
    try {
      await job.remove();
    } catch {
      // A worker took it between our look and the removal.
      await this.redis.srem(this.k.held, id);
      return 'active';
    }
    return 'held';
  }

  async release(id: QueueId): Promise<'released' | 'not-held'> {
    if (!(await this.redis.sismember(this.k.held, id))) return 'not-held';
    await this.queue.add('deliver', { id }, { ...DELIVERY_JOB_OPTIONS, jobId: id });
    await this.redis.srem(this.k.held, id);
    return 'released';
  }

  /** Attempt now: a delayed message is moved to the front; a held one is released. */
  async retryNow(id: QueueId): Promise<'retrying' | 'released' | 'already-due' | 'missing'> {
    if ((await this.release(id)) === 'released') return 'released';
    const job = await this.queue.getJob(id);
    if (!job) return 'missing';
    if ((await job.getState()) !== 'delayed') return 'already-due';
    await job.promote();
    return 'retrying';
  }

  /** Removes message and job. */
  async remove(id: QueueId): Promise<'deleted' | 'active' | 'missing'> {
    const job = await this.queue.getJob(id);
    if (job && (await job.getState()) === 'active') return 'active';
    const held = await this.redis.sismember(this.k.held, id);
    if (!job && !held) return 'missing';
    try {
      await job?.remove();
    } catch {
      return 'active';
    }
    await this.redis.multi().del(this.k.message(id)).srem(this.k.held, id).exec();
    return 'deleted';
  }

  /**
   * Removes messages that were stored but never queued: a listener killed
   * between the hash write and the job add (both go out together) leaves a
   * hash no worker will ever see. Its client never read a 250 (that waits for
   * both writes), so it sends the message again; the hash is only garbage.
   * Every accepted message has a job, or is on hold, or is finished (then it
   * carries an expiry), so a hash with none of these, older than `minAgeMs`
   * (far beyond the write timeout), is such a leftover — Postfix's cleanup of
   * incomplete queue files at start-up. Returns how many were removed.
   */
  async sweepNeverQueued(minAgeMs: number, now = Date.now()): Promise<number> {
    const jobKey = (id: string) => `${this.k.bullPrefix}:${DELIVERY_QUEUE}:${id}`;
    const pattern = `${this.k.message('').replace(/[*?[\]\\]/g, '\\$&')}*`;
    const idOf = (key: string) => key.slice(this.k.message('').length);
    let removed = 0;
    let cursor = '0';
    do {
      const [next, found] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
      cursor = next;
      if (found.length === 0) continue;
      const probe = this.redis.pipeline();
      for (const key of found) probe.pttl(key).exists(jobKey(idOf(key))).sismember(this.k.held, idOf(key)).hget(key, 'envelope');
      const answers = (await probe.exec()) ?? [];
      const orphans: string[] = [];
      found.forEach((key, i) => {
        const [ttl, job, held, envelope] = answers.slice(i * 4, i * 4 + 4).map(([err, v]) => (err ? undefined : v));
        if (ttl !== -1 || job !== 0 || held !== 0 || typeof envelope !== 'string') return;
        const receivedAt = Date.parse((JSON.parse(envelope) as Envelope).receivedAt);
        if (now - receivedAt >= minAgeMs) orphans.push(key);
      });
      if (orphans.length > 0) removed += await this.redis.del(...orphans);
    } while (cursor !== '0');
    return removed;
  }

  async close(): Promise<void> {
    this.redis.off('ready', this.onReady);
    clearTimeout(this.undoTimer);
    this.undoTimer = undefined;
    await this.queue.close();
  }

  private withTimeout<T>(p: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`redis write timed out after ${this.writeTimeoutMs} ms`)), this.writeTimeoutMs);
      p.then(
        (v) => (clearTimeout(t), resolve(v)),
        (e: unknown) => (clearTimeout(t), reject(e as Error)),
      );
    });
  }
}
