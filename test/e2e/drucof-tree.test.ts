/**
 * The DRUCOF decision tree end to end (issue 6, protocols.md A3/A5/A6/A8): one
 * relay process, next hops advertising CONNEG+DRUCOF, CONNEG only, DRUCOF only and
 * neither, each answering CONNEG queries from a script keyed on the recipient's
 * local part (`jpeg+…@`, `text+…@`, …). For every branch the test checks what the
 * next hop received (RCPT parameters, content, A6 records), the recipient states
 * in Redis (status, `decision`) and the reports the sender got.
 *
 * Recipients are unique per test (the capability cache is per recipient), except
 * where the cache itself is tested.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import sharp from 'sharp';
import { simpleParser } from 'mailparser';
import { MessageStore } from '../../src/queue/store.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { connegTransactions, startNextHop, type ConnegScript, type NextHopPeer, type ReceivedMessage } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { Dialog } from '../helpers/dialog.ts';
import { byAddress, settledStates, submitMessage } from '../helpers/relay-mail.ts';
import { bigPng, compose, field, image, imageMessage, rawLeaves } from '../fixtures/images/mail.ts';
import { deliveryStatusBlocks, blockFor } from '../helpers/reports.ts';
import { waitFor } from '../helpers/wait.ts';

const JPEG_800 = '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=800)))';
const JPEG_200 = '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=200)))';
const TEXT_ONLY = '(type="text/plain")';
const PNG_ANY = '(| (type="text/plain") (type="image/png"))';

/** What the CONNEG hops answer, by the recipient's local part before `+`. */
const ANSWERS: Record<string, ConnegScript | undefined> = {
  jpeg: { expression: JPEG_800 },
  /** The same capabilities in RFC 4141's multi-line shape. */
  lines: { expression: ['(| (type="text/plain")', '(& (type="image/jpeg") (pix-x<=800)))'] },
  small: { expression: JPEG_200 },
  text: { expression: TEXT_ONLY },
  png: { expression: PNG_ANY },
  /** Query failures: a 5xx to the RCPT, an unparsable expression; `unknown` (no entry): a reply without capabilities. */
  refuse: { code: 550, text: '5.7.1 capabilities are not disclosed' },
  garbled: { expression: '(& (type="image/jpeg"' },
};
const tagOf = (address: string): string => address.slice(0, address.indexOf('@')).split('+')[0]!.toLowerCase();
const conneg = (address: string): ConnegScript | undefined => ANSWERS[tagOf(address)];

const prefix = uniquePrefix('e2e-drucof-tree');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
let relay: RelayProcess;
let hops: Record<'cd' | 'c' | 'd' | 'n' | 'reg' | 'sender', NextHopPeer>;
const hopKey = (peer: NextHopPeer): string => `route:127.0.0.1:${peer.port}`;

/** The messages the tests send (built once: real images, real MIME). */
const msgs: Record<'big' | 'prohibited' | 'omissible' | 'broken' | 'text', Buffer> = {} as never;


/** Submits `raw` from s@sender.test; DRUCOF on every RCPT whose local part does not start with `plain`. Returns the queue id. */
const submit = (to: readonly string[], raw: Buffer): Promise<string> =>
  submitMessage(relay.port, { from: 's@sender.test', to: to.map((r) => [r, r.startsWith('plain') ? undefined : 'DRUCOF'] as const), raw });

/** The recipient states once none is queued or deferred, by address. */
const settled = async (id: string): Promise<Map<string, RecipientState>> => byAddress(await settledStates(store, id, { context: () => `relay output:\n${relay.output().slice(-4000)}` }));

const deliveredTo = (peer: NextHopPeer, address: string): ReceivedMessage[] => peer.messages.filter((m) => m.rcptTo.includes(address));

/** The one message `address` got from the relay. */
function onlyMessage(peer: NextHopPeer, address: string): ReceivedMessage {
  const got = deliveredTo(peer, address);
  expect(got, `messages delivered to ${address}`).toHaveLength(1);
  return got[0]!;
}

