/**
 * Issue 8 item 3 — the next hop down for a while, then back. Two outages, each
 * against a real relay process on loopback: nothing listening on the hop's port
 * (connection refused), then a hop that accepts TCP and never greets. The relay
 * retries on its schedule (`queue.retrySchedule: [1s, 2s, 4s]`, checked against
 * the attempt times recorded per recipient and the `delivery attempt` / `message
 * deferred` log lines), sends a `delayed` report only where NOTIFY=DELAY asked
 * (exactly one, once the message is older than `queue.delayWarning: 2s`), never
 * fails or reports failed a recipient that later succeeds, and delivers
 * everything queued — each recipient exactly once — when the hop is back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { simpleParser } from 'mailparser';
import { MessageStore } from '../../src/queue/store.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { startNextHop, type NextHopPeer, type ReceivedMessage } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { freePort } from '../helpers/ports.ts';
import { Dialog } from '../helpers/dialog.ts';
import { deliveryStatusBlocks } from '../helpers/reports.ts';

const SCHEDULE_MS = [1000, 2000, 4000];
const DELAY_WARNING_MS = 2000;
const GREETING_TIMEOUT_MS = 500;

const prefix = uniquePrefix('fault-outage');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
let relay: RelayProcess;
let reports: NextHopPeer;
let silent: NextHopPeer;
let refused: NextHopPeer | undefined;
let refusedPort: number;
let flappy: NextHopPeer;
let flappyPort: number;
let conneg: NextHopPeer;
let connegPort: number;
/** A CONNEG hop's answer for every recipient: text only (the test messages are text, so nothing is converted). */
const connegScript = { dsn: false, extensions: ['CONNEG' as const], conneg: () => ({ expression: '(type="text/plain")' }) };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Submits one message; each recipient is `address` or `address PARAMS` (the RCPT line's rest). */
async function submit(from: string, rcpts: readonly string[]): Promise<string> {
  const d = await Dialog.connect(relay.port);
  await d.hello();
  await d.command(`MAIL FROM:<${from}>`, 250);
  for (const r of rcpts) {
    const [address, ...params] = r.split(' ');
    await d.command(`RCPT TO:<${address}>${params.length > 0 ? ' ' + params.join(' ') : ''}`, 250);
  }
  await d.command('DATA', 354);
  const done = await d.command(`From: <${from}>\r\nSubject: outage\r\nMessage-ID: <${Math.random()}@outage.test>\r\n\r\nqueued while the next hop is down\r\n.`, 250);
  await d.quit();
  return /\[QUEUEID ([^\]]+)\]/.exec(done.text)![1]!;
}

interface Snapshot {
  readonly status: RecipientState['status'];
  readonly attempts: number;
  readonly lastAttemptAt?: string;
  readonly nextAttemptAt?: string;
  readonly reply?: string;
}

/**
 * Polls the recipients' records every 50 ms (attempts are ≥ 1 s apart): per message
 * and recipient, every state seen, and the last state seen after each attempt
 * (the attempt's outcome is written first, its nextAttemptAt just after).
 */
class Watch {
  readonly seen = new Map<string, Snapshot[]>();
  readonly receivedAt = new Map<string, number>();
  private stopped = false;
  private readonly done: Promise<void>;

  private readonly ids: string[] = [];

  constructor() {
    this.done = this.run();
  }

