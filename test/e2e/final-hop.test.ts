/**
 * Final-hop mode end to end (issue 7 item 3): a relay process whose routes make
 * it the recipient's MX — `maildir:DIR` (it writes the Maildirs itself) and
 * `lmtp:host:port` (an LMTP server delivers) — with real Redis. Checks the
 * files byte for byte, the `delivered` status and the `delivered` report
 * (NOTIFY=SUCCESS), DRUCOF with the relay as the final hop (it converts for a
 * recipient the registry knows, and fails one nobody knows with 5.3.3), and
 * LMTP's per-recipient replies after the data.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import sharp from 'sharp';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { MessageStore } from '../../src/queue/store.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { byAddress, settledStates, submitMessage } from '../helpers/relay-mail.ts';
import { bigPng, compose, field, imageMessage, rawLeaves } from '../fixtures/images/mail.ts';
import { deliveryStatusBlocks, blockFor } from '../helpers/reports.ts';
import { waitFor } from '../helpers/wait.ts';

const JPEG_800 = '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=800)))';

const prefix = uniquePrefix('e2e-final-hop');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
const maildir = mkdtempSync(join(tmpdir(), 'drucof-final-hop-'));
let relay: RelayProcess;
let sender: NextHopPeer;
let lmtp: SMTPServer;
let lmtpPort: number;
/** What the LMTP server received: the recipients of each transaction, and the greeting command of its session. */
const lmtpMessages: { rcpt: string[]; opening: string; body: Buffer }[] = [];
const msgs: Record<'text' | 'big', Buffer> = {} as never;


/** Submits `raw` from s@sender.test; each recipient with its own RCPT parameters. Returns the queue id. */
const submit = (to: readonly (readonly [string, string?])[], raw: Buffer): Promise<string> => submitMessage(relay.port, { from: 's@sender.test', to, raw });

/** The recipient states once none is queued or deferred, by address. */
const settled = async (id: string): Promise<Map<string, RecipientState>> => byAddress(await settledStates(store, id));

/** The files delivered into a recipient's Maildir (new/), and what else its Maildir holds. */
function mailbox(domain: string, local: string): { files: Buffer[]; tmp: string[]; cur: string[] } {
  const md = join(maildir, domain, local);
  const list = (sub: string) => {
    try {
      return readdirSync(join(md, sub)).sort();
    } catch {
      return [];
    }
  };
  return { files: list('new').map((n) => readFileSync(join(md, 'new', n))), tmp: list('tmp'), cur: list('cur') };
}

/** A delivered file split into the two header lines we add, the relay's Received: field, and the rest (the message as submitted). */
function splitDelivered(file: Buffer): { added: string; received: string; rest: Buffer } {
  const m = /^(Return-Path: [^\r\n]*\r\nDelivered-To: [^\r\n]*\r\n)(Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n)/.exec(file.toString('latin1'));
  expect(m, 'Return-Path, Delivered-To and Received on top').not.toBeNull();
  return { added: m![1]!, received: m![2]!, rest: file.subarray(Buffer.byteLength(m![0], 'latin1')) };
}

/** The delivery-status block of the report s@sender.test got for `address`, with the report's subject. */
async function reportFor(address: string): Promise<Record<string, string> & { subject: string }> {
  return waitFor(`a report for ${address}`, async () => {
    for (const m of sender.messages) {
      if (m.mailFrom !== '' || !m.rcptTo.includes('s@sender.test')) continue;
      const mail = await simpleParser(m.body, { keepDeliveryStatus: true });
      const ds = mail.attachments.find((a) => a.contentType === 'message/delivery-status');
      if (!ds) continue;
      const blocks = deliveryStatusBlocks(ds.content);
      const mine = blockFor(blocks, address);
      if (mine) return { ...mine, subject: mail.subject ?? '' };
    }
    return undefined;
  });
}

