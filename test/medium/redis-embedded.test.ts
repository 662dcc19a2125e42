/** The embedded-Redis default: a private redis-server child with AOF, or a one-line error. */
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NoRedisError, chooseRedis, pingRedis } from '../../src/ops/redis-embedded.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { freePort } from '../helpers/ports.ts';

describe('chooseRedis', () => {
  it('uses REDIS_URL as given', async () => {
    const c = await chooseRedis({ url: 'redis://example:1', dir: 'x', port: 1, appendfsync: 'always', log: silentLogger });
    expect(c.url).toBe('redis://example:1');
  });

  it('starts a private redis-server with AOF on loopback when none answers, and stops it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drucof-redis-'));
    const port = await freePort();
    const c = await chooseRedis({ dir, port, appendfsync: 'always', log: silentLogger, sharedPort: await freePort() });
    try {
      expect(c.url).toBe(`redis://127.0.0.1:${port}`);
      expect(await pingRedis('127.0.0.1', port)).toBe(true);
      const files = readdirSync(dir, { recursive: true }).map(String);
      expect(files.some((f) => f.startsWith('appendonly'))).toBe(true);
    } finally {
      await c.stop();
    }
    expect(await pingRedis('127.0.0.1', port)).toBe(false);
    expect(existsSync(join(dir, 'redis.log'))).toBe(true);
  });

  it('says in one line how to get Redis when redis-server is missing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'drucof-redis-'));
    const attempt = chooseRedis({ dir, port: await freePort(), appendfsync: 'always', log: silentLogger, sharedPort: await freePort(), redisServer: 'no-such-redis-server' });
    await expect(attempt).rejects.toBeInstanceOf(NoRedisError);
    await expect(attempt).rejects.toThrow(/^no Redis answers on 127\.0\.0\.1:\d+ and redis-server is not installed: install Redis .* or set REDIS_URL/);
  });
});
