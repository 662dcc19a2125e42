/** swaks, the tool users test relays with, as the upstream client. */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNextHop } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const hasSwaks = spawnSync('swaks', ['--version']).status === 0;
if (!hasSwaks) console.log('swaks: not installed (apt-get install swaks), swaks test skipped');

const prefix = uniquePrefix('e2e-swaks');
let hop: Awaited<ReturnType<typeof startNextHop>>;
let relay: RelayProcess;

const swaks = (...args: string[]) => spawnSync('swaks', ['--server', `127.0.0.1:${relay.port}`, '--from', 's@example.com', ...args], { encoding: 'utf8', timeout: 20_000 });

describe.runIf(hasSwaks)('swaks as the client', () => {
  beforeAll(async () => {
    hop = await startNextHop({ dsn: true });
    relay = await startRelay({ env: { RELAY_SMARTHOST: `127.0.0.1:${hop.port}`, REDIS_URL, RELAY_QUEUE_PREFIX: prefix } });
  });
  afterAll(async () => {
    await relay?.stop();
    await hop?.close();
    await dropPrefix(prefix);
  });

  it('relays a pipelined swaks message with an attachment', async () => {
    const r = swaks('--to', 'sw@example.net', '--pipeline', '--header', 'Subject: swaks test', '--attach-type', 'application/octet-stream', '--attach', '@package.json');
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/<-\s+250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued/);
    for (let t = 0; t < 200 && hop.messages.length === 0; t++) await new Promise((res) => setTimeout(res, 50));
    expect(hop.messages[0]?.rcptTo).toEqual(['sw@example.net']);
    expect(hop.messages[0]?.body.toString()).toContain('Subject: swaks test');
  });

  it('leaves nothing queued when swaks quits after RCPT', async () => {
    const before = hop.messages.length;
    const r = swaks('--to', 'probe@example.net', '--quit-after', 'RCPT');
    expect(r.stdout).toMatch(/<-\s+250 2\.1\.5 /);
    await new Promise((res) => setTimeout(res, 500));
    expect(hop.messages.length).toBe(before);
  });
});
