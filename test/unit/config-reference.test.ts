/**
 * The README's configuration reference is generated from the schema
 * (scripts/config-reference.ts): every key has a description, and the README
 * holds exactly what `npm run docs:config` would write.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configRows, withReference } from '../../scripts/config-reference.ts';

describe('configuration reference', () => {
  it('documents every key of the schema, with the default config/relay.yaml shows', () => {
    const rows = configRows();
    const keys = rows.map((r) => r.key);
    for (const k of ['listen', 'routes', 'redis.embedded.appendfsync', 'tls.key', 'auth.users', 'queue.retrySchedule', 'dns.srv', 'http.dashboard', 'capabilities', 'policies']) expect(keys).toContain(k);
    expect(rows.find((r) => r.key === 'listen')?.default).toBe('`127.0.0.1:2525`');
    expect(rows.find((r) => r.key === 'hostname')?.default).toBe('unset');
  });

  it('is up to date in the README (run `npm run docs:config` after changing the schema)', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    expect(withReference(readme)).toBe(readme);
  });
});
