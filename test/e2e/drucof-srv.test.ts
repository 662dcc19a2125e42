/**
 * Capabilities from a capability server found by SRV (DRUCOF outline §2,
 * protocols.md A3): the next hop for srv.test advertises neither CONNEG nor
 * DRUCOF, but `_conneg._tcp.srv.test` names a capability server (a peer that
 * advertises CONNEG and accepts no mail from us) which the relay probes. With
 * the capabilities known the relay is allowed to convert (source `srv`). DNS is
 * a local test server (`dns.servers`), so nothing here needs the network.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import sharp from 'sharp';
import { simpleParser } from 'mailparser';
import { MessageStore } from '../../src/queue/store.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { connegTransactions, startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { byAddress, settledStates, submitMessage } from '../helpers/relay-mail.ts';
import { bigPng, field, imageMessage, rawLeaves } from '../fixtures/images/mail.ts';
import { waitFor } from '../helpers/wait.ts';

const JPEG_800 = '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=800)))';
const KNOWN = 'far@srv.test';
const UNKNOWN = 'nobody@srv.test';

const prefix = uniquePrefix('e2e-drucof-srv');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
let capsServer: NextHopPeer;
let hop: NextHopPeer;
let sender: NextHopPeer;
let dns: DnsServer;
let relay: RelayProcess;
let raw: Buffer;


const submit = (to: readonly string[]): Promise<string> => submitMessage(relay.port, { from: 's@sender.test', to: to.map((r) => [r, 'DRUCOF'] as const), raw });

const settled = async (id: string): Promise<Map<string, RecipientState>> => byAddress(await settledStates(store, id, { context: () => `relay output:\n${relay.output().slice(-4000)}` }));

const srvQueries = () => dns.queries.filter((q) => q === 'SRV _conneg._tcp.srv.test');

beforeAll(async () => {
  [capsServer, hop, sender] = await Promise.all([
    startNextHop({ extensions: ['CONNEG'], conneg: (a) => (a === KNOWN ? { expression: JPEG_800 } : undefined) }),
    startNextHop({}),
    startNextHop({}),
  ]);
  dns = await startDnsServer({
    '_conneg._tcp.srv.test': { SRV: [{ target: 'caps.srv.test', port: capsServer.port, priority: 10, weight: 0 }] },
    'caps.srv.test': { A: ['127.0.0.1'] },
  });
  relay = await startRelay({
    config: {
      hostname: 'relay.test',
      routes: { 'srv.test': `127.0.0.1:${hop.port}`, 'sender.test': `127.0.0.1:${sender.port}` },
      dns: { servers: [`127.0.0.1:${dns.port}`], timeout: '1s', srv: true },
    },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
  raw = await imageMessage({ image: await bigPng(), filename: 'big.png' });
});

afterAll(async () => {
  await relay?.stop();
  for (const p of [capsServer, hop, sender]) await p?.close();
  await dns?.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('capabilities from an SRV-found capability server', () => {
  it('probes the server _conneg._tcp names and converts for a hop without CONNEG or DRUCOF (source srv)', async () => {
    const states = await settled(await submit([KNOWN, UNKNOWN]));
    const hopKey = `route:127.0.0.1:${hop.port}`;

    const known = states.get(KNOWN);
    expect(known?.status).toBe('converted-and-relayed');
    expect(known?.decision).toMatchObject({
      branch: 'conneg-ok/usable',
      hop: hopKey,
      hopExtensions: [],
      capabilities: { kind: 'known', source: 'srv', expression: JPEG_800 },
      plan: { possible: true, parts: [{ action: 'keep' }, { action: 'convert' }] },
      conversion: { host: 'relay.test', parts: [{ path: '2', after: { type: 'image/jpeg' } }] },
    });

    // The capability server does not know this one: the hop can carry nothing → 5.3.3.
    const unknown = states.get(UNKNOWN);
    expect(unknown?.status).toBe('failed');
    expect(unknown?.lastReply?.enhanced).toBe('5.3.3');
    expect(unknown?.decision).toMatchObject({ branch: 'neither', hop: hopKey, hopExtensions: [] });
    expect(unknown?.decision?.capabilities.kind).not.toBe('known');

    // DNS: the SRV record, then the target's address.
    expect(srvQueries().length).toBeGreaterThanOrEqual(1);
    expect(dns.queries).toContain('A caps.srv.test');

    // The capability server was probed (never DATA) and got no mail.
    const probes = connegTransactions(capsServer);
    expect(probes.length).toBeGreaterThanOrEqual(1);
    for (const t of probes) {
      expect(t[0]).toMatch(/^MAIL FROM:\s*<>/i);
      expect(t.some((l) => /^DATA\b/i.test(l))).toBe(false);
    }
    expect(probes.flat().filter((l) => l.toLowerCase().includes(`<${KNOWN}>`))).toHaveLength(1);
    expect(capsServer.messages).toHaveLength(0);

    // The hop: the converted message, plain RCPT; nothing for the failed recipient.
    const got = hop.messages.filter((m) => m.rcptTo.includes(KNOWN));
    expect(got).toHaveLength(1);
    const m = got[0]!;
    expect(m.rcptTo).toEqual([KNOWN]);
    for (const l of m.rcptLines) expect(l).not.toMatch(/\s(DRUCOF|CONNEG)(=|\s|$)/i);
    expect(hop.messages.some((x) => x.rcptTo.includes(UNKNOWN))).toBe(false);
    const mail = await simpleParser(m.body);
    const images = mail.attachments.filter((a) => a.contentType.startsWith('image/'));
    expect(images.map((a) => a.contentType)).toEqual(['image/jpeg']);
    expect((await sharp(images[0]!.content).metadata()).width).toBeLessThanOrEqual(800);
    const leaf = (await rawLeaves(m.body)).get('2')!;
    expect(field(leaf.header, 'Content-Previous')).toMatch(/By relay\.test; .*\(type="image\/png"\)/);
    expect(field(leaf.header, 'Content-Features')).toContain('(type="image/jpeg")');
    expect(field(m.body.subarray(0, m.body.indexOf('\r\n\r\n') + 2).toString('latin1'), 'Content-Conversions')).toMatch(/^relay\.test; 2 image\/png -> image\/jpeg via /);

    // The failure was reported to the sender.
    const report = await waitFor('the failure report', () => sender.messages.find((x) => x.mailFrom === '' && x.body.toString('latin1').includes(UNKNOWN)));
    expect(report.body.toString('latin1')).toMatch(/Status: 5\.3\.3/);
  });

  it('answers a second message from the cache: no new SRV look-up, no new probe', async () => {
    const lookups = srvQueries().length;
    const probes = connegTransactions(capsServer).length;
    const r = (await settled(await submit([KNOWN]))).get(KNOWN);
    expect(r?.status).toBe('converted-and-relayed');
    expect(r?.decision?.capabilities).toEqual({ kind: 'known', source: 'cache', expression: JPEG_800 });
    expect(srvQueries()).toHaveLength(lookups);
    expect(connegTransactions(capsServer)).toHaveLength(probes);
  });
});
