/**
 * The relay answers CONNEG from its registry, and for other recipients from what a
 * next hop told it (the capability cache), in RFC 4141's shape.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { CapabilityCache } from '../../src/capabilities/cache.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { Dialog } from '../helpers/dialog.ts';

const prefix = uniquePrefix('e2e-conneg');
const redis = new Redis(REDIS_URL);
let relay: RelayProcess;

beforeAll(async () => {
  await new CapabilityCache(redis, { prefix }).set('fax@hop.test', { kind: 'known', expression: '(& (type="image/tiff") (color=binary))', source: 'conneg' });
  relay = await startRelay({
    config: { capabilities: { '*@example.org': '(type="text/plain")' } },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix, RELAY_SMARTHOST: '127.0.0.1:9' },
  });
});

afterAll(async () => {
  await relay?.stop();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('CONNEG answers of a running relay', () => {
  it('answers from the registry, from a cached next-hop answer, and "not known" otherwise', async () => {
    const d = await Dialog.connect(relay.port);
    await d.expect(220);
    await d.command('EHLO client.test', 250);
    await d.command('MAIL FROM:<>', 250);
    expect((await d.command('RCPT TO:<anyone@example.org> CONNEG', 250)).raw).toEqual(['250-2.1.5 <anyone@example.org> recipient ok', '250 2.1.5 CONNEG (type="text/plain")']);
    expect((await d.command('RCPT TO:<fax@hop.test> CONNEG=OPTIONAL', 250)).raw).toEqual(['250-2.1.5 <fax@hop.test> recipient ok', '250 2.1.5 CONNEG (& (type="image/tiff") (color=binary))']);
    expect((await d.command('RCPT TO:<who@else.test> CONNEG', 250)).raw).toEqual(['250 2.1.5 <who@else.test> recipient ok']);
    await d.command('QUIT', 221);
  });
});