beforeAll(async () => {
  sender = await startNextHop({});
  lmtp = new SMTPServer({
    lmtp: true,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const rcpt = session.envelope.rcptTo.map((r) => r.address);
        lmtpMessages.push({ rcpt, opening: String((session as { openingCommand?: unknown }).openingCommand), body: Buffer.concat(chunks) });
        // One reply per recipient (RFC 2033 §4.2): refused@ is refused after the data.
        const replies = rcpt.map((a) => (a.startsWith('refused') ? Object.assign(new Error('5.2.1 <' + a + '> mailbox disabled'), { responseCode: 550 }) : `2.0.0 <${a}> delivered`));
        cb(null, replies as unknown as string);
      });
    },
  });
  await new Promise<void>((resolve) => lmtp.listen(0, '127.0.0.1', resolve));
  lmtpPort = (lmtp.server.address() as net.AddressInfo).port;
  relay = await startRelay({
    config: {
      hostname: 'relay.test',
      routes: { 'lab.test': `maildir:${maildir}`, 'lmtp.test': `lmtp:127.0.0.1:${lmtpPort}`, 'sender.test': `127.0.0.1:${sender.port}` },
      // The relay is authoritative for this recipient (A8): small JPEGs only.
      capabilities: { 'fax@lab.test': JPEG_800 },
      // "Nobody knows" must not depend on what the system's DNS says about .test.
      dns: { srv: false },
    },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
  const text = await compose({ subject: 'plain words', text: 'Only words here.\r\n.A line with a leading dot.\r\n8-bit: caf\u00e9' });
  msgs.text = text.subarray(-2).toString() === '\r\n' ? text : Buffer.concat([text, Buffer.from('\r\n')]);
  msgs.big = await imageMessage({ image: await bigPng(), filename: 'big.png' });
});

afterAll(async () => {
  await relay?.stop();
  await sender?.close();
  await new Promise<void>((resolve) => (lmtp ? lmtp.close(() => resolve()) : resolve()));
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
  rmSync(maildir, { recursive: true, force: true });
});

describe('maildir: routes', () => {
  it('a plain message lands in the Maildir byte-exact under Return-Path, Delivered-To and the relay’s Received:', async () => {
    const id = await submit([['alice@lab.test']], msgs.text);
    const r = (await settled(id)).get('alice@lab.test');
    expect(r?.status).toBe('delivered');
    expect(r?.lastReply?.code).toBe(250);
    expect(r?.remoteMta).toBeUndefined();
    const box = mailbox('lab.test', 'alice');
    expect(box.files).toHaveLength(1);
    expect(box.tmp).toEqual([]);
    expect(box.cur).toEqual([]);
    const { added, received, rest } = splitDelivered(box.files[0]!);
    expect(added).toBe('Return-Path: <s@sender.test>\r\nDelivered-To: alice@lab.test\r\n');
    expect(received).toMatch(/by relay\.test/);
    expect(rest.equals(msgs.text)).toBe(true);
  });

  it('converts a big PNG for a DRUCOF recipient the registry knows (JPEG ≤ 800 px) and delivers it: the relay is the final hop', async () => {
    const id = await submit([['fax@lab.test', 'DRUCOF']], msgs.big);
    const r = (await settled(id)).get('fax@lab.test');
    expect(r?.status).toBe('delivered');
    expect(r?.decision).toMatchObject({
      branch: 'conneg-ok/usable',
      hop: `route:maildir:${maildir}`,
      hopExtensions: [],
      capabilities: { kind: 'known', source: 'config', expression: JPEG_800 },
      conversion: { host: 'relay.test', parts: [{ path: '2', before: { type: 'image/png' }, after: { type: 'image/jpeg' } }] },
    });
    const box = mailbox('lab.test', 'fax');
    expect(box.files).toHaveLength(1);
    // Our two lines on top, then the converted message (its Content-Conversions: first, above Received:).
    const head = 'Return-Path: <s@sender.test>\r\nDelivered-To: fax@lab.test\r\n';
    expect(box.files[0]!.subarray(0, head.length).toString('latin1')).toBe(head);
    const rest = box.files[0]!.subarray(head.length);

    const mail = await simpleParser(rest);
    expect(mail.text).toContain('Here is the picture.');
    const images = mail.attachments.filter((a) => a.contentType.startsWith('image/'));
    expect(images.map((a) => a.contentType)).toEqual(['image/jpeg']);
    const meta = await sharp(images[0]!.content).metadata();
    expect(meta.format).toBe('jpeg');
    expect(meta.width).toBeLessThanOrEqual(800);
    const leaf = (await rawLeaves(rest)).get('2')!;
    expect(field(leaf.header, 'Content-Type')).toMatch(/^image\/jpeg/);
    expect(field(leaf.header, 'Content-Previous')).toMatch(/By relay\.test; .*\(type="image\/png"\)/);
    expect(field(leaf.header, 'Content-Features')).toContain('(type="image/jpeg")');
    expect(field(rest.subarray(0, rest.indexOf('\r\n\r\n') + 2).toString('latin1'), 'Content-Conversions')).toMatch(/^relay\.test; 2 image\/png -> image\/jpeg via /);
  });

  it('fails a DRUCOF recipient nobody knows with 5.3.3 (a Maildir advertises neither CONNEG nor DRUCOF), reports it, writes nothing', async () => {
    const id = await submit([['nobody@lab.test', 'DRUCOF']], msgs.big);
    const r = (await settled(id)).get('nobody@lab.test');
    expect(r?.status).toBe('failed');
    expect(r?.lastReply?.enhanced).toBe('5.3.3');
    expect(r?.decision).toMatchObject({ branch: 'neither', hop: `route:maildir:${maildir}`, hopExtensions: [] });
    expect(mailbox('lab.test', 'nobody').files).toHaveLength(0);
    const report = await reportFor('nobody@lab.test');
    expect(report.Action).toBe('failed');
    expect(report.Status).toBe('5.3.3');
  });

  it('NOTIFY=SUCCESS gets a delivered report (Action: delivered, 2.0.0, no Remote-MTA)', async () => {
    const id = await submit([['carol@lab.test', 'NOTIFY=SUCCESS']], msgs.text);
    expect((await settled(id)).get('carol@lab.test')?.status).toBe('delivered');
    const report = await reportFor('carol@lab.test');
    expect(report.subject).toBe('Delivery Status Notification (Success)');
    expect(report.Action).toBe('delivered');
    expect(report.Status).toBe('2.0.0');
    expect(report['Remote-MTA']).toBeUndefined();
    expect(mailbox('lab.test', 'carol').files).toHaveLength(1);
  });

  it('refuses a local part that cannot name a mailbox with 550 5.1.3', async () => {
    // "/" is fine in an address (RFC 5322 atext), not in a directory name.
    const id = await submit([['a/b@lab.test'], ['dave@lab.test']], msgs.text);
    const states = await settled(id);
    expect(states.get('a/b@lab.test')).toMatchObject({ status: 'failed', lastReply: { code: 550, enhanced: '5.1.3' } });
    expect(states.get('dave@lab.test')?.status).toBe('delivered');
    expect(readdirSync(join(maildir, 'lab.test')).sort()).not.toContain('a');
    expect((await reportFor('a/b@lab.test')).Status).toBe('5.1.3');
  });
});

