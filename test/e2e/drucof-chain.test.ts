/**
 * DRUCOF across two relays (issue 6): A → B → sink. The sink advertises CONNEG
 * only and knows the recipient's capabilities; B (extensions on by default: it
 * advertises CONNEG and DRUCOF) routes the domain to the sink and does not know
 * the recipient itself; A routes the domain to B. A's probe of B gets "not
 * known", so A passes the request on (conneg-failed/pass-on); B then asks the
 * sink, converts, and relays plainly (conneg-ok/usable). Each relay has its own
 * Redis prefix, so their states and caches are apart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import sharp from 'sharp';
import { simpleParser } from 'mailparser';
import { MessageStore } from '../../src/queue/store.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { connegTransactions, startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { Dialog } from '../helpers/dialog.ts';
import { settledStates } from '../helpers/relay-mail.ts';
import { bigPng, field, imageMessage, rawLeaves } from '../fixtures/images/mail.ts';
import { sleep, waitFor } from '../helpers/wait.ts';

const JPEG_800 = '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=800)))';
const RECIPIENT = 'far@sink.test';

const prefixA = uniquePrefix('e2e-drucof-chain-a');
const prefixB = uniquePrefix('e2e-drucof-chain-b');
const redis = new Redis(REDIS_URL);
const storeA = new MessageStore(redis, prefixA);
const storeB = new MessageStore(redis, prefixB);
let sink: NextHopPeer;
let sender: NextHopPeer;
let relayA: RelayProcess;
let relayB: RelayProcess;
let raw: Buffer;


const settled = (store: MessageStore, id: string, relay: RelayProcess): Promise<RecipientState[]> =>
  settledStates(store, id, { context: () => `relay output:\n${relay.output().slice(-4000)}` });

/** The queue ids of the messages a relay holds (its `msg:` hashes). */
async function queueIds(prefix: string): Promise<string[]> {
  const ids: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:msg:*`, 'COUNT', 1000);
    cursor = next;
    ids.push(...batch.map((k) => k.slice(`${prefix}:msg:`.length)));
  } while (cursor !== '0');
  return ids;
}

beforeAll(async () => {
  [sink, sender] = await Promise.all([
    startNextHop({ extensions: ['CONNEG'], conneg: (a) => (a === RECIPIENT ? { expression: JPEG_800 } : undefined) }),
    startNextHop({}),
  ]);
  const at = (port: number) => `127.0.0.1:${port}`;
  // No SRV look-ups: the capabilities must come from the hops (CONNEG), not from the system's DNS.
  relayB = await startRelay({
    config: { hostname: 'b.relay.test', routes: { 'sink.test': at(sink.port), 'sender.test': at(sender.port) }, dns: { srv: false } },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefixB },
  });
  relayA = await startRelay({
    config: { hostname: 'a.relay.test', routes: { 'sink.test': at(relayB.port), 'sender.test': at(sender.port) }, dns: { srv: false } },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefixA },
  });
  raw = await imageMessage({ image: await bigPng(), filename: 'big.png' });
});

afterAll(async () => {
  await relayA?.stop();
  await relayB?.stop();
  await sink?.close();
  await sender?.close();
  await storeA.close();
  await storeB.close();
  redis.disconnect();
  await dropPrefix(prefixA);
  await dropPrefix(prefixB);
});

describe('DRUCOF through two relays', () => {
  it('A passes the request on to B (B does not know the recipient); B asks the sink, converts, and relays plainly', async () => {
    const d = await Dialog.connect(relayA.port);
    await d.hello();
    await d.command('MAIL FROM:<s@sender.test>', 250);
    await d.command(`RCPT TO:<${RECIPIENT}> DRUCOF`, 250);
    await d.command('DATA', 354);
    d.write(Buffer.from(raw.toString('latin1').replace(/^\./gm, '..'), 'latin1'));
    const done = await d.command('.', 250);
    await d.quit();
    const idA = /\[QUEUEID ([^\]]+)\]/.exec(done.text)![1]!;

    // A: the query to B got no capabilities → pass-on, with DRUCOF on the RCPT to B.
    const [a] = await settled(storeA, idA, relayA);
    expect(a).toMatchObject({ address: RECIPIENT, status: 'relayed-with-drucof' });
    expect(a!.decision).toMatchObject({ branch: 'conneg-failed/pass-on', hop: `route:127.0.0.1:${relayB.port}`, capabilities: { kind: 'query-failed', source: 'conneg' } });
    expect([...a!.decision!.hopExtensions].sort()).toEqual(['CONNEG', 'DRUCOF']);
    expect(a!.decision!.conversion).toBeUndefined();

    // B: received it with DRUCOF, asked the sink, converted, relayed plainly.
    const idB = await waitFor('the message in B', async () => {
      const ids = await queueIds(prefixB);
      return ids.length > 0 ? ids : undefined;
    });
    expect(idB).toHaveLength(1);
    const [b] = await settled(storeB, idB[0]!, relayB);
    expect(b).toMatchObject({ address: RECIPIENT, drucof: true, status: 'converted-and-relayed' });
    expect(b!.decision).toMatchObject({
      branch: 'conneg-ok/usable',
      hop: `route:127.0.0.1:${sink.port}`,
      hopExtensions: ['CONNEG'],
      capabilities: { kind: 'known', source: 'conneg', expression: JPEG_800 },
      plan: { possible: true, parts: [{ action: 'keep' }, { action: 'convert' }] },
      conversion: { host: 'b.relay.test', parts: [{ path: '2', after: { type: 'image/jpeg' } }] },
    });

    // The sink: asked once by a probe (never DATA in it), then one message, converted, no DRUCOF/CONNEG on the RCPT.
    const probes = connegTransactions(sink);
    expect(probes).toHaveLength(1);
    expect(probes[0]![0]).toMatch(/^MAIL FROM:\s*<>/i);
    expect(probes[0]!.some((l) => /^DATA\b/i.test(l))).toBe(false);
    expect(sink.messages).toHaveLength(1);
    const m = sink.messages[0]!;
    expect(m.rcptTo).toEqual([RECIPIENT]);
    for (const l of m.rcptLines) expect(l).not.toMatch(/\s(DRUCOF|CONNEG)(=|\s|$)/i);
    expect(m.mailFrom).toBe('s@sender.test');

    const mail = await simpleParser(m.body);
    const images = mail.attachments.filter((x) => x.contentType.startsWith('image/'));
    expect(images.map((x) => x.contentType)).toEqual(['image/jpeg']);
    const meta = await sharp(images[0]!.content).metadata();
    expect(meta.format).toBe('jpeg');
    expect(meta.width).toBeLessThanOrEqual(800);
    const leaf = (await rawLeaves(m.body)).get('2')!;
    expect(field(leaf.header, 'Content-Previous')).toMatch(/^Date .+; By b\.relay\.test; .*\(type="image\/png"\)/);
    expect(field(leaf.header, 'Content-Features')).toContain('(type="image/jpeg")');
    const head = m.body.subarray(0, m.body.indexOf('\r\n\r\n') + 2).toString('latin1');
    expect(field(head, 'Content-Conversions')).toMatch(/^b\.relay\.test; 2 image\/png -> image\/jpeg via /);
    // Both relays left their Received: field; only B converted.
    expect(head.match(/^Received: /gm)).toHaveLength(2);
    expect(head).not.toMatch(/a\.relay\.test; 2 /);

    // Nobody owed the sender a report (NOTIFY default: failures only, and nothing failed).
    await sleep(300);
    expect(sender.messages).toHaveLength(0);
  });
});
