/**
 * A next hop that speaks INLINE-DSN refuses one recipient after the data: the relay
 * records that recipient's own verdict, reports it to the sender like any other
 * failure, and counts the others relayed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { Redis } from 'ioredis';
import { simpleParser } from 'mailparser';
import { MessageStore } from '../../src/queue/store.ts';
import { startNextHop } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const prefix = uniquePrefix('e2e-inline-hop');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
let hop: Awaited<ReturnType<typeof startNextHop>>;
let senders: Awaited<ReturnType<typeof startNextHop>>;
let relay: RelayProcess;

beforeAll(async () => {
  hop = await startNextHop({
    dsn: true,
    extensions: ['INLINE-DSN'],
    rcpt: (a) => (a.startsWith('picky') ? { code: 352, text: 'recipient looks okay but wait for confirmation' } : undefined),
    verdict: (a) => (a === 'picky-no@hop.test' ? { code: 550, text: '5.6.0 refuses the content' } : undefined),
  });
  senders = await startNextHop({ dsn: true });
  relay = await startRelay({
    config: { routes: { 'hop.test': `127.0.0.1:${hop.port}`, 'sender.test': `127.0.0.1:${senders.port}` } },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
});

afterAll(async () => {
  await relay?.stop();
  await hop?.close();
  await senders?.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('delivering to an INLINE-DSN next hop', () => {
  it('records each recipient’s own verdict and reports the refused one', async () => {
    const info = await nodemailer
      .createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true })
      .sendMail({ envelope: { from: 's@sender.test', to: ['plain@hop.test', 'picky-no@hop.test', 'picky-yes@hop.test'] }, raw: 'Subject: x\r\n\r\nhello\r\n' });
    const id = /\[QUEUEID ([^\]]+)\]/.exec(info.response)![1]!;
    let states;
    for (let t = 0; t < 200; t++) {
      states = (await store.loadMeta(id))?.recipients;
      if (states?.every((r) => r.status !== 'queued' && r.status !== 'deferred')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(hop.messages[0]?.mailLine).toMatch(/ INLINE-DSN/);
    expect(Object.fromEntries(states!.map((r) => [r.address, r.status]))).toEqual({
      'plain@hop.test': 'relayed',
      'picky-no@hop.test': 'failed',
      'picky-yes@hop.test': 'relayed',
    });
    expect(states!.find((r) => r.address === 'picky-no@hop.test')?.lastReply).toMatchObject({ code: 550, enhanced: '5.6.0' });
    for (let t = 0; t < 200 && senders.messages.length === 0; t++) await new Promise((r) => setTimeout(r, 50));
    const report = await simpleParser(senders.messages[0]!.body, { keepDeliveryStatus: true });
    const ds = report.attachments.find((a) => a.contentType === 'message/delivery-status')!.content.toString();
    expect(ds).toContain('Final-Recipient: rfc822;picky-no@hop.test');
    expect(ds).toContain('Status: 5.6.0');
    expect(ds).not.toContain('picky-yes');
  });
});
