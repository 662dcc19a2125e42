/**
 * Delivery status notifications end to end (RFC 3461 / 3464): the relay as a
 * process, real next hops with and without DSN, reports parsed back with mailparser.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { Redis } from 'ioredis';
import { MessageStore } from '../../src/queue/store.ts';
import { startNextHop, type ReceivedMessage } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { deliveryStatusBlocks } from '../helpers/reports.ts';
import { sleep, waitFor } from '../helpers/wait.ts';

const prefix = uniquePrefix('e2e-dsn');
const expiryPrefix = uniquePrefix('e2e-dsn-expiry');
const patientPrefix = uniquePrefix('e2e-dsn-patient');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
const patientStore = new MessageStore(redis, patientPrefix);
let withDsn: Awaited<ReturnType<typeof startNextHop>>;
let withoutDsn: Awaited<ReturnType<typeof startNextHop>>;
let relay: RelayProcess;
let expiring: RelayProcess;
let patient: RelayProcess;
let slowUntil = 0;
let hinted = 0;


const reportsTo = (sender: string) => withDsn.messages.filter((m) => m.mailFrom === '' && m.rcptTo.includes(sender));

/** A report's delivery-status part as per-message fields and per-recipient blocks (continuations unfolded). */
async function parseReport(m: ReceivedMessage) {
  const mail = await simpleParser(m.body, { keepDeliveryStatus: true });
  const ds = mail.attachments.find((a) => a.contentType === 'message/delivery-status');
  expect(ds, 'delivery-status part').toBeDefined();
  const blocks = deliveryStatusBlocks(ds!.content);
  const contentType = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
  return { mail, contentType, perMessage: blocks[0]!, recipients: blocks.slice(1), parts: mail.attachments.map((a) => a.contentType) };
}

async function send(port: number, from: string, to: string[], dsn?: object) {
  const info = await nodemailer
    .createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true })
    .sendMail({ envelope: { from, to }, raw: `From: ${from || 'mailer-daemon@example.com'}\r\nSubject: dsn test\r\nMessage-ID: <${Math.random()}@t>\r\n\r\nbody\r\n`, ...(dsn && { dsn }) });
  return /\[QUEUEID ([^\]]+)\]/.exec(info.response)![1]!;
}

function cli(...args: string[]) {
  const dir = mkdtempSync(join(tmpdir(), 'drucof-cli-'));
  writeFileSync(join(dir, 'c.yaml'), 'hostname: relay.test\n');
  return spawnSync(process.execPath, ['bin/drucof-relay.js', 'queue', ...args, '--config', join(dir, 'c.yaml')], {
    encoding: 'utf8',
    env: { ...process.env, REDIS_URL, RELAY_QUEUE_PREFIX: patientPrefix },
    timeout: 20_000,
  });
}

beforeAll(async () => {
  const rcpt = (a: string) => {
    if (a.startsWith('bad')) return { code: 550, text: '5.1.1 <' + a + '>: no such user' };
    if (a.startsWith('never')) return { code: 451, text: '4.2.0 mailbox busy' };
    if (a.startsWith('hint') && hinted++ === 0) return { code: 451, text: '4.3.2 [RETRY-AFTER 1] busy, come back in a second' };
    if (a.startsWith('slow') && Date.now() < slowUntil) return { code: 451, text: '4.2.0 try later' };
    return undefined;
  };
  withDsn = await startNextHop({ dsn: true, rcpt });
  withoutDsn = await startNextHop({ dsn: false });
  const routes = { 'dsn.test': `127.0.0.1:${withDsn.port}`, 'sender.test': `127.0.0.1:${withDsn.port}`, 'nodsn.test': `127.0.0.1:${withoutDsn.port}` };
  relay = await startRelay({
    config: { hostname: 'relay.test', routes, queue: { retrySchedule: ['1s'], delayWarning: '1s' } },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
  expiring = await startRelay({
    config: { hostname: 'relay.test', routes, queue: { retrySchedule: ['1s'], maxLifetime: '3s', delayWarning: 0 } },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: expiryPrefix },
  });
  patient = await startRelay({
    config: { hostname: 'relay.test', routes, queue: { retrySchedule: ['1h'] } },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: patientPrefix },
  });
});

