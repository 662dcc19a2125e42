/** Process-level behaviour: split roles, Redis outage, bad config, graceful SIGTERM. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { startNextHop } from '../peers/next-hop.ts';
import { startRelay } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const prefix = uniquePrefix('e2e-process');
afterAll(() => dropPrefix(prefix));

const send = (port: number, to: string) =>
  nodemailer
    .createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true })
    .sendMail({ envelope: { from: 's@example.com', to: [to] }, raw: `Subject: t\r\n\r\nhi\r\n` });

describe('drucof-relay processes', () => {
  it('`listen` and `work` run apart and share only Redis', async () => {
    const hop = await startNextHop({ dsn: true });
    const env = { RELAY_SMARTHOST: `127.0.0.1:${hop.port}`, REDIS_URL, RELAY_QUEUE_PREFIX: prefix };
    const listener = await startRelay({ command: 'listen', env });
    const info = await send(listener.port, 'split@example.net');
    expect(info.response).toMatch(/^250 /);
    await new Promise((r) => setTimeout(r, 300));
    expect(hop.messages).toHaveLength(0);
    const worker = await startRelay({ command: 'work', env });
    for (let i = 0; i < 200 && hop.messages.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(hop.messages.map((m) => m.rcptTo)).toEqual([['split@example.net']]);
    expect(await listener.stop()).toBe(0);
    expect(await worker.stop()).toBe(0);
    await hop.close();
  });

  it('answers 451 4.3.0 with a retry hint while Redis is unreachable', async () => {
    const relay = await startRelay({ command: 'listen', env: { REDIS_URL: 'redis://127.0.0.1:1', RELAY_QUEUE_PREFIX: prefix } });
    const started = Date.now();
    await expect(send(relay.port, 'x@example.net')).rejects.toMatchObject({ responseCode: 451, response: expect.stringMatching(/^451 4\.3\.0 \[RETRY-AFTER \d+\]/) });
    expect(Date.now() - started).toBeLessThan(10_000);
    await relay.stop();
  });

  it('refuses a config with an unknown key in one line naming its path, exit code 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'drucof-cfg-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'limits:\n  maxMesageSize: 10\n');
    const r = spawnSync(process.execPath, ['bin/drucof-relay.js', 'start', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe(`drucof-relay: ${file}: limits.maxMesageSize: unknown key`);
  });
});
