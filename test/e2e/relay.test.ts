/**
 * The relay as a user runs it: `drucof-relay start` as a child process, real Redis,
 * a real SMTP next hop, nodemailer as the upstream client.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { Redis } from 'ioredis';
import { parseConfig } from '../../src/config/load.ts';
import { MessageStore } from '../../src/queue/store.ts';
import { queueList, queueShow } from '../../src/cli/queue.ts';
import { startNextHop } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const prefix = uniquePrefix('e2e-relay');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
let hop: Awaited<ReturnType<typeof startNextHop>>;
let relay: RelayProcess;

const waitFor = async <T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

function client() {
  return nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true, pool: false });
}

const rawMessage = (subject: string, body = 'Hello.\r\n') =>
  `From: s@example.com\r\nTo: r@example.net\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@example.com>\r\nX-Odd:   spacing\tkept  \r\n\r\n${body}`;

beforeAll(async () => {
  hop = await startNextHop({ dsn: true });
  relay = await startRelay({
    config: { queue: { retrySchedule: ['1s'] } },
    env: { RELAY_SMARTHOST: `127.0.0.1:${hop.port}`, REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
});

afterAll(async () => {
  await relay?.stop();
  await hop?.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('drucof-relay start', () => {
  it('relays a message byte-intact apart from one added Received: header, and the 250 names the queue id', async () => {
    const body = 'Line one\r\n.leading dot\r\n8-bit: \u00e9t\u00e9\r\n' + 'x'.repeat(998) + '\r\n';
    const raw = rawMessage('intact', body);
    const info = await client().sendMail({ envelope: { from: 's@example.com', to: ['intact@example.net'] }, raw });
    const queueId = /\[QUEUEID ([^\]]+)\]/.exec(info.response)?.[1];
    expect(info.response).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\]/);
    const got = await waitFor('delivery', () => hop.messages.find((m) => m.rcptTo.includes('intact@example.net')));
    const text = got.body.toString('utf8');
    const received = /^Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n/.exec(text);
    expect(received?.[0]).toContain(`id ${queueId}`);
    expect(text.slice(received![0].length)).toBe(raw);
  });

  it('passes DSN parameters on to a DSN-capable hop, per recipient and verbatim', async () => {
    const c = client();
    await c.sendMail({
      envelope: { from: 's@example.com', to: ['d1@example.net'] },
      raw: rawMessage('dsn'),
      dsn: { id: 'QQ314159=x', return: 'headers', notify: ['success', 'failure'], recipient: 'orig+tag@example.net' },
    });
    const got = await waitFor('delivery', () => hop.messages.find((m) => m.rcptTo.includes('d1@example.net')));
    expect(got.mailLine).toMatch(/ RET=HDRS/);
    expect(got.mailLine).toMatch(/ ENVID=QQ314159\+3Dx( |$)/);
    expect(got.rcptLines[0]).toMatch(/NOTIFY=SUCCESS,FAILURE/);
    expect(got.rcptLines[0]).toMatch(/ORCPT=rfc822;orig\+2Btag@example\.net/);
  });

  it('retries a recipient the hop defers (4xx) until it accepts, and only that recipient', async () => {
    let refusals = 2;
    hop.setScript({
      dsn: true,
      rcpt: (a) => (a === 'later@example.net' && refusals-- > 0 ? { code: 451, text: '4.3.2 try again later' } : undefined),
    });
    const info = await client().sendMail({ envelope: { from: 's@example.com', to: ['later@example.net', 'now@example.net'] }, raw: rawMessage('retry') });
    const queueId = /\[QUEUEID ([^\]]+)\]/.exec(info.response)![1]!;
    await waitFor('retried delivery', () => hop.messages.find((m) => m.rcptTo.includes('later@example.net')), 15_000);
    expect(hop.messages.filter((m) => m.rcptTo.includes('now@example.net'))).toHaveLength(1);
    const meta = await waitFor('records', async () => {
      const m = await store.loadMeta(queueId);
      return m?.recipients.every((r) => r.status === 'relayed') ? m : undefined;
    });
    expect(meta.recipients.find((r) => r.address === 'later@example.net')?.attempts).toBe(3);
    expect(meta.recipients.find((r) => r.address === 'now@example.net')?.attempts).toBe(1);
    hop.setScript({ dsn: true });
  });

  it('marks a recipient failed on a 5xx, keeping the full reply', async () => {
    hop.setScript({ dsn: true, rcpt: (a) => (a === 'gone@example.net' ? { code: 550, text: '5.1.1 <gone@example.net>: no such user' } : undefined) });
    const info = await client().sendMail({ envelope: { from: 's@example.com', to: ['gone@example.net'] }, raw: rawMessage('fail') });
    const queueId = /\[QUEUEID ([^\]]+)\]/.exec(info.response)![1]!;
    const r = await waitFor('failure', async () => (await store.loadMeta(queueId))?.recipients.find((x) => x.status === 'failed'));
    expect(r.lastReply).toEqual({ code: 550, enhanced: '5.1.1', lines: ['<gone@example.net>: no such user'] });
    expect(r.remoteMta).toBeTruthy();
    hop.setScript({ dsn: true });
  });

  it('`queue list` and `queue show` read the running relay’s queue', async () => {
    hop.setScript({ dsn: true, rcpt: () => ({ code: 451, text: '4.4.1 hop busy' }) });
    const info = await client().sendMail({ envelope: { from: 's@example.com', to: ['stuck@example.net'] }, raw: rawMessage('stuck') });
    const queueId = /\[QUEUEID ([^\]]+)\]/.exec(info.response)![1]!;
    await waitFor('deferral', async () => (await store.loadMeta(queueId))?.recipients[0]?.status === 'deferred' || undefined);
    const config = parseConfig({}, { REDIS_URL, RELAY_QUEUE_PREFIX: prefix });
    const lines: string[] = [];
    expect(await queueList(config, (l) => lines.push(l))).toBeGreaterThanOrEqual(1);
    expect(lines.join('\n')).toContain(queueId);
    expect(lines.join('\n')).toMatch(/<stuck@example\.net> deferred/);
    const shown: string[] = [];
    expect(await queueShow(config, queueId, false, (l) => shown.push(l))).toBe(true);
    expect(shown.join('\n')).toMatch(/last reply: 451 4\.4\.1 hop busy/);
    hop.setScript({ dsn: true });
  });
});
