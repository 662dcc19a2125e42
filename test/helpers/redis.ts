/**
 * Real Redis for tests (never mocked): REDIS_URL or 127.0.0.1:6379, and a unique
 * key prefix per test file so files run in parallel without meeting.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export function uniquePrefix(name: string): string {
  return `test-${name}-${randomUUID().slice(0, 8)}`;
}

/** Deletes every key under a prefix (call in afterAll). */
export async function dropPrefix(prefix: string): Promise<void> {
  const r = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, batch] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (batch.length > 0) await r.del(...batch);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}
