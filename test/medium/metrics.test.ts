/**
 * The operations endpoint of a real relay process (issue 7 item 4): `/metrics`
 * after real traffic (sessions, messages by reply class, recipient outcomes and
 * latency, DRUCOF decisions, a conversion, queue gauges, Node's defaults),
 * `/healthz`, `/readyz` (200 with Redis; 503 with a one-line reason when Redis
 * cannot be reached), and no dashboard unless switched on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { MessageStore } from '../../src/queue/store.ts';
import { startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { freePort } from '../helpers/ports.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { Dialog } from '../helpers/dialog.ts';

const prefix = uniquePrefix('medium-metrics');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
let relay: RelayProcess;
let httpPort: number;
let plainHop: NextHopPeer;
let drucofHop: NextHopPeer;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function get(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) });
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

/** Polls until the endpoint answers (the HTTP server starts right after the SMTP listener). */
async function httpUp(port: number, proc: RelayProcess): Promise<void> {
  for (const end = Date.now() + 10_000; Date.now() < end; await sleep(50)) {
    if (await get(port, '/healthz').then((r) => r.status === 200, () => false)) return;
  }
  throw new Error(`no HTTP endpoint on ${port}:\n${proc.output()}`);
}

/** One sample's value from the exposition text (`name{labels}` exactly as printed), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function scrape(): Promise<string> {
  const r = await get(httpPort, '/metrics');
  expect(r.status).toBe(200);
  return r.body;
}

/** Polls /metrics until `series` has `value`. */
async function metricReaches(series: string, value: number): Promise<string> {
  let text = '';
  for (const end = Date.now() + 20_000; Date.now() < end; await sleep(100)) {
    text = await scrape();
    if (sample(text, series) === value) return text;
  }
  throw new Error(`${series} never reached ${value}:\n${text.split('\n').filter((l) => l.startsWith('drucof_') && !l.includes('nodejs')).join('\n')}\n${relay.output().slice(-3000)}`);
}

/** Submits a message; `drucof` recipients get the DRUCOF parameter. Returns the final DATA reply. */
async function submit(to: string, body: string, drucof = false): Promise<string> {
  const d = await Dialog.connect(relay.port);
  await d.hello();
  await d.command('MAIL FROM:<s@sender.test>', 250);
  await d.command(`RCPT TO:<${to}>${drucof ? ' DRUCOF' : ''}`, 250);
  await d.command('DATA', 354);
  d.write(body.replace(/\r?\n/g, '\r\n'));
  const done = await d.read(10_000);
  await d.quit();
  return done.text;
}

beforeAll(async () => {
  plainHop = await startNextHop({});
  drucofHop = await startNextHop({ extensions: ['DRUCOF'] });
  httpPort = await freePort();
  relay = await startRelay({
    config: {
      routes: { 'plain.test': `127.0.0.1:${plainHop.port}`, 'sender.test': `127.0.0.1:${plainHop.port}`, 'drucof.test': `127.0.0.1:${drucofHop.port}` },
      // A recipient whose capabilities the relay knows: text only (an HTML message is converted).
      capabilities: { 'text@plain.test': '(type="text/plain")' },
      limits: { maxMessageSize: 20_000 },
      dns: { srv: false },
      http: { listen: `127.0.0.1:${httpPort}` },
    },
    env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
  });
  await httpUp(httpPort, relay);
});

