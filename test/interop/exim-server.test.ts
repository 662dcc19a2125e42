/**
 * Exim 4.96 (Debian 12's build, private copy: test/helpers/exim.ts) as the
 * relay's next hop. Exim advertises PRDR (`prdr_enable = true`) and its
 * `acl_smtp_data_prdr` refuses one recipient after the data. The relay (a
 * process) must send `MAIL … PRDR`, match Exim's lines to recipients by position
 * (protocols.md A4b), record the refused one as failed, send that recipient's
 * failure report (from <>, to the sender's route: a scripted next hop), and
 * deliver the others (Exim delivers them into its maildir).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { Redis } from 'ioredis';
import { MessageStore } from '../../src/queue/store.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { findExim, removeEximInstances, startEximServer, type EximServer } from '../helpers/exim.ts';

const found = await findExim();
if (!found.exim) console.log(`exim: ${found.reason}; Exim interop tests skipped`);

const prefix = uniquePrefix('interop-exim-server');
let redis: Redis;
let store: MessageStore;
let exim: EximServer;
let senderHop: NextHopPeer;
let relay: RelayProcess;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  for (const end = Date.now() + ms; ; await sleep(50)) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${exim.logs()}\nrelay output:\n${relay.output().slice(-4000)}`);
  }
}

const FINAL = new Set(['delivered', 'relayed', 'relayed-with-drucof', 'converted-and-relayed', 'failed']);
const ACCEPTED = new Set(['delivered', 'relayed', 'relayed-with-drucof', 'converted-and-relayed']);

async function submit(from: string, to: string[], subject: string): Promise<string> {
  const info = await nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true }).sendMail({
    envelope: { from, to },
    raw: `From: ${from}\r\nTo: ${to.join(', ')}\r\nSubject: ${subject}\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@sender.test>\r\n\r\nHello from the relay's interop test.\r\n`,
  });
  const id = /\[QUEUEID ([^\]]+)\]/.exec(info.response)?.[1];
  expect(id, info.response).toBeDefined();
  return id!;
}

/** The relay's recipient records once every one is final. */
async function finalStates(id: string): Promise<RecipientState[]> {
  return waitFor(`every recipient of ${id} to be final`, async () => {
    const meta = await store.loadMeta(id);
    return meta && meta.recipients.every((r) => FINAL.has(r.status)) ? [...meta.recipients] : undefined;
  });
}

const deliveredTo = (subject: string) =>
  exim
    .delivered()
    .filter((d) => d.raw.includes(`Subject: ${subject}`))
    .map((d) => d.to)
    .sort();

describe.runIf(found.exim)(`Exim ${found.exim?.version} as the next hop (PRDR)`, () => {
  beforeAll(async () => {
    redis = new Redis(REDIS_URL);
    store = new MessageStore(redis, prefix);
    exim = await startEximServer(found.exim!, { prdrRefuse: ['fighter@exim.test'], prdrText: 'the content is refused by fighter' });
    senderHop = await startNextHop({ dsn: true });
    relay = await startRelay({
      config: {
        hostname: 'relay.test',
        routes: { 'exim.test': `127.0.0.1:${exim.port}`, 'sender.test': `127.0.0.1:${senderHop.port}` },
        queue: { retrySchedule: ['1s'] },
      },
      env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
    });
  });

  afterAll(async () => {
    await relay?.stop();
    await senderHop?.close();
    await exim?.stop();
    await store?.close();
    redis?.disconnect();
    await dropPrefix(prefix);
    await removeEximInstances();
  });

  it('delivers all three when Exim accepts every recipient', async () => {
    const to = ['postmaster@exim.test', 'lover@exim.test', 'friend@exim.test'];
    const id = await submit('bob@sender.test', to, 'all welcome');
    const states = await finalStates(id);
    expect(states.map((r) => [r.address, ACCEPTED.has(r.status)])).toEqual(to.map((a) => [a, true]));
    await waitFor('Exim to deliver all three', () => deliveredTo('all welcome').length === 3);
    expect(deliveredTo('all welcome')).toEqual([...to].sort());
  });

  it('records the recipient refused in the PRDR ACL as failed, reports it, and delivers the other two', async () => {
    const to = ['postmaster@exim.test', 'fighter@exim.test', 'lover@exim.test'];
    const id = await submit('alice@sender.test', to, 'one refused');
    const states = await finalStates(id);
    const by = Object.fromEntries(states.map((r) => [r.address, r]));
    expect(by['fighter@exim.test']!.status, JSON.stringify(states)).toBe('failed');
    expect(by['fighter@exim.test']!.lastReply?.code).toBe(550);
    expect(by['fighter@exim.test']!.lastReply?.lines.join(' ')).toContain('the content is refused by fighter');
    expect(ACCEPTED.has(by['postmaster@exim.test']!.status), JSON.stringify(states)).toBe(true);
    expect(ACCEPTED.has(by['lover@exim.test']!.status), JSON.stringify(states)).toBe(true);

    // The relay spoke PRDR: Exim logged the per-recipient verdicts and the PRDR reception.
    expect(exim.mainlog()).toMatch(/PRDR fighter@exim\.test the content is refused by fighter/);
    expect(exim.mainlog()).toMatch(/<= alice@sender\.test .* PRDR .*for postmaster@exim\.test fighter@exim\.test lover@exim\.test/);

    // Exim delivered the message for the two it accepted, and only for them.
    await waitFor('Exim to deliver two', () => deliveredTo('one refused').length === 2);
    expect(deliveredTo('one refused')).toEqual(['lover@exim.test', 'postmaster@exim.test']);

    // The failure report, from <>, to the sender, for fighter only.
    const report = await waitFor('the failure report', () => senderHop.messages.find((m) => m.mailFrom === '' && m.rcptTo.includes('alice@sender.test')));
    const text = report.body.toString('latin1');
    expect(text).toMatch(/report-type="?delivery-status/);
    expect(text).toMatch(/Final-Recipient: rfc822;\s*fighter@exim\.test/);
    expect(text).toMatch(/Action: failed/);
    expect(text).not.toMatch(/Final-Recipient: rfc822;\s*(postmaster|lover)@exim\.test/);
  });
});