/** The received bytes without the one `Received:` field the relay adds on top. */
function withoutReceived(body: Buffer): Buffer {
  const m = /^Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n/.exec(body.toString('latin1'));
  expect(m, 'a Received: field on top').not.toBeNull();
  return body.subarray(m![0].length);
}

const topHeader = (body: Buffer): string => body.subarray(0, body.indexOf('\r\n\r\n') + 2).toString('latin1');

/** The RCPT line of `address` in a delivered transaction. */
const rcptLine = (m: ReceivedMessage, address: string): string => m.rcptLines.find((l) => l.toLowerCase().includes(`<${address.toLowerCase()}>`))!;

/** The CONNEG RCPT lines a peer saw for `address` (probes). */
const probesOf = (peer: NextHopPeer, address: string): string[] =>
  peer.commands.filter((l) => /^RCPT\s+TO:/i.test(l) && l.toLowerCase().includes(`<${address.toLowerCase()}>`) && /\sCONNEG(=|\s|$)/i.test(l));

/** The delivery-status block of the report the sender got for `address`. */
async function reportFor(address: string): Promise<Record<string, string>> {
  return waitFor(`a report for ${address}`, async () => {
    for (const m of hops.sender.messages) {
      if (m.mailFrom !== '') continue;
      const mail = await simpleParser(m.body, { keepDeliveryStatus: true });
      const ds = mail.attachments.find((a) => a.contentType === 'message/delivery-status');
      if (!ds) continue;
      const blocks = deliveryStatusBlocks(ds.content);
      const mine = blockFor(blocks, address);
      if (mine) return mine;
    }
    return undefined;
  });
}

/** `decision.hopExtensions`, sorted (the order is not the point). */
const extensionsOf = (r: RecipientState | undefined): string[] => [...(r?.decision?.hopExtensions ?? [])].sort();

/**
 * A delivered message whose part 2 (a 1600×1200 PNG) was converted to a JPEG at
 * most `maxWidth` wide: the decoded image, its A6 records, the trace field.
 */
async function expectConvertedJpeg(m: ReceivedMessage, maxWidth: number, host = 'relay.test'): Promise<void> {
  const mail = await simpleParser(m.body);
  expect(mail.text).toContain('Here is the picture.');
  const images = mail.attachments.filter((a) => a.contentType.startsWith('image/'));
  expect(images.map((a) => a.contentType)).toEqual(['image/jpeg']);
  const meta = await sharp(images[0]!.content).metadata();
  expect(meta.format).toBe('jpeg');
  expect(meta.width).toBeGreaterThan(0);
  expect(meta.width).toBeLessThanOrEqual(maxWidth);

  const leaf = (await rawLeaves(m.body)).get('2')!;
  expect(field(leaf.header, 'Content-Type')).toMatch(/^image\/jpeg/);
  const previous = field(leaf.header, 'Content-Previous');
  expect(previous).toMatch(new RegExp(`^Date \\w{3}, \\d{1,2} \\w{3} \\d{4} \\d\\d:\\d\\d:\\d\\d \\+0000; By ${host.replace(/\./g, '\\.')}; `));
  expect(previous).toContain('(type="image/png")');
  expect(previous).toContain('(pix-x=1600)');
  const features = field(leaf.header, 'Content-Features');
  expect(features).toContain('(type="image/jpeg")');
  expect(features).toContain(`(pix-x=${meta.width})`);

  const head = topHeader(m.body);
  expect(head.match(/^Content-Conversions:/gim)).toHaveLength(1);
  expect(field(head, 'Content-Conversions')).toMatch(new RegExp(`^${host.replace(/\./g, '\\.')}; 2 image/png -> image/jpeg via \\S.* \\(loss [\\d.]+\\); \\w{3}, .* \\+0000$`));
}

/** No DRUCOF and no CONNEG on any RCPT of a delivered transaction (after a conversion, or for a plain recipient). */
function expectPlainRcpts(m: ReceivedMessage): void {
  for (const l of m.rcptLines) expect(l).not.toMatch(/\s(DRUCOF|CONNEG)(=|\s|$)/i);
}

