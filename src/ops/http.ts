/**
 * The operations HTTP endpoint (node:http), served on `http.listen` when it is
 * set (nothing listens otherwise):
 *
 * - `GET /metrics` — Prometheus exposition of this process's registry (ops/metrics.ts);
 * - `GET /healthz` — 200 while the process runs;
 * - `GET /readyz` — 200 when Redis answers PING within 1 s and, in a process that
 *   accepts SMTP, the SMTP listener is listening; else 503 with a one-line reason
 *   (`redis: no answer to PING within 1000 ms`, `smtp: not listening`);
 * - with `http.dashboard: true`: the dashboard at `/` and its JSON at
 *   `/api/queue`, `/api/decisions`, `/api/conversions` (ops/dashboard.ts).
 *
 * Each process serves its own: in a split set-up (`listen` and `work` apart) give
 * each its own `http.listen`. There is no authentication: bind it to loopback or
 * a management network (the dashboard shows addresses and replies).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { HostPort } from '../config/schema.ts';
import type { Logger } from './log.ts';
import { DASHBOARD_CSP, DASHBOARD_HTML, type DashboardSource } from './dashboard.ts';

export interface OpsServerOptions {
  readonly listen: HostPort;
  /** The process's metrics (PromMetrics). */
  readonly metrics: { metrics(): Promise<string>; readonly contentType: string };
  /** Why the process is not ready (one line), or undefined when it is. */
  readonly readiness: () => Promise<string | undefined>;
  /** Set: serve the dashboard. */
  readonly dashboard?: DashboardSource;
  readonly log: Logger;
  /** Longest a dashboard endpoint may take (default 5 s). */
  readonly apiTimeoutMs?: number;
}

export interface OpsServer {
  readonly address: { readonly host: string; readonly port: number };
  close(): Promise<void>;
}

/** Readiness over a Redis PING (bounded) and, when given, whether the SMTP listener listens. */
export function readinessCheck(checks: { readonly ping: () => Promise<unknown>; readonly listening?: () => boolean; readonly timeoutMs?: number }): () => Promise<string | undefined> {
  const timeoutMs = checks.timeoutMs ?? 1000;
  return async () => {
    const reasons: string[] = [];
    if (checks.listening && !checks.listening()) reasons.push('smtp: not listening');
    const redis = await bounded(Promise.resolve().then(checks.ping), timeoutMs).then(
      (r) => (r === TIMEOUT ? `redis: no answer to PING within ${timeoutMs} ms` : undefined),
      (err: unknown) => `redis: ${describeRedisError(err)}`,
    );
    if (redis) reasons.unshift(redis);
    return reasons.length === 0 ? undefined : oneLine(reasons.join('; '));
  };
}

const TIMEOUT = Symbol('timeout');

function bounded<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<typeof TIMEOUT>((resolve) => (t = setTimeout(() => resolve(TIMEOUT), ms)))]).finally(() => clearTimeout(t));
}

function describeRedisError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // ioredis with enableOfflineQueue off, while (re)connecting.
  if (/enableOfflineQueue|Connection is closed|Stream isn't writeable/i.test(message)) return 'not connected';
  return message;
}

const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').slice(0, 500);

const COMMON_HEADERS = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...COMMON_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(req.method === 'HEAD' ? undefined : body);
}

const text = (req: IncomingMessage, res: ServerResponse, status: number, body: string) => send(req, res, status, 'text/plain; charset=utf-8', body.endsWith('\n') ? body : `${body}\n`);

export function startOpsServer(opts: OpsServerOptions): Promise<OpsServer> {
  const { log } = opts;
  const apiTimeoutMs = opts.apiTimeoutMs ?? 5000;
  const dashboard = opts.dashboard;
  const api: Record<string, (() => Promise<unknown>) | undefined> = dashboard
    ? { '/api/queue': () => dashboard.queue(), '/api/decisions': () => dashboard.decisions(), '/api/conversions': () => dashboard.conversions() }
    : {};

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(req, res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
    }
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path === '/metrics') {
      try {
        return send(req, res, 200, opts.metrics.contentType, await opts.metrics.metrics());
      } catch (err) {
        return text(req, res, 500, `metrics: ${oneLine((err as Error).message)}`);
      }
    }
    if (path === '/healthz') return text(req, res, 200, 'ok');
    if (path === '/readyz') {
      const reason = await opts.readiness().catch((err: unknown) => `readiness check failed: ${(err as Error).message}`);
      return reason === undefined ? text(req, res, 200, 'ready') : text(req, res, 503, reason);
    }
    if (dashboard && (path === '/' || path === '/index.html')) {
      return send(req, res, 200, 'text/html; charset=utf-8', DASHBOARD_HTML, {
        'content-security-policy': DASHBOARD_CSP,
        'referrer-policy': 'no-referrer',
        'x-frame-options': 'DENY',
      });
    }
    const endpoint = api[path];
    if (endpoint) {
      try {
        const data = await bounded(endpoint(), apiTimeoutMs);
        if (data === TIMEOUT) return send(req, res, 503, 'application/json', JSON.stringify({ error: `no answer from Redis within ${apiTimeoutMs} ms` }));
        return send(req, res, 200, 'application/json', JSON.stringify(data));
      } catch (err) {
        return send(req, res, 503, 'application/json', JSON.stringify({ error: oneLine((err as Error).message) }));
      }
    }
    return text(req, res, 404, 'not found');
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.warn({ err: (err as Error)?.message, path: req.url }, 'ops http request failed');
      if (!res.headersSent) text(req, res, 500, 'internal error');
      else res.destroy();
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 5_000;

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen.port, opts.listen.host, () => {
      server.off('error', reject);
      server.on('error', (err) => log.warn({ err: err.message }, 'ops http server error'));
      const addr = server.address();
      const address = addr && typeof addr === 'object' ? { host: addr.address, port: addr.port } : { host: opts.listen.host, port: opts.listen.port };
      resolve({
        address,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
