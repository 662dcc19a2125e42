/**
 * The seed dialog of protocols.md A4 (postmaster / fighter / lover / old-user),
 * replayed byte for byte by a raw-socket client against a relay configured with
 * the A10 policies: once against the inbound stage in-process (real Redis
 * store), once against `drucof-relay listen` as a child process; in lock-step
 * and pipelined. The client must get exactly the seed's sequence of codes (and
 * the seed's own texts where the seed fixes them), and the store must hold
 * exactly the accepted recipients. Last, the same message without INLINE-DSN
 * through `drucof-relay start`: the old way, a failure report for fighter.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { createInbound, type Inbound } from '../../src/inbound/index.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { MessageStore } from '../../src/queue/store.ts';
import { Dialog, type WireReply } from '../helpers/dialog.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { startNextHop, type NextHopPeer } from '../peers/next-hop.ts';

/** protocols.md A10, verbatim. */
const A10 = {
  allowNetworks: ['127.0.0.0/8', '::1/128'],
  capabilities: {
    'fax@example.net': '(& (type="image/tiff") (color=binary))',
    '*@example.org': '(type="text/plain")',
  },
  policies: {
    'postmaster@example.net': { acceptAll: true },
    'old-user@example.net': { refuse: '550 5.1.1 this recipient no longer exists' },
    'fighter@example.net': { refuseWords: ['fight'] },
    '*@example.net': { maxSize: 1048576, refuseTypes: ['application/x-msdownload'] },
  },
};

/** The client's side of the seed dialog, as bytes on the wire (the message says "fight"). */
const COMMANDS = [
  'MAIL FROM:<sender@example.com> INLINE-DSN',
  'RCPT TO:<postmaster@example.net>',
  'RCPT TO:<fighter@example.net>',
  'RCPT TO:<lover@example.net>',
  'RCPT TO:<old-user@example.net>',
  'DATA',
];
const MESSAGE =
  'From: sender@example.com\r\nTo: postmaster@example.net, fighter@example.net, lover@example.net, old-user@example.net\r\n' +
  'Subject: the seed dialog\r\nMessage-ID: <seed-000@example.com>\r\n\r\nShall we fight, or shall we love?\r\n';

/** The server's side: the seed's codes, and its texts where the seed fixes them (undefined: any text). */
const EXPECTED: readonly [number, string | RegExp | undefined][] = [
  [250, /^250 2\.1\.0 /], // MAIL
  [250, '250 2.1.5 this recipient accepts all messages'],
  [352, '352 recipient looks okay but wait for confirmation'],
  [352, '352 recipient looks okay but wait for confirmation'],
  [550, '550 5.1.1 this recipient no longer exists'],
  [354, undefined],
  [353, '353 data looks okay but wait for confirmation'],
  [550, '550 5.6.0 <fighter@example.net> refuses the content'],
  [250, '250 2.1.5 <lover@example.net> accepts the content'],
  [250, /^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] data accepted by some users$/],
];

function check(replies: readonly WireReply[]): string {
  expect(replies.map((r) => r.code)).toEqual(EXPECTED.map(([c]) => c));
  EXPECTED.forEach(([, text], i) => {
    if (typeof text === 'string') expect(replies[i]!.text).toBe(text);
    else if (text) expect(replies[i]!.text).toMatch(text);
  });
  return replies[replies.length - 1]!.reply!.tags!.queueId!;
}

/** Lock-step: each command waits for its reply, as the seed is written. */
async function lockStep(port: number): Promise<string> {
  const d = await Dialog.connect(port);
  try {
    await d.expect(220);
    await d.command('EHLO client.example.com', 250);
    const replies: WireReply[] = [];
    for (const c of COMMANDS) replies.push(await d.command(c, EXPECTED[replies.length]![0]));
    d.write(MESSAGE + '.\r\n');
    for (let i = 0; i < 4; i++) replies.push(await d.read());
    await d.quit();
    return check(replies);
  } finally {
    d.destroy();
  }
}

/** Pipelined (RFC 2920): every command in one write, then the data, QUIT and FIN behind the dot (as Exim does). */
async function pipelined(port: number): Promise<string> {
  const d = await Dialog.connect(port);
  try {
    await d.expect(220);
    await d.command('EHLO client.example.com', 250);
    d.write(COMMANDS.map((c) => c + '\r\n').join(''));
    const replies: WireReply[] = [];
    for (let i = 0; i < COMMANDS.length; i++) replies.push(await d.read());
    d.write(MESSAGE + '.\r\nQUIT\r\n');
    d.end();
    for (let i = 0; i < 4; i++) replies.push(await d.read(10_000));
    await d.expect(221);
    await d.closed();
    return check(replies);
  } finally {
    d.destroy();
  }
}

