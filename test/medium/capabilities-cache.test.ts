/**
 * The capability cache against a real Redis (unique prefix per file): answers
 * kept 1 hour, failed queries 5 minutes, EHLO keywords 1 hour; keys under
 * `${prefix}:caps:` and `${prefix}:ehlo:`; Redis trouble is a miss, never an
 * error. Then the pool with the cache: probe answers and delivery queries are
 * stored, a second process (another pool) uses them without asking, expired
 * entries are asked again, and hop keywords come from Redis without connecting.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CapabilityCache, recipientKey } from '../../src/capabilities/cache.ts';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import type { NextHop } from '../../src/model/delivery.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { OutboundPool, type OutboundOptions } from '../../src/outbound/index.ts';
import { freePort } from '../helpers/ports.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { startNextHop, type NextHopPeer, type NextHopScript } from '../peers/next-hop.ts';

const prefix = uniquePrefix('caps-cache');
let redis: Redis;

beforeAll(() => {
  redis = new Redis(REDIS_URL);
});
afterAll(async () => {
  await dropPrefix(prefix);
  redis.disconnect();
});

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let n = 0;
/** A cache under a fresh sub-prefix, so tests do not see each other's keys. */
function cache(over: Partial<ConstructorParameters<typeof CapabilityCache>[1]> = {}): CapabilityCache {
  return new CapabilityCache(redis, { prefix: `${prefix}:${++n}`, ...over });
}