afterAll(async () => {
  await relay?.stop();
  await expiring?.stop();
  await patient?.stop();
  await patientStore.close();
  await withDsn?.close();
  await withoutDsn?.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
  await dropPrefix(expiryPrefix);
  await dropPrefix(patientPrefix);
});

describe('delivery status notifications', () => {
  it('a 5xx gives a failed report from <> with RET=HDRS, ENVID and ORCPT echoed', async () => {
    await send(relay.port, 'f1@sender.test', ['bad1@dsn.test'], { id: 'QQ314159', return: 'headers', notify: ['failure'], recipient: 'orig@example.net' });
    const m = await waitFor('failure report', () => reportsTo('f1@sender.test')[0]);
    expect(m.rcptLines[0]).toMatch(/NOTIFY=NEVER/);
    const r = await parseReport(m);
    expect(r.contentType.value).toBe('multipart/report');
    expect(r.contentType.params['report-type']).toBe('delivery-status');
    expect(r.parts).toEqual(['message/delivery-status', 'text/rfc822-headers']);
    expect(r.perMessage).toMatchObject({ 'Reporting-MTA': 'dns; relay.test', 'Original-Envelope-Id': 'QQ314159' });
    expect(r.recipients).toHaveLength(1);
    expect(r.recipients[0]).toMatchObject({
      'Original-Recipient': 'rfc822;orig@example.net',
      'Final-Recipient': 'rfc822;bad1@dsn.test',
      Action: 'failed',
      Status: '5.1.1',
      'Diagnostic-Code': 'smtp; 550 5.1.1 <bad1@dsn.test>: no such user',
    });
    expect(r.recipients[0]!['Remote-MTA']).toMatch(/^dns; /);
  });

  it('several recipients that fail together share one report', async () => {
    await send(relay.port, 'f2@sender.test', ['bad2@dsn.test', 'bad3@dsn.test', 'good@dsn.test']);
    const m = await waitFor('failure report', () => reportsTo('f2@sender.test')[0]);
    const r = await parseReport(m);
    expect(r.recipients.map((x) => x['Final-Recipient'])).toEqual(['rfc822;bad2@dsn.test', 'rfc822;bad3@dsn.test']);
    await sleep(500);
    expect(reportsTo('f2@sender.test')).toHaveLength(1);
  });

  it('a delayed report goes out once, and only to recipients with NOTIFY=DELAY', async () => {
    slowUntil = Date.now() + 3500;
    await send(relay.port, 'd1@sender.test', ['slow1@dsn.test'], { notify: ['delay', 'failure'] });
    await send(relay.port, 'd2@sender.test', ['slow2@dsn.test'], { notify: ['failure'] });
    const m = await waitFor('delay report', () => reportsTo('d1@sender.test')[0]);
    const r = await parseReport(m);
    expect(r.recipients[0]).toMatchObject({ Action: 'delayed', Status: '4.2.0', 'Final-Recipient': 'rfc822;slow1@dsn.test' });
    expect(r.recipients[0]!['Will-Retry-Until']).toBeTruthy();
    await waitFor('delivery', () => (withDsn.messages.some((x) => x.rcptTo.includes('slow2@dsn.test')) ? true : undefined));
    await waitFor('delivery', () => (withDsn.messages.some((x) => x.rcptTo.includes('slow1@dsn.test')) ? true : undefined));
    await sleep(500);
    expect(reportsTo('d1@sender.test')).toHaveLength(1);
    expect(reportsTo('d2@sender.test')).toHaveLength(0);
  });

  it('NOTIFY=SUCCESS to a hop without DSN gives a relayed report; to a DSN hop the request travels on instead', async () => {
    await send(relay.port, 'r1@sender.test', ['ok@nodsn.test'], { notify: ['success'] });
    const r = await parseReport(await waitFor('relayed report', () => reportsTo('r1@sender.test')[0]));
    expect(r.recipients[0]).toMatchObject({ Action: 'relayed', 'Final-Recipient': 'rfc822;ok@nodsn.test' });
    expect(r.recipients[0]!.Status).toMatch(/^2\./);

    const id = await send(relay.port, 'r2@sender.test', ['ok@dsn.test'], { notify: ['success'] });
    const got = await waitFor('delivery', () => withDsn.messages.find((x) => x.rcptTo.includes('ok@dsn.test')));
    expect(got.rcptLines[0]).toMatch(/NOTIFY=SUCCESS/);
    await waitFor('finished', async () => ((await store.loadMeta(id))?.recipients[0]?.status === 'relayed' ? true : undefined));
    await sleep(500);
    expect(reportsTo('r2@sender.test')).toHaveLength(0);
  });

  it('NOTIFY=NEVER and the null sender get no report', async () => {
    const never = await send(relay.port, 'n1@sender.test', ['bad4@dsn.test'], { notify: 'never' });
    const nul = await send(relay.port, '', ['bad5@dsn.test']);
    for (const id of [never, nul]) {
      const r = await waitFor('failure', async () => (await store.loadMeta(id))?.recipients.find((x) => x.status === 'failed'));
      expect(r.reportOwed).toBeUndefined();
    }
    await sleep(700);
    expect(reportsTo('n1@sender.test')).toHaveLength(0);
    expect(withDsn.messages.filter((m) => m.mailFrom === '' && m.rcptTo.length === 0)).toHaveLength(0);
  });

  it('a recipient still deferred at the end of the queue lifetime fails with 4.4.7', async () => {
    await send(expiring.port, 'e1@sender.test', ['never1@dsn.test']);
    const r = await parseReport(await waitFor('expiry report', () => reportsTo('e1@sender.test')[0], 15_000));
    expect(r.recipients[0]).toMatchObject({ Action: 'failed', Status: '4.4.7', 'Final-Recipient': 'rfc822;never1@dsn.test' });
    expect(r.recipients[0]!['Diagnostic-Code']).toMatch(/^smtp; 451 4\.4\.7 message expired .* last error: 451 4\.2\.0 mailbox busy/);
  });

  it('a next hop’s [RETRY-AFTER n] hint moves the next attempt (schedule: 1 h)', async () => {
    const id = await send(patient.port, 'h1@sender.test', ['hint@dsn.test']);
    const started = Date.now();
    await waitFor('the hinted retry', () => withDsn.messages.find((m) => m.rcptTo.includes('hint@dsn.test')), 10_000);
    expect(Date.now() - started).toBeLessThan(8000);
    const r = await waitFor('the record', async () => {
      const x = (await patientStore.loadMeta(id))?.recipients[0];
      return x?.status === 'relayed' ? x : undefined;
    });
    expect(r.attempts).toBe(2);
  });

  it('queue retry / hold / release / delete --bounce act on the running relay’s queue', async () => {
    const id = await send(patient.port, 'q1@sender.test', ['never2@dsn.test']);
    const attemptsOf = async () => (await patientStore.loadMeta(id))?.recipients[0]?.attempts ?? 0;
    await waitFor('deferral', async () => ((await attemptsOf()) === 1 ? true : undefined));
    expect(cli('list').stdout).toMatch(new RegExp(`${id}\\s+delayed`));

    expect(cli('retry', id).stdout).toContain(`${id}: queued for delivery now`);
    await waitFor('the retried attempt', async () => ((await attemptsOf()) === 2 ? true : undefined));

    const hold = cli('hold', id);
    expect(hold.stdout).toContain(`${id}: put on hold`);
    expect(cli('list').stdout).toMatch(new RegExp(`${id}\\s+hold`));
    expect(cli('retry', id).stdout).toContain(`${id}: released`);
    await waitFor('an attempt after release', async () => ((await attemptsOf()) === 3 ? true : undefined));
    expect(cli('hold', id).status).toBe(0);
    expect(cli('release', id).stdout).toContain(`${id}: released`);
    await waitFor('an attempt after release', async () => ((await attemptsOf()) === 4 ? true : undefined));

    const del = cli('delete', id, '--bounce');
    expect(del.stdout).toContain(`${id}: failure report queued for 1 recipient`);
    expect(del.stdout).toContain(`${id}: deleted`);
    const r = await parseReport(await waitFor('bounce', () => reportsTo('q1@sender.test')[0]));
    expect(r.recipients[0]).toMatchObject({ Action: 'failed', Status: '5.0.0', 'Final-Recipient': 'rfc822;never2@dsn.test' });
    expect(r.recipients[0]!['Diagnostic-Code']).toContain('deleted from the queue by the mail system administrator');
    expect(cli('show', id).status).toBe(1);
    expect(cli('list').stdout).not.toContain(id);
  });
});