  /** Watches one more message (call right after its 250: the first attempt comes within milliseconds). */
  add(id: string): string {
    this.ids.push(id);
    return id;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      for (const id of this.ids) {
        const m = await store.loadMeta(id).catch(() => undefined); // Redis closed after a failed test
        if (!m) continue;
        this.receivedAt.set(id, Date.parse(m.envelope.receivedAt));
        for (const r of m.recipients) {
          const key = `${id} ${r.address}`;
          const list = this.seen.get(key) ?? [];
          const s: Snapshot = {
            status: r.status,
            attempts: r.attempts,
            ...(r.lastAttemptAt && { lastAttemptAt: r.lastAttemptAt }),
            ...(r.nextAttemptAt && { nextAttemptAt: r.nextAttemptAt }),
            ...(r.lastReply && { reply: `${r.lastReply.code} ${r.lastReply.enhanced ?? ''} ${r.lastReply.lines.join(' ')}` }),
          };
          const last = list[list.length - 1];
          if (!last || JSON.stringify(last) !== JSON.stringify(s)) list.push(s);
          this.seen.set(key, list);
        }
      }
      await sleep(50);
    }
  }

  /** The last state seen after each attempt, index 0 = attempt 1. */
  attempts(id: string, address: string): Snapshot[] {
    const out: Snapshot[] = [];
    for (const s of this.seen.get(`${id} ${address}`) ?? []) if (s.attempts > 0) out[s.attempts - 1] = s;
    return out;
  }

  latest(id: string, address: string): Snapshot | undefined {
    const l = this.seen.get(`${id} ${address}`);
    return l?.[l.length - 1];
  }

  async until(what: string, ok: () => boolean, ms: number): Promise<void> {
    for (const end = Date.now() + ms; !ok(); await sleep(50)) {
      if (Date.now() > end) {
        this.stopped = true;
        throw new Error(`timed out waiting for ${what}: ${JSON.stringify([...this.seen], null, 1)}`);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

/** The relay's JSON log lines about one message. */
function logLines(queueId: string, msg: string): Record<string, unknown>[] {
  return relay
    .output()
    .split('\n')
    .flatMap((l) => {
      try {
        const j = JSON.parse(l) as Record<string, unknown>;
        return j.queueId === queueId && j.msg === msg ? [j] : [];
      } catch {
        return [];
      }
    });
}

const reportsTo = (sender: string): ReceivedMessage[] => reports.messages.filter((m) => m.mailFrom === '' && m.rcptTo.includes(sender));

async function parseReport(m: ReceivedMessage) {
  const mail = await simpleParser(m.body, { keepDeliveryStatus: true });
  const ds = mail.attachments.find((a) => a.contentType === 'message/delivery-status');
  const blocks = deliveryStatusBlocks(ds!.content);
  return { recipients: blocks.slice(1) };
}

/**
 * The schedule, from the records: after attempt k (k ≥ 1) the next was set
 * SCHEDULE[k-1] later (the last step repeating), and attempt k+1 happened then
 * (not before; after at most `took` ms of its own plus the queue's latency).
 */
function expectSchedule(attempts: readonly Snapshot[], took: number, label: string): void {
  for (let k = 0; k < attempts.length - 1; k++) {
    const a = attempts[k]!;
    const b = attempts[k + 1]!;
    expect(a.status, `${label} attempt ${k + 1}`).toBe('deferred');
    const step = SCHEDULE_MS[Math.min(k, SCHEDULE_MS.length - 1)]!;
    const planned = Date.parse(a.nextAttemptAt!) - Date.parse(a.lastAttemptAt!);
    expect(planned, `${label}: delay set after attempt ${k + 1}`).toBeGreaterThanOrEqual(step);
    expect(planned, `${label}: delay set after attempt ${k + 1}`).toBeLessThan(step + 900); // the outcome's save, then the schedule's
    const late = Date.parse(b.lastAttemptAt!) - Date.parse(a.nextAttemptAt!);
    expect(late, `${label}: attempt ${k + 2} against its planned time`).toBeGreaterThanOrEqual(-50);
    expect(late, `${label}: attempt ${k + 2} against its planned time`).toBeLessThan(took + 2000);
  }
}

/** The log agrees with the records: one `delivery attempt` line per attempt at its recorded time, one `message deferred` line per deferral with the same next time. */
function expectLogs(id: string, attempts: readonly Snapshot[], codes: { failed: string; ok: string }): void {
  const tried = logLines(id, 'delivery attempt');
  expect(tried).toHaveLength(attempts.length);
  tried.forEach((line, k) => {
    const at = Date.parse(line.time as string);
    expect(Math.abs(at - Date.parse(attempts[k]!.lastAttemptAt!)), `log time of attempt ${k + 1}`).toBeLessThan(1000);
    const rcpts = line.recipients as { code: number; enhanced?: string }[];
    const want = k === attempts.length - 1 ? codes.ok : codes.failed;
    for (const r of rcpts) expect(`${r.code} ${r.enhanced ?? ''}`.trim()).toBe(want);
  });
  const deferred = logLines(id, 'message deferred').map((l) => l.nextAttemptAt);
  expect(deferred).toEqual(attempts.slice(0, -1).map((a) => a.nextAttemptAt));
}

beforeAll(async () => {
  refusedPort = await freePort();
  reports = await startNextHop({});
  flappy = await startNextHop({ dsn: false });
  flappyPort = flappy.port;
  conneg = await startNextHop(connegScript);
  connegPort = conneg.port;
  silent = await startNextHop({ greeting: 'never' });
  relay = await startRelay({
    config: {
      hostname: 'relay.test',
      routes: {
        'refused.test': `127.0.0.1:${refusedPort}`,
        'silent.test': `127.0.0.1:${silent.port}`,
        'flappy.test': `127.0.0.1:${flappyPort}`,
        'conneg.test': `127.0.0.1:${connegPort}`,
        'sender.test': `127.0.0.1:${reports.port}`,
      },
      capabilities: { 'conv@refused.test': '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=800)))' },
      queue: { retrySchedule: ['1s', '2s', '4s'], delayWarning: '2s' },
      delivery: { connectTimeout: '2s', greetingTimeout: `${GREETING_TIMEOUT_MS}ms`, commandTimeout: '2s' },
      dns: { srv: false },
    },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
});

afterAll(async () => {
  await relay?.stop();
  await refused?.close();
  await silent?.close();
  await flappy?.close();
  await conneg?.close();
  await reports?.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

/** Every failed report the reports hop got (there must be none in this file). */
const failureReports = async () => {
  const out: string[] = [];
  for (const m of reports.messages.filter((x) => x.mailFrom === '')) {
    for (const r of (await parseReport(m)).recipients) if (r.Action === 'failed') out.push(`${m.rcptTo.join(',')}: ${r['Final-Recipient']}`);
  }
  return out;
};

describe('the next hop down for a while, then back', () => {
  it('connection refused: retried on the schedule, one delayed report only where NOTIFY=DELAY asked, everything delivered once when the hop is back', async () => {
    const pid = relay.proc.pid;
    // A: three recipients, three NOTIFY choices; B arrives a second into the outage; C asks nothing.
    const watch = new Watch();
    const a = watch.add(await submit('a@sender.test', ['delay@refused.test NOTIFY=DELAY,FAILURE', 'plain@refused.test', 'fail@refused.test NOTIFY=FAILURE']));
    const c = watch.add(await submit('c@sender.test', ['none@refused.test']));
    await sleep(1000);
    const b = watch.add(await submit('b@sender.test', ['solo@refused.test NOTIFY=SUCCESS,DELAY,FAILURE']));
    // DRUCOF recipients: capabilities from the registry, and none known (the hop, once up, advertises DRUCOF).
    // A hop that cannot be reached decides nothing: deferred like the others, never failed 5.3.3.
    const g = watch.add(await submit('g@sender.test', ['conv@refused.test DRUCOF', 'pass@refused.test DRUCOF NOTIFY=FAILURE']));
    const ids = { [a]: ['delay@refused.test', 'plain@refused.test', 'fail@refused.test'], [b]: ['solo@refused.test'], [c]: ['none@refused.test'], [g]: ['conv@refused.test', 'pass@refused.test'] };
    const endStatus: Record<string, string> = { 'pass@refused.test': 'relayed-with-drucof' };
    const done = (id: string, r: string) => watch.latest(id, r)?.status === (endStatus[r] ?? 'relayed');
    const all = Object.entries(ids).flatMap(([id, rs]) => rs.map((r) => [id, r] as const));

    // Down for three attempts of every message (≈ 1 + 2 s after each one's first), then back.
    await watch.until('three failed attempts each', () => all.every(([id, r]) => (watch.latest(id, r)?.attempts ?? 0) >= 3), 20_000);
    expect(all.every(([id, r]) => watch.latest(id, r)?.status === 'deferred')).toBe(true);
    refused = await startNextHop({ dsn: false, extensions: ['DRUCOF'] }, { port: refusedPort });
    await watch.until('every recipient relayed', () => all.every(([id, r]) => done(id, r)), 20_000);
    await sleep(1500); // room for a report or a second delivery that should not come
    await watch.stop();

    // Everything queued was delivered, each recipient exactly once, and the relay never gave up on anyone.
    for (const [id, r] of all) {
      expect(refused.messages.filter((m) => m.rcptTo.includes(r)), r).toHaveLength(1);
      expect(watch.seen.get(`${id} ${r}`)!.some((s) => s.status === 'failed'), r).toBe(false);
      const attempts = watch.attempts(id, r);
      expect(attempts.length, r).toBeGreaterThanOrEqual(4);
      for (const s of attempts.slice(0, -1)) expect(s.reply, r).toMatch(/^451 4\.4\.1 connect to 127\.0\.0\.1:\d+: connection refused/);
      expect(attempts[attempts.length - 1]!.reply).toMatch(/^250 /);
      expect(attempts[attempts.length - 1]!.status).toBe(endStatus[r] ?? 'relayed');
      expectSchedule(attempts, 200, r);
    }
    // One transaction per attempt per message: the log and the records agree.
    expectLogs(a, watch.attempts(a, 'delay@refused.test'), { failed: '451 4.4.1', ok: '250' });
    expectLogs(b, watch.attempts(b, 'solo@refused.test'), { failed: '451 4.4.1', ok: '250' });

    // Delay reports: exactly one to A's sender (naming only the recipient that asked), one to B's; none to C's.
    expect(reportsTo('a@sender.test')).toHaveLength(1);
    const ra = await parseReport(reportsTo('a@sender.test')[0]!);
    expect(ra.recipients).toHaveLength(1);
    expect(ra.recipients[0]).toMatchObject({ Action: 'delayed', Status: '4.4.1', 'Final-Recipient': 'rfc822;delay@refused.test' });
    expect(ra.recipients[0]!['Will-Retry-Until']).toBeTruthy();
    const rb = reportsTo('b@sender.test').map((m) => m.body.toString('latin1'));
    // B asked SUCCESS too, and the hop has no DSN: its `relayed` report comes besides the one delay report.
    const actions = await Promise.all(reportsTo('b@sender.test').map(async (m) => (await parseReport(m)).recipients.map((x) => x.Action).join()));
    expect(actions.sort(), rb.join('\n----\n')).toEqual(['delayed', 'relayed']);
    expect(reportsTo('c@sender.test')).toHaveLength(0);
    expect(reportsTo('g@sender.test')).toHaveLength(0);
    // … each delay report only once the message was older than delayWarning (attempt 3, at ≈ 3 s).
    for (const [id, r] of [[a, 'delay@refused.test'], [b, 'solo@refused.test']] as const) {
      const warnedAt = watch.attempts(id, r).findIndex((s) => Date.parse(s.lastAttemptAt!) - watch.receivedAt.get(id)! >= DELAY_WARNING_MS);
      expect(warnedAt, r).toBe(2);
    }
    expect(await failureReports()).toEqual([]);
    expect(relay.proc.pid).toBe(pid);
    expect(relay.proc.exitCode).toBeNull();
  }, 60_000);

  it('accepting TCP but never greeting: each attempt ends at the greeting time-out (451 4.4.2), on the schedule; delivered once greeting again', async () => {
    const watch = new Watch();
    const d = watch.add(await submit('d@sender.test', ['delay@silent.test NOTIFY=DELAY', 'plain@silent.test']));
    const e = watch.add(await submit('e@sender.test', ['fail@silent.test NOTIFY=FAILURE']));
    const ids = { [d]: ['delay@silent.test', 'plain@silent.test'], [e]: ['fail@silent.test'] };
    const all = Object.entries(ids).flatMap(([id, rs]) => rs.map((r) => [id, r] as const));

    await watch.until('three failed attempts each', () => all.every(([id, r]) => (watch.latest(id, r)?.attempts ?? 0) >= 3), 25_000);
    const withheld = silent.withheld;
    expect(withheld).toBeGreaterThanOrEqual(6); // 2 messages × 3 attempts, one connection each
    expect(silent.connections).toBe(0); // no session was ever greeted
    silent.setScript({ dsn: false });
    await watch.until('every recipient relayed', () => all.every(([id, r]) => watch.latest(id, r)?.status === 'relayed'), 20_000);
    await sleep(1500);
    await watch.stop();

    for (const [id, r] of all) {
      expect(silent.messages.filter((m) => m.rcptTo.includes(r)), r).toHaveLength(1);
      expect(watch.seen.get(`${id} ${r}`)!.some((s) => s.status === 'failed'), r).toBe(false);
      const attempts = watch.attempts(id, r);
      expect(attempts.length, r).toBeGreaterThanOrEqual(4);
      for (const s of attempts.slice(0, -1)) expect(s.reply, r).toMatch(/^451 4\.4\.2 conversation with 127\.0\.0\.1:\d+ timed out while receiving the initial server greeting/);
      expect(attempts[attempts.length - 1]!.reply).toMatch(/^250 /);
      // Each failed attempt takes the greeting time-out before its outcome is recorded.
      expectSchedule(attempts, GREETING_TIMEOUT_MS, r);
      for (let k = 1; k < attempts.length - 1; k++) {
        expect(Date.parse(attempts[k]!.lastAttemptAt!) - Date.parse(attempts[k - 1]!.nextAttemptAt!), `${r} attempt ${k + 1} lasted the greeting time-out`).toBeGreaterThanOrEqual(GREETING_TIMEOUT_MS - 50);
      }
    }
    expectLogs(d, watch.attempts(d, 'delay@silent.test'), { failed: '451 4.4.2', ok: '250' });

    expect(reportsTo('d@sender.test')).toHaveLength(1);
    const rd = await parseReport(reportsTo('d@sender.test')[0]!);
    expect(rd.recipients).toHaveLength(1);
    expect(rd.recipients[0]).toMatchObject({ Action: 'delayed', Status: '4.4.2', 'Final-Recipient': 'rfc822;delay@silent.test' });
    expect(reportsTo('e@sender.test')).toHaveLength(0);
    expect(await failureReports()).toEqual([]);
  }, 60_000);
  it('the hop crashes while the relay keeps a connection to it for reuse, and comes back: the dead connection is not used, the mail waits on the schedule and is delivered once', async () => {
    const watch = new Watch();
    const first = watch.add(await submit('f@sender.test', ['one@flappy.test']));
    await watch.until('the first message relayed', () => watch.latest(first, 'one@flappy.test')?.status === 'relayed', 10_000);
    // The relay now holds that connection for reuse (delivery.idleReuse); the hop dies without a word.
    flappy.dropConnections();
    await flappy.close();
    const second = watch.add(await submit('f@sender.test', ['two@flappy.test', 'three@flappy.test NOTIFY=FAILURE']));
    await watch.until('two failed attempts', () => (watch.latest(second, 'two@flappy.test')?.attempts ?? 0) >= 2, 15_000);
    flappy = await startNextHop({ dsn: false }, { port: flappyPort });
    await watch.until('relayed', () => ['two@flappy.test', 'three@flappy.test'].every((r) => watch.latest(second, r)?.status === 'relayed'), 15_000);
    await sleep(1000);
    await watch.stop();
    for (const r of ['two@flappy.test', 'three@flappy.test']) {
      const attempts = watch.attempts(second, r);
      expect(attempts.length, r).toBeGreaterThanOrEqual(3);
      // Never the dead connection's "lost connection": a parked connection that died is replaced, and the hop is down.
      for (const s of attempts.slice(0, -1)) expect(s.reply, r).toMatch(/^451 4\.4\.1 connect to 127\.0\.0\.1:\d+: connection refused/);
      expect(watch.seen.get(`${second} ${r}`)!.some((s) => s.status === 'failed'), r).toBe(false);
      expect(flappy.messages.filter((m) => m.rcptTo.includes(r)), r).toHaveLength(1);
      expectSchedule(attempts, 200, r);
    }
    expect(reportsTo('f@sender.test')).toHaveLength(0);
    expect(await failureReports()).toEqual([]);
  }, 40_000);
  it('a CONNEG hop down: its DRUCOF recipients wait (the failed probe is no answer about them), and are decided and delivered as soon as it is back', async () => {
    const watch = new Watch();
    // The hop is known (its EHLO keywords cached) from an earlier delivery, then goes down.
    const before = watch.add(await submit('k@sender.test', ['known@conneg.test DRUCOF']));
    await watch.until('the first message relayed', () => watch.latest(before, 'known@conneg.test')?.status === 'relayed', 10_000);
    conneg.dropConnections();
    await conneg.close();
    const id = watch.add(await submit('k@sender.test', ['asks@conneg.test DRUCOF']));
    await watch.until('two failed attempts', () => (watch.latest(id, 'asks@conneg.test')?.attempts ?? 0) >= 2, 15_000);
    conneg = await startNextHop(connegScript, { port: connegPort });
    const backAt = Date.now();
    // The next attempt after the hop is back asks it and delivers (attempt 3, ≈ 2 s after attempt 2), not when some cached failure expires.
    await watch.until('relayed', () => watch.latest(id, 'asks@conneg.test')?.status === 'relayed', 12_000);
    expect(Date.now() - backAt).toBeLessThan(SCHEDULE_MS[1]! + 2000);
    await watch.stop();
    const attempts = watch.attempts(id, 'asks@conneg.test');
    for (const s of attempts.slice(0, -1)) expect(s.reply).toMatch(/^451 4\.4\.1 connect to 127\.0\.0\.1:\d+: connection refused/);
    expect(watch.seen.get(`${id} asks@conneg.test`)!.some((s) => s.status === 'failed')).toBe(false);
    const m = (await store.loadMeta(id))!.recipients[0]!;
    expect(m.decision).toMatchObject({ branch: 'conneg-ok/usable', capabilities: { kind: 'known', source: 'conneg', expression: '(type="text/plain")' } });
    expect(conneg.messages.filter((x) => x.rcptTo.includes('asks@conneg.test'))).toHaveLength(1);
    expect(await failureReports()).toEqual([]);
  }, 40_000);
});
