/**
 * Clients that half-close (libraries.md §1, "Clients that half-close after a
 * pipelined QUIT"): Exim sends the final dot, pipelines QUIT and shuts down its
 * sending side before it reads the reply to the data. With an asynchronous store
 * (every Redis write is) smtp-server as shipped drops the 250 and the 221; this
 * guards the connection subclass's fix. A slowed store makes the race certain.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { createInbound, type Inbound } from '../../src/inbound/index.ts';
import type { Envelope } from '../../src/model/envelope.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { MessageStore } from '../../src/queue/store.ts';
import { selfSignedCert } from '../helpers/tls.ts';
import { Dialog } from '../helpers/dialog.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

/** The real store, answering late (a slow Redis, an fsync). */
class SlowStore extends MessageStore {
  delayMs = 500;
  override async enqueue(envelope: Envelope, recipients: readonly RecipientState[], body: Buffer): Promise<string> {
    await sleep(this.delayMs);
    return super.enqueue(envelope, recipients, body);
  }
}

const prefix = uniquePrefix('inbound-halfclose');
const redis = new Redis(REDIS_URL);
const store = new SlowStore(redis, prefix);
let inbound: Inbound | undefined;

async function start(raw: Record<string, unknown> = {}): Promise<number> {
  inbound = createInbound({ config: parseConfig({ listen: '127.0.0.1:0', ...raw }), store, log: silentLogger, hostname: 'relay.test' });
  return (await inbound.listen()).port;
}

afterEach(async () => {
  await inbound?.close(200);
  inbound = undefined;
});

