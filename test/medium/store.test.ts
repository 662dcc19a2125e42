/** MessageStore on real Redis: the 250 promise (both writes or neither) and write-back by recipient. */
import { afterAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { newRecipient } from '../../src/model/recipient.ts';
import type { Envelope } from '../../src/model/envelope.ts';
import { reply } from '../../src/model/reply.ts';
import { newQueueId } from '../../src/queue/queue-id.ts';
import { connectForListener } from '../../src/queue/redis.ts';
import { DELIVERY_JOB_OPTIONS, MessageStore, StoreUnavailableError } from '../../src/queue/store.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const prefix = uniquePrefix('store');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);

function envelope(): Envelope {
  return {
    id: newQueueId(),
    mailFrom: 's@example.com',
    body: '8BITMIME',
    smtpUtf8: false,
    client: { address: '127.0.0.1', helo: 'client.test' },
    receivedAt: new Date().toISOString(),
    size: 5,
  };
}

afterAll(async () => {
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('MessageStore', () => {
  it('stores body and recipients, queues one job with the queue id, and loads them back', async () => {
    const env = envelope();
    const body = Buffer.from([0x48, 0x69, 0x0d, 0x0a, 0xff]);
    await store.enqueue(env, [newRecipient('a@x.test', { notify: ['SUCCESS'] }), newRecipient('b@x.test')], body);
    const loaded = await store.load(env.id);
    expect(loaded?.body.equals(body)).toBe(true);
    expect(loaded?.recipients.map((r) => r.address)).toEqual(['a@x.test', 'b@x.test']);
    expect(loaded?.recipients[0]?.notify).toEqual(['SUCCESS']);
    expect(await store.queue.getJobState(env.id)).toMatch(/waiting|prioritized/);
  });

  it('writes back recipient states by index and finishes without the body', async () => {
    const env = envelope();
    await store.enqueue(env, [newRecipient('a@x.test'), newRecipient('b@x.test')], Buffer.from('hi'));
    const b = { ...newRecipient('b@x.test'), status: 'failed' as const, attempts: 1, lastReply: reply(550, 1, 1, 'no such user') };
    await store.saveRecipients(env.id, new Map([[1, b]]));
    expect((await store.loadMeta(env.id))?.recipients[1]).toEqual(b);
    await store.finish(env.id, 60_000);
    expect(await store.load(env.id)).toBeUndefined();
    expect((await store.loadMeta(env.id))?.recipients).toHaveLength(2);
    expect(await redis.pttl(`${prefix}:msg:${env.id}`)).toBeGreaterThan(0);
  });

  it('rejects with StoreUnavailableError, quickly, when Redis is down, and stores nothing', async () => {
    const down = connectForListener('redis://127.0.0.1:1');
    down.on('error', () => {});
    const s = new MessageStore(down, prefix, 2000);
    const started = Date.now();
    await expect(s.enqueue(envelope(), [newRecipient('a@x.test')], Buffer.from('x'))).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - started).toBeLessThan(5000);
    await s.close().catch(() => {});
    down.disconnect();
  });
});

describe('MessageStore.sweepNeverQueued', () => {
  const own = uniquePrefix('sweep');
  const s = new MessageStore(redis, own);
  afterAll(async () => {
    await s.close();
    await dropPrefix(own);
  });
  const old = (minutes: number) => ({ ...envelope(), receivedAt: new Date(Date.now() - minutes * 60_000).toISOString() });
  /** What a listener killed between its two writes leaves: the hash, no job. */
  const halfStored = async (env: Envelope) => {
    await redis.hset(`${own}:msg:${env.id}`, 'envelope', JSON.stringify(env), 'body', 'hi', 'r:0', JSON.stringify(newRecipient('a@x.test')));
    return env.id;
  };

  it('removes old hashes without a job, and keeps young ones, queued, held, delayed and finished messages', async () => {
    const orphan = await halfStored(old(30));
    const young = await halfStored(old(1));
    const queued = old(30);
    await s.enqueue(queued, [newRecipient('a@x.test')], Buffer.from('hi'));
    const held = old(30);
    await s.enqueue(held, [newRecipient('a@x.test')], Buffer.from('hi'));
    expect(await s.hold(held.id)).toBe('held');
    // A message waiting for its next attempt: its job is in the delayed set.
    const delayed = old(30);
    await halfStored(delayed);
    await s.queue.add('deliver', { id: delayed.id }, { ...DELIVERY_JOB_OPTIONS, jobId: delayed.id, delay: 3_600_000 });
    expect(await s.queue.getJobState(delayed.id)).toBe('delayed');
    const finished = old(30);
    await s.enqueue(finished, [newRecipient('a@x.test')], Buffer.from('hi'));
    await (await s.queue.getJob(finished.id))!.remove();
    await s.finish(finished.id, 3_600_000);

    expect(await s.sweepNeverQueued(10 * 60_000)).toBe(1);
    expect(await redis.exists(`${own}:msg:${orphan}`)).toBe(0);
    for (const id of [young, queued.id, held.id, delayed.id, finished.id]) expect(await redis.exists(`${own}:msg:${id}`), id).toBe(1);
    expect(await s.sweepNeverQueued(10 * 60_000)).toBe(0);
  });

  it('walks a large keyspace in batches', async () => {
    const ids = await Promise.all(Array.from({ length: 1200 }, () => halfStored(old(20))));
    expect(await s.sweepNeverQueued(10 * 60_000)).toBe(1200);
    expect(await redis.exists(...ids.map((id) => `${own}:msg:${id}`))).toBe(0);
  });
});
