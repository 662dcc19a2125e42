/**
 * The metrics façade and its Prometheus form (ops/metrics.ts), the ops HTTP
 * server's routes and readiness (ops/http.ts, on a loopback port), the
 * dashboard page's Content-Security-Policy (ops/dashboard.ts), and what
 * relay/drucof.ts reports through its ports (decisions per recipient,
 * conversions per part once per run, the decisions noted for the dashboard).
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { codeClass, noMetrics, PromMetrics, type Metrics, type QueueProbe } from '../../src/ops/metrics.ts';
import { readinessCheck, startOpsServer, type OpsServer } from '../../src/ops/http.ts';
import { DASHBOARD_CSP, DASHBOARD_HTML, type DashboardSource } from '../../src/ops/dashboard.ts';
import { chooseVariants, MessageVariants, type DecisionNote, type DrucofPorts } from '../../src/relay/drucof.ts';
import type { ConversionPlan, ConversionRecord } from '../../src/model/plan.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import { reply } from '../../src/model/reply.ts';
import { silentLogger } from '../../src/ops/log.ts';

/** One sample's value from the exposition text, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const bare = () => new PromMetrics({ defaultMetrics: false });

describe('noMetrics', () => {
  it('accepts every call and does nothing', () => {
    const m: Metrics = noMetrics;
    expect(() => {
      m.sessionOpened();
      m.sessionClosed();
      m.messageReceived(250);
      m.recipientFinal('relayed', 10);
      m.recipientDeferred();
      m.decision('neither');
      m.conversion('html-to-text', 5);
      m.conversionFailed();
      m.redisError('worker');
      m.jobCrashed();
    }).not.toThrow();
  });
});

describe('PromMetrics', () => {
  it('classes reply codes', () => {
    expect([250, 354, 421, 451, 550, 554].map(codeClass)).toEqual(['2xx', '2xx', '4xx', '4xx', '5xx', '5xx']);
  });

  it('counts what the stages report, under drucof_ names', async () => {
    const m = bare();
    m.sessionOpened();
    m.sessionOpened();
    m.sessionClosed();
    m.messageReceived(250);
    m.messageReceived(451);
    m.messageReceived(552);
    m.messageReceived(550);
    m.recipientFinal('relayed', 1500);
    m.recipientFinal('failed');
    m.recipientDeferred();
    m.recipientDeferred();
    m.decision('conneg-ok/usable');
    m.redisError('listener');
    m.jobCrashed();
    m.conversionFailed();
    const text = await m.metrics();
    expect(sample(text, 'drucof_smtp_sessions_total')).toBe(2);
    expect(sample(text, 'drucof_smtp_sessions_open')).toBe(1);
    expect(sample(text, 'drucof_messages_received_total{class="2xx"}')).toBe(1);
    expect(sample(text, 'drucof_messages_received_total{class="4xx"}')).toBe(1);
    expect(sample(text, 'drucof_messages_received_total{class="5xx"}')).toBe(2);
    expect(sample(text, 'drucof_recipient_outcomes_total{status="relayed"}')).toBe(1);
    expect(sample(text, 'drucof_recipient_outcomes_total{status="failed"}')).toBe(1);
    expect(sample(text, 'drucof_recipient_outcomes_total{status="deferred"}')).toBe(2);
    // Latency only where it was given: 1.5 s lands in the le=2.5 bucket, not in le=1.
    expect(sample(text, 'drucof_delivery_latency_seconds_count{status="relayed"}')).toBe(1);
    expect(sample(text, 'drucof_delivery_latency_seconds_sum{status="relayed"}')).toBe(1.5);
    expect(sample(text, 'drucof_delivery_latency_seconds_bucket{le="1",status="relayed"}')).toBe(0);
    expect(sample(text, 'drucof_delivery_latency_seconds_bucket{le="2.5",status="relayed"}')).toBe(1);
    expect(sample(text, 'drucof_delivery_latency_seconds_count{status="failed"}')).toBeUndefined();
    expect(sample(text, 'drucof_decisions_total{branch="conneg-ok/usable"}')).toBe(1);
    expect(sample(text, 'drucof_decisions_total{branch="neither"}')).toBe(0);
    expect(sample(text, 'drucof_redis_errors_total{connection="listener"}')).toBe(1);
    expect(sample(text, 'drucof_redis_errors_total{connection="worker"}')).toBe(0);
    expect(sample(text, 'drucof_delivery_job_crashes_total')).toBe(1);
    expect(sample(text, 'drucof_conversion_failures_total')).toBe(1);
    // No probe: no queue gauges.
    expect(text).not.toContain('drucof_queue_messages');
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/^drucof_/);
  });

  it('includes the default process metrics, prefixed', async () => {
    const text = await new PromMetrics().metrics();
    expect(sample(text, 'drucof_process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(text).toMatch(/^drucof_nodejs_heap_size_used_bytes /m);
  });

  it('keeps conversion counts and a loss histogram per converter, and their means for the dashboard', async () => {
    const m = bare();
    m.conversion('html-to-text', 10);
    m.conversion('html-to-text', 20);
    m.conversion('sharp/png-to-jpeg>sharp/resize-jpeg', 32);
    m.conversion('omit', 100);
    const text = await m.metrics();
    expect(sample(text, 'drucof_conversions_total{converter="html-to-text"}')).toBe(2);
    expect(sample(text, 'drucof_conversion_loss_count{converter="html-to-text"}')).toBe(2);
    expect(sample(text, 'drucof_conversion_loss_bucket{le="10",converter="html-to-text"}')).toBe(1);
    expect(sample(text, 'drucof_conversion_loss_bucket{le="20",converter="html-to-text"}')).toBe(2);
    expect(await m.conversionStats()).toEqual([
      { converter: 'html-to-text', count: 2, meanLoss: 15 },
      { converter: 'omit', count: 1, meanLoss: 100 },
      { converter: 'sharp/png-to-jpeg>sharp/resize-jpeg', count: 1, meanLoss: 32 },
    ]);
  });

  it('reads the queue gauges from the probe at scrape time, once per scrape', async () => {
    let reads = 0;
    const probe: QueueProbe = {
      depth: async () => (reads++, { waiting: 3, active: 1, delayed: 7, held: 2 }),
      oldestWaitingSince: async () => Date.now() - 90_000,
    };
    const m = new PromMetrics({ defaultMetrics: false, queue: probe });
    const text = await m.metrics();
    expect(reads).toBe(1);
    expect(sample(text, 'drucof_queue_messages{state="waiting"}')).toBe(3);
    expect(sample(text, 'drucof_queue_messages{state="active"}')).toBe(1);
    expect(sample(text, 'drucof_queue_messages{state="delayed"}')).toBe(7);
    expect(sample(text, 'drucof_queue_messages{state="held"}')).toBe(2);
    const age = sample(text, 'drucof_queue_oldest_waiting_seconds')!;
    expect(age).toBeGreaterThanOrEqual(90);
    expect(age).toBeLessThan(100);
  });

  it('answers a scrape without queue gauges when Redis hangs or fails, and counts the failure', async () => {
    const hanging: QueueProbe = { depth: () => new Promise(() => {}), oldestWaitingSince: () => new Promise(() => {}) };
    const m = new PromMetrics({ defaultMetrics: false, queue: hanging, queueTimeoutMs: 50 });
    const started = Date.now();
    const text = await m.metrics();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(text).not.toMatch(/^drucof_queue_messages\{/m);
    expect(text).not.toMatch(/^drucof_queue_oldest_waiting_seconds /m);
    expect(sample(await m.metrics(), 'drucof_redis_errors_total{connection="ops"}')).toBeGreaterThanOrEqual(1);

    const failing: QueueProbe = { depth: () => Promise.reject(new Error('ECONNREFUSED')), oldestWaitingSince: async () => undefined };
    const f = new PromMetrics({ defaultMetrics: false, queue: failing });
    expect(await f.metrics()).not.toMatch(/^drucof_queue_messages\{/m);
  });
});

describe('readinessCheck', () => {
  it('is ready when Redis answers and the listener listens', async () => {
    expect(await readinessCheck({ ping: async () => 'PONG', listening: () => true })()).toBeUndefined();
    // A process that does not accept SMTP (`work`) has only Redis to answer for.
    expect(await readinessCheck({ ping: async () => 'PONG' })()).toBeUndefined();
  });

  it('says why not, in one line', async () => {
    expect(await readinessCheck({ ping: () => new Promise(() => {}), timeoutMs: 30 })()).toBe('redis: no answer to PING within 30 ms');
    expect(await readinessCheck({ ping: () => Promise.reject(new Error('connect ECONNREFUSED\n127.0.0.1:1')) })()).toBe('redis: connect ECONNREFUSED 127.0.0.1:1');
    expect(await readinessCheck({ ping: () => Promise.reject(new Error("Stream isn't writeable and enableOfflineQueue options is false")) })()).toBe('redis: not connected');
    expect(await readinessCheck({ ping: async () => 'PONG', listening: () => false })()).toBe('smtp: not listening');
    expect(await readinessCheck({ ping: () => Promise.reject(new Error('down')), listening: () => false })()).toBe('redis: down; smtp: not listening');
    expect(
      await readinessCheck({
        ping: () => {
          throw new Error('sync');
        },
      })(),
    ).toBe('redis: sync');
  });
});

describe('the ops HTTP server', () => {
  let server: OpsServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  const metrics = { metrics: async () => 'drucof_x 1\n', contentType: 'text/plain; version=0.0.4; charset=utf-8' };
  const at = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${server!.address.port}${path}`, init);

  it('serves /metrics, /healthz, /readyz; no dashboard by default; GET and HEAD only', async () => {
    let reason: string | undefined;
    server = await startOpsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics, readiness: async () => reason, log: silentLogger });
    const m = await at('/metrics');
    expect([m.status, m.headers.get('content-type'), await m.text()]).toEqual([200, metrics.contentType, 'drucof_x 1\n']);
    const h = await at('/healthz');
    expect([h.status, await h.text()]).toEqual([200, 'ok\n']);
    expect(await (await at('/readyz')).text()).toBe('ready\n');
    reason = 'redis: no answer to PING within 1000 ms';
    const r = await at('/readyz');
    expect([r.status, await r.text()]).toEqual([503, 'redis: no answer to PING within 1000 ms\n']);
    expect((await at('/')).status).toBe(404);
    expect((await at('/api/queue')).status).toBe(404);
    const post = await at('/metrics', { method: 'POST', body: 'x' });
    expect([post.status, post.headers.get('allow')]).toEqual([405, 'GET, HEAD']);
    const head = await at('/healthz', { method: 'HEAD' });
    expect([head.status, await head.text()]).toEqual([200, '']);
    expect(h.headers.get('cache-control')).toBe('no-store');
  });

  it('answers 500 when the metrics cannot be rendered', async () => {
    server = await startOpsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics: { metrics: () => Promise.reject(new Error('boom')), contentType: 'text/plain' }, readiness: async () => undefined, log: silentLogger });
    const r = await at('/metrics');
    expect([r.status, await r.text()]).toEqual([500, 'metrics: boom\n']);
  });

  it('serves the dashboard page with a strict CSP and its JSON; a failing or hanging source is a 503 with the reason', async () => {
    let hang = false;
    const source: DashboardSource = {
      queue: async () => (hang ? new Promise(() => {}) : { counts: { waiting: 1, active: 0, delayed: 0, held: 0 }, messages: [] }),
      decisions: async () => ({ decisions: [] }),
      conversions: () => Promise.reject(new Error('redis: gone')),
    };
    server = await startOpsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics, readiness: async () => undefined, dashboard: source, log: silentLogger, apiTimeoutMs: 100 });
    const page = await at('/');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe(DASHBOARD_CSP);
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(await page.text()).toBe(DASHBOARD_HTML);
    const q = await at('/api/queue');
    expect([q.status, q.headers.get('content-type'), await q.json()]).toEqual([200, 'application/json', { counts: { waiting: 1, active: 0, delayed: 0, held: 0 }, messages: [] }]);
    expect(await (await at('/api/decisions')).json()).toEqual({ decisions: [] });
    const c = await at('/api/conversions');
    expect([c.status, await c.json()]).toEqual([503, { error: 'redis: gone' }]);
    hang = true;
    const h = await at('/api/queue');
    expect([h.status, await h.json()]).toEqual([503, { error: 'no answer from Redis within 100 ms' }]);
  });

  it('refuses to start on a port in use', async () => {
    server = await startOpsServer({ listen: { host: '127.0.0.1', port: 0 }, metrics, readiness: async () => undefined, log: silentLogger });
    await expect(startOpsServer({ listen: { host: '127.0.0.1', port: server.address.port }, metrics, readiness: async () => undefined, log: silentLogger })).rejects.toThrow(/EADDRINUSE/);
  });
});

describe('the dashboard page', () => {
  const hash = (s: string) => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;

  it('allows exactly its own inline script and style, and nothing else', () => {
    const script = /<script>([\s\S]*?)<\/script>/.exec(DASHBOARD_HTML)![1]!;
    const style = /<style>([\s\S]*?)<\/style>/.exec(DASHBOARD_HTML)![1]!;
    expect(DASHBOARD_CSP).toContain(`script-src ${hash(script)}`);
    expect(DASHBOARD_CSP).toContain(`style-src ${hash(style)}`);
    expect(DASHBOARD_CSP).toMatch(/default-src 'none'/);
    expect(DASHBOARD_CSP).toMatch(/connect-src 'self'/);
    expect(DASHBOARD_CSP).not.toContain('unsafe');
  });

  it('never puts data into the page as markup', () => {
    const script = /<script>([\s\S]*?)<\/script>/.exec(DASHBOARD_HTML)![1]!;
    expect(script).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
    expect(script).toContain('createTextNode');
  });
});

describe('relay/drucof.ts reporting through its ports', () => {
  const body = Buffer.from('Subject: x\r\n\r\nhello\r\n');
  const hop = { key: 'route:x.test', hosts: [{ host: '127.0.0.1', port: 25 }] };
  const TEXT = '(type="text/plain")';
  const plan: ConversionPlan = {
    target: TEXT,
    loss: 12,
    possible: true,
    parts: [
      {
        path: '1',
        features: { type: 'text/html' },
        marking: { conversion: 'permitted', critical: true, source: 'default' },
        action: { kind: 'convert', chain: ['html-to-text'], steps: [{ converter: 'html-to-text', from: 'text/html', to: 'text/plain', aim: { type: 'text/plain' }, loss: 12 }], loss: 12, features: { type: 'text/plain' } },
      },
    ],
  };
  const record: ConversionRecord = { host: 'relay.test', date: 'Mon, 23 Nov 2026 10:00:00 +0000', loss: 12, parts: [{ path: '1', before: { type: 'text/html' }, after: { type: 'text/plain' }, chain: ['html-to-text'], loss: 12 }] };

  function recorder() {
    const calls = { decisions: [] as string[], conversions: [] as [string, number][], failed: 0 };
    const metrics = {
      decision: (b: string) => calls.decisions.push(b),
      conversion: (c: string, l: number) => calls.conversions.push([c, l]),
      conversionFailed: () => calls.failed++,
    };
    return { calls, metrics };
  }

  it('counts one decision per DRUCOF recipient and each converted part once per conversion run, and notes the decisions', async () => {
    const { calls, metrics } = recorder();
    const notes: DecisionNote[][] = [];
    const ports: DrucofPorts = {
      capabilities: async (_h, _e, rs) => new Map(rs.map((r) => [r, r.startsWith('text') ? { kind: 'known', expression: TEXT, source: 'config' } : { kind: 'unknown' }] as const)),
      plan: async () => plan,
      convert: async (_m, p) => ({ ok: true, plan: p, message: Buffer.from('converted'), record }),
      metrics,
      noteDecisions: async (n) => void notes.push([...n]),
    };
    const states = [newRecipient('text1@x.test', { drucof: true }), newRecipient('text2@x.test', { drucof: true }), newRecipient('other@x.test', { drucof: true }), newRecipient('plain@x.test')];
    const message = new MessageVariants('Q1', body, ports, silentLogger);
    await chooseVariants({ hop, hopEhlo: new Set(['DRUCOF']), indices: [0, 1, 2, 3] }, states, message, ports, silentLogger);
    expect(calls.decisions.sort()).toEqual(['conneg-ok/usable', 'conneg-ok/usable', 'drucof-only']);
    expect(calls.conversions).toEqual([['html-to-text', 12]]);
    expect(notes).toHaveLength(1);
    const byRecipient = new Map(notes[0]!.map((n) => [n.recipient, n]));
    expect([...byRecipient.keys()].sort()).toEqual(['other@x.test', 'text1@x.test', 'text2@x.test']);
    expect(byRecipient.get('text1@x.test')).toMatchObject({ queueId: 'Q1', branch: 'conneg-ok/usable', action: 'convert-and-relay', hop: 'route:x.test', hopExtensions: ['DRUCOF'], capabilities: { kind: 'known', source: 'config', expression: TEXT }, variant: '1 html-to-text', loss: 12 });
    expect(byRecipient.get('other@x.test')).toMatchObject({ branch: 'drucof-only', action: 'relay-with-drucof', variant: 'original, DRUCOF passed on' });
    // Another transaction of the same attempt reuses the converted variant: no second count.
    await chooseVariants({ hop: { ...hop, key: 'route:y.test' }, hopEhlo: new Set(), indices: [0] }, states, message, ports, silentLogger);
    expect(calls.conversions).toHaveLength(1);
  });

  it('counts a failed conversion, notes the failure reply, and survives a note port that fails', async () => {
    const { calls, metrics } = recorder();
    const ports: DrucofPorts = {
      capabilities: async (_h, _e, rs) => new Map(rs.map((r) => [r, { kind: 'known', expression: TEXT, source: 'config' }] as const)),
      plan: async () => plan,
      convert: async (_m, p) => ({ ok: false, plan: p, reply: reply(554, 6, 5, 'converter crashed') }),
      metrics,
      noteDecisions: () => Promise.reject(new Error('redis down')),
    };
    const states = [newRecipient('text@x.test', { drucof: true })];
    const choice = await chooseVariants({ hop, hopEhlo: new Set(), indices: [0] }, states, new MessageVariants('Q2', body, ports, silentLogger), ports, silentLogger);
    expect(calls.failed).toBe(1);
    expect(calls.conversions).toEqual([]);
    expect(calls.decisions).toEqual(['conneg-ok/no-way']);
    expect(choice.unsent.get(0)?.code).toBe(554);
  });
});