afterAll(async () => {
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('half-close after a pipelined QUIT (Exim)', () => {
  it.each([0, 500, 1500])('still answers 250 [QUEUEID …] and 221 when the store takes %i ms', async (delay) => {
    store.delayMs = delay;
    const d = await Dialog.connect(await start());
    await d.hello('exim.test');
    d.write('MAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n');
    await d.expect(250, '2.1.0');
    await d.expect(250, '2.1.5');
    await d.expect(354);
    // The final dot, QUIT pipelined behind it, then shutdown(SHUT_WR).
    d.write('Subject: exim\r\n\r\nhello\r\n.\r\nQUIT\r\n');
    d.end();
    const r = await d.expect(250, '2.0.0', 10_000);
    expect(r.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/);
    await d.expect(221);
    await d.closed();
    const m = await store.load(r.reply!.tags!.queueId!);
    expect(m?.body.toString()).toMatch(/\r\n\r\nhello\r\n$/);
  });

  it('also when everything, EHLO to QUIT, arrives in one write followed by FIN', async () => {
    store.delayMs = 300;
    const d = await Dialog.connect(await start());
    await d.expect(220);
    d.write('EHLO exim.test\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\nSubject: all\r\n\r\nx\r\n.\r\nQUIT\r\n');
    d.end();
    await d.expect(250); // EHLO
    await d.expect(250, '2.1.0');
    await d.expect(250, '2.1.5');
    await d.expect(354);
    const r = await d.expect(250, '2.0.0', 10_000);
    await d.expect(221);
    expect(await store.load(r.reply!.tags!.queueId!)).toBeDefined();
  });

  it('closes promptly when a client half-closes without QUIT, after answering what it sent', async () => {
    store.delayMs = 300;
    const d = await Dialog.connect(await start());
    await d.hello();
    d.write('MAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n');
    await d.expect(250);
    await d.expect(250);
    await d.expect(354);
    d.write('Subject: nq\r\n\r\nx\r\n.\r\n');
    d.end();
    const started = Date.now();
    await d.expect(250, '2.0.0', 10_000);
    await d.closed();
    expect(Date.now() - started).toBeLessThan(3000); // not the idle timeout
  });

  it('stores nothing when the client half-closes in the middle of the data', async () => {
    store.delayMs = 0;
    const d = await Dialog.connect(await start());
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command('RCPT TO:<r@b.test>', 250);
    await d.command('DATA', 354);
    const before = (await redis.keys(`${prefix}:msg:*`)).length;
    d.write('Subject: cut\r\n\r\npartial line');
    d.end();
    await d.closed();
    await sleep(200);
    expect((await redis.keys(`${prefix}:msg:*`)).length).toBe(before);
  });
});

describe('half-close after the dot with a per-recipient sequence (PRDR / INLINE-DSN, A4b)', () => {
  const policies = {
    'a@b.test': { acceptAll: true },
    'fighter@b.test': { refuseWords: ['fight'] },
    '*@b.test': { maxSize: 1_000_000 },
  };

  it.each([
    ['PRDR', [250, 250, 250, 250], ['353 PRDR content analysis beginning', '250 2.1.5 <a@b.test> accepts the content', '550 5.6.0 <fighter@b.test> refuses the content', '250 2.1.5 <c@b.test> accepts the content']],
    ['INLINE-DSN', [250, 250, 352, 352], ['353 data looks okay but wait for confirmation', '550 5.6.0 <fighter@b.test> refuses the content', '250 2.1.5 <c@b.test> accepts the content']],
  ] as const)('%s: the whole sequence, the final reply and 221 go out when the store takes 700 ms', async (param, rcptCodes, lines) => {
    store.delayMs = 700;
    const d = await Dialog.connect(await start({ policies }));
    await d.hello('exim.test');
    d.write(`MAIL FROM:<s@a.test> ${param}\r\nRCPT TO:<a@b.test>\r\nRCPT TO:<fighter@b.test>\r\nRCPT TO:<c@b.test>\r\nDATA\r\n`);
    const before = [];
    for (let i = 0; i < 4; i++) before.push((await d.read()).code);
    expect(before).toEqual(rcptCodes);
    await d.expect(354);
    d.write('Subject: exim\r\n\r\nwe fight\r\n.\r\nQUIT\r\n');
    d.end();
    const got: string[] = [];
    for (let i = 0; i < lines.length; i++) got.push((await d.read(10_000)).text);
    expect(got).toEqual(lines);
    const final = await d.expect(250, '2.0.0', 10_000);
    await d.expect(221);
    await d.closed();
    const m = await store.load(final.reply!.tags!.queueId!);
    expect(m?.recipients.map((r) => r.address)).toEqual(['a@b.test', 'c@b.test']);
  });

  it('PRDR: also when everything, EHLO to QUIT, arrives in one write followed by FIN', async () => {
    store.delayMs = 300;
    const d = await Dialog.connect(await start({ policies }));
    await d.expect(220);
    d.write('EHLO exim.test\r\nMAIL FROM:<s@a.test> PRDR\r\nRCPT TO:<fighter@b.test>\r\nRCPT TO:<c@b.test>\r\nDATA\r\nSubject: all\r\n\r\nfight\r\n.\r\nQUIT\r\n');
    d.end();
    await d.closed();
    expect(d.transcript).toMatch(
      /\r\n354 [^\r]*\r\n353 PRDR content analysis beginning\r\n550 5\.6\.0 <fighter@b\.test> refuses the content\r\n250 2\.1\.5 <c@b\.test> accepts the content\r\n250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] accepted for some recipients\r\n221 [^\r]*\r\n$/,
    );
  });
});

describe('half-close inside STARTTLS', () => {
  const certificate = selfSignedCert();
  const { key, cert } = certificate ?? { key: '', cert: '' };

  it.skipIf(!certificate)('answers 250 and 221 over TLS to a client that half-closes after the pipelined QUIT', async () => {
    store.delayMs = 500;
    const d = await Dialog.connect(await start({ tls: { key, cert } }));
    await d.hello('exim.test');
    await d.command('STARTTLS', 220, '2.0.0');
    d.socket.removeAllListeners('data');
    d.socket.pause();
    const s = tls.connect({ socket: d.socket as net.Socket, rejectUnauthorized: false });
    await new Promise((resolve, reject) => s.once('secureConnect', resolve).once('error', reject));
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (out += c));
    const ended = new Promise((resolve) => s.once('end', resolve));
    s.write('EHLO exim.test\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n');
    for (let i = 0; i < 100 && !out.includes('354 '); i++) await sleep(20);
    s.write('Subject: tls\r\n\r\nx\r\n.\r\nQUIT\r\n');
    s.end();
    await ended;
    expect(out).toMatch(/\r\n250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued\r\n221 /);
    s.destroy();
  });
});