describe('lmtp: routes', () => {
  it('an LMTP server refusing one of two recipients after the data: that one fails with its reply, the other is delivered', async () => {
    const id = await submit([['ann@lmtp.test', 'NOTIFY=SUCCESS,FAILURE'], ['refused@lmtp.test']], msgs.text);
    const states = await settled(id);
    expect(states.get('ann@lmtp.test')).toMatchObject({ status: 'delivered', lastReply: { code: 250 } });
    const refused = states.get('refused@lmtp.test');
    expect(refused).toMatchObject({ status: 'failed', lastReply: { code: 550, enhanced: '5.2.1' } });
    expect(refused?.lastReply?.lines.join(' ')).toContain('mailbox disabled');
    // One LMTP transaction (LHLO) for both, the message as submitted under the relay's Received:.
    const got = lmtpMessages.filter((m) => m.rcpt.includes('ann@lmtp.test'));
    expect(got).toHaveLength(1);
    expect(got[0]!.rcpt).toEqual(['ann@lmtp.test', 'refused@lmtp.test']);
    expect(got[0]!.opening).toBe('LHLO');
    expect(got[0]!.body.subarray(got[0]!.body.length - msgs.text.length).equals(msgs.text)).toBe(true);

    const failed = await reportFor('refused@lmtp.test');
    expect(failed.Action).toBe('failed');
    expect(failed['Diagnostic-Code']).toContain('550 5.2.1');
    // The LMTP server offers no DSN here: the relay itself says delivered, naming the server.
    const delivered = await reportFor('ann@lmtp.test');
    expect(delivered.Action).toBe('delivered');
    expect(delivered['Remote-MTA']).toMatch(/^dns; /);
  });
});