afterAll(async () => {
  await relay?.stop();
  await plainHop?.close();
  await drucofHop?.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('/metrics, /healthz, /readyz of a relay process', () => {
  it('starts at zero with every series present, Node defaults included, and is healthy and ready', async () => {
    const text = await scrape();
    expect(sample(text, 'drucof_messages_received_total{class="2xx"}')).toBe(0);
    expect(sample(text, 'drucof_smtp_sessions_open')).toBe(0);
    expect(sample(text, 'drucof_decisions_total{branch="conneg-ok/usable"}')).toBe(0);
    expect(sample(text, 'drucof_queue_messages{state="waiting"}')).toBe(0);
    expect(sample(text, 'drucof_queue_messages{state="held"}')).toBe(0);
    expect(sample(text, 'drucof_queue_oldest_waiting_seconds')).toBe(0);
    expect(sample(text, 'drucof_process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(text).toMatch(/^# TYPE drucof_delivery_latency_seconds histogram$/m);
    expect(await get(httpPort, '/healthz')).toMatchObject({ status: 200, body: 'ok\n' });
    expect(await get(httpPort, '/readyz')).toMatchObject({ status: 200, body: 'ready\n' });
    expect((await get(httpPort, '/metrics')).type).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('counts a message accepted and relayed: session, 2xx, outcome, latency', async () => {
    expect(await submit('r@plain.test', 'Subject: one\n\nhello\n.\n')).toMatch(/^250 /);
    const text = await metricReaches('drucof_recipient_outcomes_total{status="relayed"}', 1);
    expect(plainHop.messages.map((m) => m.rcptTo)).toEqual([['r@plain.test']]);
    expect(sample(text, 'drucof_messages_received_total{class="2xx"}')).toBe(1);
    expect(sample(text, 'drucof_messages_received_total{class="5xx"}')).toBe(0);
    expect(sample(text, 'drucof_smtp_sessions_total')).toBe(1);
    expect(sample(text, 'drucof_delivery_latency_seconds_count{status="relayed"}')).toBe(1);
    expect(sample(text, 'drucof_delivery_latency_seconds_bucket{le="+Inf",status="relayed"}')).toBe(1);
    expect(sample(text, 'drucof_delivery_latency_seconds_sum{status="relayed"}')).toBeLessThan(10);
    // The session closed after QUIT.
    await metricReaches('drucof_smtp_sessions_open', 0);
  });

  it('counts a message refused (552, too big) as 5xx', async () => {
    expect(await submit('r@plain.test', `Subject: big\n\n${'x'.repeat(30_000)}\n.\n`)).toMatch(/^552 /);
    const text = await metricReaches('drucof_messages_received_total{class="5xx"}', 1);
    expect(sample(text, 'drucof_messages_received_total{class="2xx"}')).toBe(1);
  });

  it('counts DRUCOF decisions by branch, and a conversion with its loss once per run', async () => {
    expect(await submit('reader@drucof.test', 'Subject: pass on\n\nhello\n.\n', true)).toMatch(/^250 /);
    let text = await metricReaches('drucof_decisions_total{branch="drucof-only"}', 1);
    await metricReaches('drucof_recipient_outcomes_total{status="relayed-with-drucof"}', 1);

    const html = ['Subject: html', 'MIME-Version: 1.0', 'Content-Type: text/html; charset=utf-8', '', '<html><body><p>Hello <b>there</b></p></body></html>', '.', ''].join('\n');
    expect(await submit('text@plain.test', html, true)).toMatch(/^250 /);
    text = await metricReaches('drucof_recipient_outcomes_total{status="converted-and-relayed"}', 1);
    expect(sample(text, 'drucof_decisions_total{branch="conneg-ok/usable"}')).toBe(1);
    const converted = text.split('\n').filter((l) => l.startsWith('drucof_conversions_total{'));
    expect(converted).toHaveLength(1);
    expect(converted[0]).toMatch(/^drucof_conversions_total\{converter="[^"]+"\} 1$/);
    const converter = /converter="([^"]+)"/.exec(converted[0]!)![1]!;
    expect(sample(text, `drucof_conversion_loss_count{converter="${converter}"}`)).toBe(1);
    expect(sample(text, `drucof_conversion_loss_sum{converter="${converter}"}`)).toBeGreaterThanOrEqual(0);
    expect(sample(text, 'drucof_messages_received_total{class="2xx"}')).toBe(3);
  });

  it('has no dashboard unless http.dashboard is on', async () => {
    expect((await get(httpPort, '/')).status).toBe(404);
    expect((await get(httpPort, '/api/queue')).status).toBe(404);
  });
});

describe('/readyz without Redis', () => {
  it('answers 503 with a one-line reason while Redis cannot be reached; /healthz and /metrics still answer', async () => {
    const port = await freePort();
    // As test/e2e/process.test.ts: a closed port for Redis (the listener starts and answers 451).
    const listener = await startRelay({ command: 'listen', config: { http: { listen: `127.0.0.1:${port}` } }, env: { REDIS_URL: 'redis://127.0.0.1:1', RELAY_QUEUE_PREFIX: prefix } });
    try {
      await httpUp(port, listener);
      const started = Date.now();
      const ready = await get(port, '/readyz');
      expect(Date.now() - started).toBeLessThan(2000);
      expect(ready.status).toBe(503);
      expect(ready.body).toMatch(/^redis: [^\n]+\n$/);
      expect(await get(port, '/healthz')).toMatchObject({ status: 200 });
      const metrics = await get(port, '/metrics');
      expect(metrics.status).toBe(200);
      // The queue cannot be read: its gauges are left out rather than made up.
      expect(metrics.body).not.toMatch(/^drucof_queue_messages\{/m);
      // The failed read is counted (seen from the next scrape on), and so are the listener connection's errors.
      const again = (await get(port, '/metrics')).body;
      expect(sample(again, 'drucof_redis_errors_total{connection="ops"}')).toBeGreaterThanOrEqual(1);
      expect(sample(again, 'drucof_redis_errors_total{connection="listener"}')).toBeGreaterThanOrEqual(1);
    } finally {
      await listener.stop();
    }
  });
});
