/**
 * `drucof-relay explain ID` as a process against real Redis: a message written
 * with the store the worker uses, read back by the CLI the way an operator runs it.
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import type { Envelope } from '../../src/model/envelope.ts';
import { newRecipient, type RecipientState } from '../../src/model/recipient.ts';
import { reply } from '../../src/model/reply.ts';
import { MessageStore } from '../../src/queue/store.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const prefix = uniquePrefix('e2e-explain');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
const id = `EX${randomUUID().slice(0, 8).toUpperCase()}`;
const AT = '2026-11-23T10:00:00.000Z';

const envelope: Envelope = {
  id,
  mailFrom: 'alice@example.com',
  body: '8BITMIME',
  smtpUtf8: false,
  client: { address: '127.0.0.1', helo: 'client.test' },
  receivedAt: '2026-11-23T09:59:00.000Z',
  size: 321,
};

const converted: RecipientState = {
  ...newRecipient('fax@example.net', { drucof: true }),
  status: 'converted-and-relayed',
  attempts: 1,
  lastAttemptAt: AT,
  lastReply: reply(250, 0, 0, 'ok'),
  remoteMta: 'mx.example.net',
  decision: {
    branch: 'conneg-ok/usable',
    hop: 'route:example.net',
    hopExtensions: ['CONNEG', 'DRUCOF'],
    capabilities: { kind: 'known', expression: '(& (type="image/jpeg") (pix-x<=1024))', source: 'conneg' },
    plan: {
      target: '(& (type="image/jpeg") (pix-x<=1024))',
      possible: true,
      loss: 32,
      parts: [
        { path: '1', type: 'text/plain', action: 'keep', usable: true },
        { path: '2', type: 'image/png', action: 'convert', chain: ['sharp/png-to-jpeg'], loss: 32 },
      ],
    },
    conversion: {
      host: 'relay.test',
      date: 'Mon, 23 Nov 2026 10:00:00 +0000',
      loss: 32,
      parts: [
        {
          path: '2',
          before: { type: 'image/png', 'pix-x': 2048, 'pix-y': 1536 },
          after: { type: 'image/jpeg', 'pix-x': 1024, 'pix-y': 768 },
          chain: ['sharp/png-to-jpeg'],
          loss: 32,
        },
      ],
    },
    at: AT,
  },
};

const refused: RecipientState = {
  ...newRecipient('old@example.org', { drucof: true }),
  status: 'failed',
  attempts: 1,
  lastAttemptAt: AT,
  lastReply: reply(550, 3, 3, 'the next hop supports neither CONNEG nor DRUCOF: no way to carry the DRUCOF request'),
  decision: { branch: 'neither', hop: 'mx:example.org', hopExtensions: [], capabilities: { kind: 'unknown' }, at: AT },
};

const plain: RecipientState = { ...newRecipient('bob@example.com'), status: 'relayed', attempts: 1, lastAttemptAt: AT, lastReply: reply(250, 0, 0, 'queued'), remoteMta: 'mx.example.com' };
const waiting = newRecipient('later@example.net', { drucof: true });

function cli(...args: string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'drucof-explain-'));
  writeFileSync(join(dir, 'c.yaml'), 'hostname: relay.test\n');
  return spawnSync(process.execPath, ['bin/drucof-relay.js', 'explain', ...args, '--config', join(dir, 'c.yaml')], {
    encoding: 'utf8',
    env: { ...process.env, REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
    timeout: 20_000,
  });
}

beforeAll(async () => {
  // Queued as the relay queues it, then the attempt's outcomes written back as the worker does.
  await store.enqueue(envelope, [waiting, waiting, plain, waiting], Buffer.from('Subject: x\r\n\r\nbody\r\n'));
  await store.saveRecipients(id, new Map([[0, converted], [1, refused]]));
});

afterAll(async () => {
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('drucof-relay explain', () => {
  it('prints, per recipient, the branch, hop, capabilities and source, plan, conversion and outcome', () => {
    const run = cli(id);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const out = run.stdout;
    expect(out.split('\n')[0]).toBe(`${id}  from <alice@example.com>  arrived 2026-11-23T09:59:00.000Z  (4 recipients)`);
    for (const line of [
      '<fax@example.net>  converted-and-relayed  (attempt 1, 2026-11-23T10:00:00.000Z)',
      "  DRUCOF: yes — branch conneg-ok/usable: the recipient's capabilities are known and the relay made the content usable",
      '  next hop: route:example.net (advertises CONNEG, DRUCOF)',
      `  capabilities: (& (type="image/jpeg") (pix-x<=1024))  [from the next hop's CONNEG answer]`,
      '  plan: possible, loss 32',
      '    part 1 text/plain: keep',
      '    part 2 image/png: convert via sharp/png-to-jpeg (loss 32)',
      '  converted: part 2 image/png -> image/jpeg via sharp/png-to-jpeg (loss 32), by relay.test at Mon, 23 Nov 2026 10:00:00 +0000',
      '    before: (& (type="image/png") (pix-x=2048) (pix-y=1536))',
      '    after:  (& (type="image/jpeg") (pix-x=1024) (pix-y=768))',
      '  outcome: 250 2.0.0 ok (relayed by mx.example.net)',
      '<old@example.org>  failed  (attempt 1, 2026-11-23T10:00:00.000Z)',
      '  next hop: mx:example.org (advertises neither CONNEG nor DRUCOF)',
      '  capabilities: unknown (no source had any for this recipient)',
      '  outcome: failed: 550 5.3.3 the next hop supports neither CONNEG nor DRUCOF: no way to carry the DRUCOF request',
      '<bob@example.com>  relayed  (attempt 1, 2026-11-23T10:00:00.000Z)',
      '  no DRUCOF: relayed as the sender wrote it, never converted',
      '  outcome: 250 2.0.0 queued (relayed by mx.example.com)',
      '<later@example.net>  queued  (not attempted yet)',
      '  DRUCOF: yes — not decided yet',
    ]) {
      expect(out.split('\n'), line).toContain(line);
    }
    expect(out).toMatch(/branch neither: the next hop supports neither CONNEG nor DRUCOF/);
  });

  it('--json prints the envelope and recipients as stored', () => {
    const run = cli(id, '--json');
    expect(run.status).toBe(0);
    const parsed = JSON.parse(run.stdout) as { envelope: Envelope; recipients: RecipientState[] };
    expect(Object.keys(parsed).sort()).toEqual(['envelope', 'recipients']);
    expect(parsed.envelope).toEqual(envelope);
    expect(parsed.recipients).toEqual([converted, refused, plain, waiting]);
  });

  it('an unknown id: one line, exit 1', () => {
    const run = cli('NOSUCHID');
    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`no message NOSUCHID in the queue (prefix ${prefix}; set RELAY_QUEUE_PREFIX and REDIS_URL as for the relay)\n`);
  });
});