async function expectStored(store: MessageStore, id: string): Promise<void> {
  const m = await store.load(id);
  // Refused recipients are never queued; the accepted ones in one message.
  expect(m?.recipients.map((r) => [r.address, r.status])).toEqual([
    ['postmaster@example.net', 'queued'],
    ['lover@example.net', 'queued'],
  ]);
  expect(m?.envelope.mailFrom).toBe('sender@example.com');
  expect(m?.body.toString().endsWith('\r\n\r\nShall we fight, or shall we love?\r\n')).toBe(true);
}

describe('the seed dialog against the inbound stage (in-process, real Redis)', () => {
  const prefix = uniquePrefix('seed-dialog');
  const redis = new Redis(REDIS_URL);
  const store = new MessageStore(redis, prefix);
  let inbound: Inbound;
  let port: number;

  beforeAll(async () => {
    inbound = createInbound({ config: parseConfig({ listen: '127.0.0.1:0', ...A10 }), store, log: silentLogger, hostname: 'relay.example.net' });
    port = (await inbound.listen()).port;
  });
  afterAll(async () => {
    await inbound.close(200);
    await store.close();
    redis.disconnect();
    await dropPrefix(prefix);
  });

  it('lock-step: exactly the seed codes; postmaster and lover queued', async () => {
    await expectStored(store, await lockStep(port));
  });

  it('pipelined, QUIT and FIN behind the dot: the same codes, then 221', async () => {
    await expectStored(store, await pipelined(port));
  });
});

describe('the seed dialog against `drucof-relay listen` (child process)', () => {
  const prefix = uniquePrefix('seed-dialog-proc');
  const redis = new Redis(REDIS_URL);
  const store = new MessageStore(redis, prefix);
  let relay: RelayProcess;

  beforeAll(async () => {
    relay = await startRelay({ command: 'listen', config: { hostname: 'relay.example.net', ...A10 }, env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix } });
  });
  afterAll(async () => {
    await relay?.stop();
    await store.close();
    redis.disconnect();
    await dropPrefix(prefix);
  });

  it('lock-step and pipelined: exactly the seed codes; postmaster and lover queued', async () => {
    await expectStored(store, await lockStep(relay.port));
    await expectStored(store, await pipelined(relay.port));
  });
});

describe('the same message without INLINE-DSN or PRDR, through `drucof-relay start` (the old way)', () => {
  const prefix = uniquePrefix('seed-dialog-old');
  let hop: NextHopPeer;
  let relay: RelayProcess;

  beforeAll(async () => {
    hop = await startNextHop({ dsn: true });
    relay = await startRelay({
      config: { hostname: 'relay.example.net', queue: { retrySchedule: ['1s'] }, ...A10 },
      env: { RELAY_SMARTHOST: `127.0.0.1:${hop.port}`, REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
    });
  });
  afterAll(async () => {
    await relay?.stop();
    await hop?.close();
    await dropPrefix(prefix);
  });

  it('no 352; lover (and postmaster) relayed, fighter gets its RFC 3464 failure report with the verdict', async () => {
    const d = await Dialog.connect(relay.port);
    await d.expect(220);
    await d.command('EHLO client.example.com', 250);
    d.write(['MAIL FROM:<sender@example.com>', ...COMMANDS.slice(1)].map((c) => c + '\r\n').join(''));
    const codes: number[] = [];
    for (let i = 0; i < COMMANDS.length; i++) codes.push((await d.read()).code);
    expect(codes).toEqual([250, 250, 250, 250, 550, 354]);
    d.write(MESSAGE + '.\r\n');
    const final = await d.expect(250, '2.0.0');
    expect(final.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/);
    await d.quit();

    const deadline = Date.now() + 20_000;
    const relayed = () => hop.messages.find((m) => m.mailFrom === 'sender@example.com');
    const report = () => hop.messages.find((m) => m.mailFrom === '' && m.rcptTo.includes('sender@example.com'));
    while ((!relayed() || !report()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(relayed()?.rcptTo.sort()).toEqual(['lover@example.net', 'postmaster@example.net']);
    const text = report()!.body.toString('latin1').replace(/\r\n[ \t]+/g, ' ');
    expect(text).toMatch(/Final-Recipient: rfc822; ?fighter@example\.net/i);
    expect(text).toMatch(/Action: failed/);
    expect(text).toMatch(/Status: 5\.6\.0/);
    expect(text).toMatch(/Diagnostic-Code: smtp; ?550 5\.6\.0 <fighter@example\.net> refuses the content/);
    expect(text).not.toMatch(/Final-Recipient: rfc822; ?lover@/i);
  });
});