beforeAll(async () => {
  const [cd, c, d, n, reg, sender] = await Promise.all([
    startNextHop({ extensions: ['CONNEG', 'DRUCOF'], conneg }),
    startNextHop({ extensions: ['CONNEG'], conneg }),
    startNextHop({ extensions: ['DRUCOF'] }),
    startNextHop({}),
    // reg.test's own hop (neither extension), reached first by the worker: were its EHLO keywords
    // already cached, the inbound's fail-fast would refuse *@reg.test at DATA (inbound-fail-fast.test.ts).
    startNextHop({}),
    startNextHop({}),
  ]);
  hops = { cd: cd!, c: c!, d: d!, n: n!, reg: reg!, sender: sender! };
  const at = (p: NextHopPeer) => `127.0.0.1:${p.port}`;
  relay = await startRelay({
    config: {
      hostname: 'relay.test',
      routes: { 'cd.test': at(hops.cd), 'c.test': at(hops.c), 'd.test': at(hops.d), 'n.test': at(hops.n), 'reg.test': at(hops.reg), 'sender.test': at(hops.sender) },
      // The registry: the relay is authoritative for these recipients (A8).
      capabilities: { 'boss@n.test': JPEG_800, 'reg@c.test': JPEG_800, '*@reg.test': TEXT_ONLY },
      // No SRV look-ups for the .test domains here (drucof-srv.test.ts covers them): the tree does not depend on the system's DNS.
      dns: { srv: false },
    },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
  const big = await bigPng();
  msgs.big = await imageMessage({ image: big, filename: 'big.png' });
  msgs.prohibited = await imageMessage({ image: big, filename: 'big.png', marking: 'prohibited' });
  msgs.omissible = await imageMessage({ image: image('photo.png'), filename: 'photo.png', marking: 'omission-permitted; critical=no' });
  msgs.broken = await imageMessage({ image: image('truncated.jpg'), filename: 'broken.jpg', contentType: 'image/jpeg' });
  const text = await compose({ subject: 'words only', text: 'Only words here.' });
  msgs.text = text.subarray(-2).toString() === '\r\n' ? text : Buffer.concat([text, Buffer.from('\r\n')]);
});

afterAll(async () => {
  await relay?.stop();
  for (const h of Object.values(hops ?? {})) await h.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('known capabilities, and the relay can make the message usable (conneg-ok/usable)', () => {
  it('converts a 1600 px PNG into a JPEG ≤ 800 px, records it (A6), and relays it without DRUCOF or CONNEG', async () => {
    const id = await submit(['jpeg+usable@c.test', 'lines+usable@cd.test'], msgs.big);
    const states = await settled(id);
    for (const [address, peer, extensions] of [
      ['jpeg+usable@c.test', hops.c, ['CONNEG']],
      ['lines+usable@cd.test', hops.cd, ['CONNEG', 'DRUCOF']],
    ] as const) {
      const r = states.get(address);
      expect(r?.status, address).toBe('converted-and-relayed');
      expect(r?.decision).toMatchObject({
        branch: 'conneg-ok/usable',
        hop: hopKey(peer),
        // Read in either shape (one line or RFC 4141's several), the expression is the same.
        capabilities: { kind: 'known', source: 'conneg', expression: JPEG_800 },
        plan: { possible: true, parts: [{ path: '1', action: 'keep' }, { path: '2', action: 'convert' }] },
        conversion: { host: 'relay.test', parts: [{ path: '2', before: { type: 'image/png' }, after: { type: 'image/jpeg' } }] },
      });
      expect(extensionsOf(r)).toEqual(extensions);
      expect(Number.isNaN(Date.parse(r!.decision!.at))).toBe(false);

      const m = onlyMessage(peer, address);
      expect(m.rcptTo).toEqual([address]);
      expectPlainRcpts(m);
      await expectConvertedJpeg(m, 800);
      // Asked once, in a probe of its own (never in the delivering transaction).
      expect(probesOf(peer, address)).toHaveLength(1);
    }
  });

  it('relays a message that is already usable plainly: status relayed, nothing converted or recorded', async () => {
    const address = 'jpeg+fits@c.test';
    const r = (await settled(await submit([address], msgs.text))).get(address);
    expect(r?.status).toBe('relayed');
    expect(r?.decision).toMatchObject({ branch: 'conneg-ok/usable', capabilities: { kind: 'known', source: 'conneg' }, plan: { possible: true, parts: [{ action: 'keep' }] } });
    expect(r?.decision?.conversion).toBeUndefined();
    const m = onlyMessage(hops.c, address);
    expectPlainRcpts(m);
    expect(withoutReceived(m.body).equals(msgs.text)).toBe(true);
  });

  it('omits a part that cannot be made usable where the sender permits it: a short note instead, converted-and-relayed', async () => {
    const address = 'text+omit@c.test';
    const r = (await settled(await submit([address], msgs.omissible))).get(address);
    expect(r?.status).toBe('converted-and-relayed');
    expect(r?.decision).toMatchObject({
      branch: 'conneg-ok/usable',
      plan: { possible: true, parts: [{ action: 'keep' }, { path: '2', action: 'omit' }] },
      conversion: { parts: [{ path: '2', omitted: true }] },
    });
    const m = onlyMessage(hops.c, address);
    expectPlainRcpts(m);
    const mail = await simpleParser(m.body);
    expect(mail.attachments.filter((a) => a.contentType.startsWith('image/'))).toHaveLength(0);
    const note = (await rawLeaves(m.body)).get('2')!;
    expect(field(note.header, 'Content-Type')).toMatch(/^text\/plain/);
    expect(note.body.toString()).toMatch(/image\/png part "photo\.png".*was removed/s);
    expect(field(note.header, 'Content-Previous')).toMatch(/By relay\.test; .*\(type="image\/png"\)/);
    expect(field(topHeader(m.body), 'Content-Conversions')).toMatch(/^relay\.test; 2 image\/png -> omitted \(loss 100\); /);
  });

  it('uses registry capabilities (the relay is authoritative): converts for a hop with neither extension, and asks no CONNEG hop', async () => {
    const id = await submit(['boss@n.test', 'reg@c.test'], msgs.big);
    const states = await settled(id);
    for (const [address, peer, extensions] of [
      ['boss@n.test', hops.n, []],
      ['reg@c.test', hops.c, ['CONNEG']],
    ] as const) {
      const r = states.get(address);
      expect(r?.status, address).toBe('converted-and-relayed');
      expect(r?.decision).toMatchObject({ branch: 'conneg-ok/usable', hop: hopKey(peer), capabilities: { kind: 'known', source: 'config', expression: JPEG_800 } });
      expect(extensionsOf(r)).toEqual(extensions);
      const m = onlyMessage(peer, address);
      expectPlainRcpts(m);
      await expectConvertedJpeg(m, 800);
      expect(probesOf(peer, address)).toHaveLength(0);
    }
  });
});

describe('known capabilities, and no usable form the relay can make', () => {
  it('passes the request on, unchanged, to a hop that advertises DRUCOF (conneg-ok/pass-on)', async () => {
    const address = 'text+pass@cd.test';
    const r = (await settled(await submit([address], msgs.big))).get(address);
    expect(r?.status).toBe('relayed-with-drucof');
    expect(r?.decision).toMatchObject({ branch: 'conneg-ok/pass-on', hop: hopKey(hops.cd), capabilities: { kind: 'known', source: 'conneg', expression: TEXT_ONLY }, plan: { possible: false } });
    expect(r?.decision?.conversion).toBeUndefined();
    const m = onlyMessage(hops.cd, address);
    expect(rcptLine(m, address)).toMatch(/\sDRUCOF(\s|$)/);
    expect(rcptLine(m, address)).not.toMatch(/\sCONNEG/i);
    expect(withoutReceived(m.body).equals(msgs.big)).toBe(true);
  });

  const noWay = [
    { why: 'no conversion reaches the capabilities', to: 'text+noway@c.test', hop: 'c', msg: 'big', enhanced: '5.6.3', source: 'conneg', parts: ['keep', 'impossible'] },
    { why: 'the part that needs converting is prohibited', to: 'jpeg+prohibited@c.test', hop: 'c', msg: 'prohibited', enhanced: '5.6.2', source: 'conneg', parts: ['keep', 'impossible'] },
    { why: 'the converter failed (a truncated JPEG)', to: 'png+broken@c.test', hop: 'c', msg: 'broken', enhanced: '5.6.5', source: 'conneg' },
    { why: 'registry capabilities, a hop with neither extension', to: 'anyone@reg.test', hop: 'reg', msg: 'big', enhanced: '5.6.3', source: 'config', parts: ['keep', 'impossible'] },
  ] as const;

  it.each(noWay)('fails it where the hop lacks DRUCOF (conneg-ok/no-way) — $why: $enhanced, reported', async (c) => {
    const r = (await settled(await submit([c.to], msgs[c.msg]))).get(c.to);
    expect(r?.status).toBe('failed');
    expect(r?.lastReply?.enhanced).toBe(c.enhanced);
    expect(r?.decision).toMatchObject({ branch: 'conneg-ok/no-way', hop: hopKey(hops[c.hop]), capabilities: { kind: 'known', source: c.source } });
    if ('parts' in c) expect(r?.decision?.plan?.parts.map((p) => p.action)).toEqual(c.parts);
    expect(r?.decision?.conversion).toBeUndefined();
    expect(hops[c.hop].messages.filter((m) => m.rcptTo.includes(c.to))).toHaveLength(0);
    const report = await reportFor(c.to);
    expect(report.Action).toBe('failed');
    expect(report.Status).toBe(c.enhanced);
  });
});

describe('the hop has CONNEG but the query failed (conneg-failed)', () => {
  const failures = ['unknown', 'refuse', 'garbled'] as const; // no capability lines, a 5xx to the RCPT, an unparsable expression

  it('passes the request on to a hop with DRUCOF; fails with 5.3.3 (reported) where the hop has only CONNEG', async () => {
    const passed = failures.map((f) => `${f}+failed@cd.test`);
    const refused = failures.map((f) => `${f}+failed@c.test`);
    const states = await settled(await submit([...passed, ...refused], msgs.big));

    for (const address of passed) {
      const r = states.get(address);
      expect(r?.status, address).toBe('relayed-with-drucof');
      expect(r?.decision, address).toMatchObject({ branch: 'conneg-failed/pass-on', hop: hopKey(hops.cd), capabilities: { kind: 'query-failed', source: 'conneg' } });
      expect(r?.decision?.plan).toBeUndefined();
      expect(probesOf(hops.cd, address)).toHaveLength(1);
    }
    // The three share one transaction, unchanged, DRUCOF on each RCPT.
    const m = onlyMessage(hops.cd, passed[0]!);
    expect([...m.rcptTo].sort()).toEqual([...passed].sort());
    for (const address of passed) expect(rcptLine(m, address)).toMatch(/\sDRUCOF(\s|$)/);
    expectNoConneg(m);
    expect(withoutReceived(m.body).equals(msgs.big)).toBe(true);

    for (const address of refused) {
      const r = states.get(address);
      expect(r?.status, address).toBe('failed');
      expect(r?.lastReply?.enhanced, address).toBe('5.3.3');
      expect(r?.decision, address).toMatchObject({ branch: 'conneg-failed/no-way', hop: hopKey(hops.c), capabilities: { kind: 'query-failed', source: 'conneg' } });
      expect(extensionsOf(r)).toEqual(['CONNEG']);
      expect(deliveredTo(hops.c, address)).toHaveLength(0);
      expect(probesOf(hops.c, address)).toHaveLength(1);
      const report = await reportFor(address);
      expect(report.Action).toBe('failed');
      expect(report.Status).toBe('5.3.3');
    }
  });
});

function expectNoConneg(m: ReceivedMessage): void {
  for (const l of m.rcptLines) expect(l).not.toMatch(/\sCONNEG(=|\s|$)/i);
}

describe('hops without CONNEG', () => {
  it('DRUCOF only: passed on (drucof-only); neither: 5.3.3 (neither), reported; neither hop is asked anything', async () => {
    const states = await settled(await submit(['who+x@d.test', 'who+x@n.test'], msgs.big));
    const passed = states.get('who+x@d.test');
    expect(passed?.status).toBe('relayed-with-drucof');
    expect(passed?.decision).toMatchObject({ branch: 'drucof-only', hop: hopKey(hops.d), capabilities: { kind: 'unknown' } });
    expect(extensionsOf(passed)).toEqual(['DRUCOF']);
    const m = onlyMessage(hops.d, 'who+x@d.test');
    expect(rcptLine(m, 'who+x@d.test')).toMatch(/\sDRUCOF(\s|$)/);
    expect(withoutReceived(m.body).equals(msgs.big)).toBe(true);

    const failed = states.get('who+x@n.test');
    expect(failed?.status).toBe('failed');
    expect(failed?.lastReply?.enhanced).toBe('5.3.3');
    expect(failed?.decision).toMatchObject({ branch: 'neither', hop: hopKey(hops.n), capabilities: { kind: 'unknown' } });
    expect(extensionsOf(failed)).toEqual([]);
    expect(deliveredTo(hops.n, 'who+x@n.test')).toHaveLength(0);
    expect((await reportFor('who+x@n.test')).Status).toBe('5.3.3');

    for (const peer of [hops.d, hops.n]) expect(peer.commands.filter((l) => /\sCONNEG/i.test(l))).toEqual([]);
  });
});

describe('the capability cache', () => {
  it('answers a second message to the same recipient (source cache): the hop is not asked again', async () => {
    const address = 'jpeg+cached@c.test';
    const first = (await settled(await submit([address], msgs.big))).get(address);
    expect(first?.decision?.capabilities).toEqual({ kind: 'known', source: 'conneg', expression: JPEG_800 });
    const second = (await settled(await submit([address], msgs.big))).get(address);
    expect(second?.status).toBe('converted-and-relayed');
    expect(second?.decision).toMatchObject({ branch: 'conneg-ok/usable', capabilities: { kind: 'known', source: 'cache', expression: JPEG_800 } });
    expect(probesOf(hops.c, address)).toHaveLength(1);
    const got = deliveredTo(hops.c, address);
    expect(got).toHaveLength(2);
    for (const m of got) await expectConvertedJpeg(m, 800);
  });
});

describe('variants: one message, one hop, different conversions', () => {
  it('gives each conversion its own transaction, runs it once for the recipients that share it, and gives a plain recipient the original', async () => {
    const [v1, v2, v3, plain] = ['jpeg+v1@c.test', 'jpeg+v2@c.test', 'small+v3@c.test', 'plain+v4@c.test'] as const;
    const id = await submit([v1, v2, v3, plain], msgs.big);
    const states = await settled(id);
    for (const a of [v1, v2, v3]) expect(states.get(a)?.status, a).toBe('converted-and-relayed');
    expect(states.get(plain)?.status).toBe('relayed');
    expect(states.get(plain)?.decision).toBeUndefined();

    // Three transactions: v1 and v2 together (one body), v3 alone, the plain recipient alone.
    const shared = onlyMessage(hops.c, v1);
    expect([...shared.rcptTo].sort()).toEqual([v1, v2]);
    expectPlainRcpts(shared);
    await expectConvertedJpeg(shared, 800);
    const alone = onlyMessage(hops.c, v3);
    expect(alone.rcptTo).toEqual([v3]);
    expectPlainRcpts(alone);
    await expectConvertedJpeg(alone, 200);
    expect(alone.body.equals(shared.body)).toBe(false);

    // Without DRUCOF: never asked, never converted: the original bytes, plain RCPT.
    const original = onlyMessage(hops.c, plain);
    expect(original.rcptTo).toEqual([plain]);
    expectPlainRcpts(original);
    expect(withoutReceived(original.body).equals(msgs.big)).toBe(true);
    expect(probesOf(hops.c, plain)).toHaveLength(0);
    for (const a of [v1, v2, v3]) expect(probesOf(hops.c, a), a).toHaveLength(1);

    // One conversion run per variant, as the worker logs it.
    const lines = relay
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; queueId?: string; variant?: string; rcpt?: string });
    const runs = lines.filter((l) => l.msg === 'message converted' && l.queueId === id);
    expect(runs).toHaveLength(2);
    expect(new Set(runs.map((l) => l.variant)).size).toBe(2);
    // Each recipient's decision line names the variant it was sent: v1 and v2 share one, v3 has the other.
    const variantOf = (rcpt: string) => lines.find((l) => l.msg === 'DRUCOF decision' && l.queueId === id && l.rcpt === rcpt)?.variant;
    expect(variantOf(v1)).toBe(variantOf(v2));
    expect(new Set([variantOf(v1), variantOf(v3)])).toEqual(new Set(runs.map((l) => l.variant)));
  });
});

describe('fail fast inbound (INLINE-DSN / PRDR)', () => {
  /** One transaction in `mode`: a recipient the relay can already decide, and one it cannot. */
  async function session(mode: 'INLINE-DSN' | 'PRDR', decided: string, open: string): Promise<string[]> {
    const d = await Dialog.connect(relay.port);
    await d.hello();
    await d.command(`MAIL FROM:<s@sender.test> ${mode}`, 250);
    const ask = async (line: string) => (d.send(line), (await d.read()).code);
    const atRcpt = [await ask(`RCPT TO:<${decided}> DRUCOF`), await ask(`RCPT TO:<${open}> DRUCOF`)];
    await d.command('DATA', 354);
    d.write(Buffer.from(msgs.big.toString('latin1').replace(/^\./gm, '..'), 'latin1'));
    d.send('.');
    // 353, one line per recipient (each naming it), then the final reply.
    const lines = [`rcpt ${atRcpt.join(' ')}`];
    for (;;) {
      const r = await d.read(20_000);
      lines.push(...r.raw);
      if (r.code !== 353 && !/<[^>]+@[^>]+>/.test(r.text)) break;
    }
    await d.quit();
    return lines;
  }

  it('refuses inline, with the code the worker would give, a registry recipient whose known hop cannot carry DRUCOF', async () => {
    // The hop's EHLO is learnt by a first delivery (the cache then knows it lacks DRUCOF).
    await settled(await submit(['first@reg.test'], msgs.text));
    const lines = await session('INLINE-DSN', 'fast@reg.test', 'jpeg+fast@c.test');
    expect(lines[0]).toBe('rcpt 352 250');
    expect(lines[1]).toMatch(/^353 /);
    expect(lines[2]).toMatch(/^554 5\.6\.3 <fast@reg\.test> /);
    const id = /\[QUEUEID ([^\]]+)\]/.exec(lines[lines.length - 1]!)![1]!;
    const states = await settled(id);
    expect([...states.keys()]).toEqual(['jpeg+fast@c.test']);
    expect(deliveredTo(hops.reg, 'fast@reg.test')).toHaveLength(0);
  });

  it('gives the same verdict in PRDR’s form', async () => {
    const lines = await session('PRDR', 'prdr@reg.test', 'jpeg+prdr@c.test');
    expect(lines[0]).toBe('rcpt 250 250');
    expect(lines[1]).toMatch(/^353 /);
    expect(lines[2]).toMatch(/^554 5\.6\.3 <prdr@reg\.test> /);
    expect(lines[3]).toMatch(/^250 /);
  });
});

describe('probes (A3)', () => {
  it('every capability query was a probe: MAIL FROM:<>, RCPTs with CONNEG, then RSET or QUIT — never DATA', async () => {
    const all = () => [...connegTransactions(hops.c), ...connegTransactions(hops.cd)];
    const ended = (t: string[]) => /^(RSET|QUIT)$/i.test(t[t.length - 1]!.trim());
    // The pool sends a probe's RSET when it releases the connection, just after reading the last RCPT reply.
    await waitFor('every probe to be closed', () => (all().every(ended) ? true : undefined), 3000).catch(() => undefined);
    const probes = all();
    expect(probes.length).toBeGreaterThan(0);
    for (const t of probes) {
      expect(t[0]).toMatch(/^MAIL FROM:\s*<>/i);
      const last = t[t.length - 1]!.toUpperCase();
      expect(last === 'RSET' || last === 'QUIT', t.join(' | ')).toBe(true);
      expect(t.some((l) => /^DATA\b/i.test(l))).toBe(false);
      for (const l of t.slice(1, -1)) expect(l).toMatch(/^RCPT TO:<[^>]+> CONNEG$/i);
    }
  });
});
