/**
 * Issue 8 item 2, small: Redis (private, AOF appendfsync always) is restarted
 * twice under load — SIGTERM, then SIGKILL — while 600 messages × 3 recipients
 * flow through one relay process that is never restarted. No accepted message is
 * lost, every 250 names a stored message, clients sending during an outage get
 * 451 4.3.0 and never a dropped connection. The full-size run is
 * test/faults/redis-restart.ts.
 *
 * Also, in-process: a write Redis applied but never answered (it went away in
 * between) is refused with 451, and its message is removed once Redis answers
 * again, so it is not delivered behind the client's back.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { children } from '../../bench/relay-child.ts';
import { startRedis } from '../../bench/redis.ts';
import { connectForListener } from '../../src/queue/redis.ts';
import { MessageStore, StoreUnavailableError } from '../../src/queue/store.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import type { Envelope } from '../../src/model/envelope.ts';
import { newQueueId } from '../../src/queue/queue-id.ts';
import { runRedisRestart } from './redis-restart.ts';

afterAll(() => children.killAll());

describe('Redis restarts under load', () => {
  it('loses nothing, answers 451 4.3.0 during the outages, drops no connection, recovers by itself', async () => {
    const lines: string[] = [];
    const r = await runRedisRestart({
      messages: 600,
      recipients: 3,
      sessions: 6,
      restarts: 2,
      ratePerSec: 60,
      downMs: [1000, 2000],
      settleTimeoutMs: 60_000,
      seed: 8,
      log: (l) => lines.push(l),
    });
    console.log(lines.join('\n'));
    expect(r.restarts).toBe(2);
    expect(r.accepted).toBeGreaterThan(300);
    expect(r.refused451).toBeGreaterThan(0); // the outages were seen by clients
    expect(r.otherRefusals).toBe(0);
    expect(r.dropped).toBe(0);
    expect(r.unacknowledged).toBe(0);
    expect(r.notStored).toBe(0);
    expect(r.unknownAtSink).toBe(0);
    expect(r.lostSamples).toEqual([]);
    expect(r.lost).toBe(0);
    expect(r.queueDrained).toBe(true);
    expect(r.ok).toBe(true);
  }, 90_000);

  it('removes a message whose write was applied but refused, once Redis answers again', async () => {
    const redis = await startRedis({ appendfsync: 'no' });
    const conn = connectForListener(redis.url);
    conn.on('error', () => {});
    const store = new MessageStore(conn, 'undo-test');
    const probe = new Redis(redis.url);
    try {
      if (conn.status !== 'ready') await new Promise((res) => conn.once('ready', res));
      // Redis takes the hash but the answer never comes back (it went away in between) …
      const hset = conn.hset.bind(conn) as (...a: unknown[]) => Promise<number>;
      (conn as unknown as { hset: unknown }).hset = async (...a: unknown[]) => {
        await hset(...a);
        throw new Error('Connection is closed.');
      };
      // … and is still away for the undo.
      const del = conn.del.bind(conn) as (...a: unknown[]) => Promise<number>;
      let refuseDel = true;
      (conn as unknown as { del: unknown }).del = (...a: unknown[]) => (refuseDel ? Promise.reject(new Error('Connection is closed.')) : del(...a));

      const id = newQueueId();
      const envelope: Envelope = { id, mailFrom: 's@a.test', body: '7BIT', smtpUtf8: false, client: { address: '127.0.0.1', helo: 'c' }, receivedAt: new Date().toISOString(), size: 1 };
      await expect(store.enqueue(envelope, [newRecipient('r@b.test')], Buffer.from('x'))).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(await probe.exists(`undo-test:msg:${id}`)).toBe(1); // applied, though refused
      expect(store.pendingUndos).toBe(1);

      // Redis answers again: the reconnect ('ready') removes it.
      refuseDel = false;
      conn.emit('ready');
      for (let i = 0; i < 50 && store.pendingUndos > 0; i++) await new Promise((res) => setTimeout(res, 20));
      expect(store.pendingUndos).toBe(0);
      expect(await probe.exists(`undo-test:msg:${id}`)).toBe(0);
    } finally {
      probe.disconnect();
      await store.close().catch(() => {});
      conn.disconnect();
      await redis.stop();
    }
  });
});