const known: CapabilityAnswer = { kind: 'known', expression: '(type="text/plain")', source: 'conneg' };
const failed: CapabilityAnswer = { kind: 'query-failed', reason: 'the server answered 451 to the query', source: 'conneg', reply: { code: 451, enhanced: '4.3.0', lines: ['later'] } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('CapabilityCache', () => {
  it('keeps a known answer for 1 hour and a failed query for 5 minutes, under the caps: namespace', async () => {
    const c = cache();
    await c.set('Fax@Example.NET', known);
    await c.set('busy@example.net', failed);
    expect(c.answerKey('Fax@Example.NET')).toBe(`${prefix}:${n}:caps:Fax@example.net`);
    const ttlKnown = await redis.pttl(c.answerKey('Fax@example.net'));
    const ttlFailed = await redis.pttl(c.answerKey('busy@example.net'));
    expect(ttlKnown).toBeGreaterThan(3_590_000);
    expect(ttlKnown).toBeLessThanOrEqual(3_600_000);
    expect(ttlFailed).toBeGreaterThan(290_000);
    expect(ttlFailed).toBeLessThanOrEqual(300_000);
    expect(await c.get('Fax@example.net')).toEqual(known);
    expect(await c.get('busy@EXAMPLE.net')).toEqual(failed);
    expect(await c.get('nobody@example.net')).toBeUndefined();
  });

  it('the domain is case-insensitive, the local part is not', () => {
    expect(recipientKey('Fax@Example.NET')).toBe('Fax@example.net');
    expect(recipientKey('postmaster')).toBe('postmaster');
  });

  it('entries expire after their TTL', async () => {
    const c = cache({ answerTtl: 700, failureTtl: 100 });
    await c.set('a@example.net', known);
    await c.set('b@example.net', failed);
    await sleep(250);
    expect(await c.get('a@example.net')).toEqual(known);
    expect(await c.get('b@example.net')).toBeUndefined();
    await sleep(600);
    expect(await c.get('a@example.net')).toBeUndefined();
  });

  it('does not store "unknown" (nobody’s answer), and reads several in one round trip', async () => {
    const c = cache();
    await c.set('u@example.net', { kind: 'unknown' });
    expect(await redis.exists(c.answerKey('u@example.net'))).toBe(0);
    await c.set('a@example.net', known);
    await c.set('b@example.net', failed);
    const many = await c.getMany(['a@example.net', 'u@example.net', 'b@example.net']);
    expect([...many.keys()]).toEqual(['a@example.net', 'b@example.net']);
  });

  it('a value it cannot read is a miss, never a wrong answer', async () => {
    const c = cache();
    await redis.set(c.answerKey('x@example.net'), 'not json');
    await redis.set(c.answerKey('y@example.net'), JSON.stringify({ kind: 'known' }));
    expect(await c.get('x@example.net')).toBeUndefined();
    expect(await c.get('y@example.net')).toBeUndefined();
  });

  it('keeps EHLO keywords per hop under the ehlo: namespace, with their TTL and reading time', async () => {
    const c = cache({ ehloTtl: 60_000 });
    await c.setHopKeywords('smarthost:127.0.0.1:2526', ['pipelining', 'CONNEG', 'DRUCOF'], 1234);
    expect(c.ehloKey('smarthost:127.0.0.1:2526')).toBe(`${prefix}:${n}:ehlo:smarthost:127.0.0.1:2526`);
    const ttl = await redis.pttl(c.ehloKey('smarthost:127.0.0.1:2526'));
    expect(ttl).toBeGreaterThan(59_000);
    const got = await c.hopKeywords('smarthost:127.0.0.1:2526');
    expect(got?.at).toBe(1234);
    expect([...got!.keywords]).toEqual(['PIPELINING', 'CONNEG', 'DRUCOF']);
    expect(await c.hopKeywords('other')).toBeUndefined();
  });

  it('Redis down: reads miss, writes do nothing, onError hears about it, nothing throws', async () => {
    const port = await freePort();
    const dead = new Redis({ port, host: '127.0.0.1', lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    dead.on('error', () => {});
    const errors: string[] = [];
    const c = new CapabilityCache(dead, { prefix: 'x', onError: (_e, op) => errors.push(op) });
    await c.set('a@example.net', known);
    expect(await c.get('a@example.net')).toBeUndefined();
    expect((await c.getMany(['a@example.net'])).size).toBe(0);
    await c.setHopKeywords('h', ['DSN']);
    expect(await c.hopKeywords('h')).toBeUndefined();
    expect(errors).toEqual(['set', 'get', 'mget', 'set', 'get']);
    dead.disconnect();
  });
});

describe('the pool with the cache', () => {
  async function peer(script?: NextHopScript): Promise<NextHopPeer> {
    const p = await startNextHop(script);
    cleanups.push(() => p.close());
    return p;
  }
  function pool(c: CapabilityCache, over: Partial<OutboundOptions> = {}): OutboundPool {
    const o = new OutboundPool({ hostname: 'relay.test', connectionsPerHop: 2, connectTimeout: 3000, greetingTimeout: 3000, commandTimeout: 3000, idleReuse: 5000, tlsVerify: false, log: silentLogger, cache: c, ...over });
    cleanups.push(() => o.close());
    return o;
  }
  const hop = (port: number): NextHop => ({ key: `t:${port}`, hosts: [{ host: '127.0.0.1', port }] });
  const rcptCount = (p: NextHopPeer) => p.commands.filter((c) => c.startsWith('RCPT')).length;

  it('a probe’s answers are cached; another process uses them without asking (known as source cache)', async () => {
    const p = await peer({ extensions: ['CONNEG'], conneg: (a) => (a.startsWith('k') ? { expression: '(type="text/plain")' } : { code: 504, text: '5.5.4 no' }) });
    const c = cache();
    const first = await pool(c).probe(hop(p.port), ['k@example.net', 'f@example.net']);
    expect(first.get('k@example.net')).toEqual({ kind: 'known', expression: '(type="text/plain")', source: 'conneg' });
    expect(await c.get('k@example.net')).toEqual(first.get('k@example.net'));
    expect(await redis.pttl(c.answerKey('f@example.net'))).toBeLessThanOrEqual(300_000);
    const connections = p.connections;
    const rcpts = rcptCount(p);
    const second = await pool(c).probe(hop(p.port), ['k@example.net', 'f@example.net']);
    expect(second.get('k@example.net')).toEqual({ kind: 'known', expression: '(type="text/plain")', source: 'cache' });
    expect(second.get('f@example.net')).toMatchObject({ kind: 'query-failed', reply: { code: 504 } });
    expect(p.connections).toBe(connections);
    expect(rcptCount(p)).toBe(rcpts);
  });

  it('a failed query is asked again once its (shorter) TTL is over; fresh asks regardless', async () => {
    let answer: 'refuse' | 'know' = 'refuse';
    const p = await peer({ extensions: ['CONNEG'], conneg: () => (answer === 'refuse' ? { code: 451, text: '4.3.0 not now' } : { expression: '(type="image/png")' }) });
    const c = cache({ failureTtl: 600 });
    const o = pool(c);
    expect((await o.probe(hop(p.port), ['a@example.net'])).get('a@example.net')).toMatchObject({ kind: 'query-failed' });
    answer = 'know';
    expect((await o.probe(hop(p.port), ['a@example.net'])).get('a@example.net')).toMatchObject({ kind: 'query-failed' });
    await sleep(700);
    expect((await o.probe(hop(p.port), ['a@example.net'])).get('a@example.net')).toMatchObject({ kind: 'known', source: 'conneg' });
    answer = 'refuse';
    expect((await o.probe(hop(p.port), ['a@example.net'])).get('a@example.net')).toMatchObject({ kind: 'known', source: 'cache' });
    expect((await o.probe(hop(p.port), ['a@example.net'], { fresh: true })).get('a@example.net')).toMatchObject({ kind: 'query-failed' });
  });

  it('answers to queries made during a delivery are cached too', async () => {
    const p = await peer({ extensions: ['CONNEG'], conneg: () => ({ expression: '(type="text/plain")' }) });
    const c = cache();
    await pool(c).deliver({
      hop: hop(p.port),
      envelope: { id: 'Q1', mailFrom: 's@example.com', body: '7BIT', smtpUtf8: false, client: { address: '127.0.0.1', helo: 'c' }, receivedAt: '', size: 0 },
      recipients: [newRecipient('a@example.net')],
      body: Buffer.from('x\r\n'),
      perRecipient: new Map([['a@example.net', { conneg: true }]]),
    });
    expect(await c.get('a@example.net')).toEqual({ kind: 'known', expression: '(type="text/plain")', source: 'conneg' });
  });

  it('a hop without CONNEG: the non-query is not cached', async () => {
    const p = await peer();
    const c = cache();
    await pool(c).probe(hop(p.port), ['a@example.net']);
    expect(await c.get('a@example.net')).toBeUndefined();
  });

  it('hop keywords: written by the process that connected, read by another without connecting, read again after their TTL', async () => {
    const p = await peer({ extensions: ['CONNEG', 'DRUCOF'] });
    const c = cache({ ehloTtl: 1000 });
    const k1 = await pool(c).hopKeywords(hop(p.port));
    expect(k1.has('DRUCOF')).toBe(true);
    await sleep(20);
    expect(await c.hopKeywords(`t:${p.port}`)).toMatchObject({ keywords: new Set(k1) });
    const other = pool(c);
    expect([...(await other.hopKeywords(hop(p.port)))]).toEqual([...k1]);
    expect(p.connections).toBe(1);
    await sleep(1100);
    p.setScript({ extensions: ['CONNEG'] });
    expect((await other.hopKeywords(hop(p.port))).has('DRUCOF')).toBe(false);
    expect(p.connections).toBe(2);
  });
});
