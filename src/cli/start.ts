/**
 * `start`, `listen`, `work`: assembles the stages into a running relay. By default
 * one process listens and delivers; `listen` and `work` run one half each, against
 * the same Redis. SIGTERM/SIGINT: stop accepting, finish what is in flight within
 * `shutdownTimeout`, then leave the rest queued (it is re-run on the next start).
 *
 * With `http.listen` set, the process also serves `/metrics`, `/healthz`,
 * `/readyz` (and the dashboard with `http.dashboard: true`) from ops/http.ts, over
 * its own Redis connection; metrics are per process (each of `listen` and `work`
 * serves its own, on its own port). Without it no metrics are kept at all.
 */
import { hostname as osHostname } from 'node:os';
import type { RelayConfig } from '../config/schema.ts';
import { createInbound, type Inbound } from '../inbound/index.ts';
import { createLogger, type Logger } from '../ops/log.ts';
import { noMetrics, PromMetrics, storeQueueProbe, type Metrics } from '../ops/metrics.ts';
import { readinessCheck, startOpsServer } from '../ops/http.ts';
import { DashboardRecords, dashboardSource } from '../ops/dashboard.ts';
import { chooseRedis } from '../ops/redis-embedded.ts';
import { OutboundPool } from '../outbound/index.ts';
import { connectForListener, connectForWorker } from '../queue/redis.ts';
import { MessageStore } from '../queue/store.ts';
import { createRelayWorker } from '../relay/worker.ts';
import { CapabilityCache } from '../capabilities/cache.ts';
import { capabilityRegistry } from '../capabilities/registry.ts';
import type { CapabilityLookup } from '../model/capability.ts';
import { resolveCapabilities } from '../capabilities/resolve.ts';
import { capabilityServers, type SrvTarget } from '../capabilities/srv.ts';
import { createDns, type Dns } from '../ops/dns.ts';
import { createConversionEngine, type ConversionEngine } from '../conversion/index.ts';
import type { DrucofPorts } from '../relay/drucof.ts';
import { drucofFailFast } from '../relay/fail-fast.ts';

export interface Roles {
  readonly listen: boolean;
  readonly work: boolean;
}

export interface RunningRelay {
  readonly listening?: { host: string; port: number };
  /** Where the ops HTTP endpoint listens (`http.listen`). */
  readonly http?: { host: string; port: number };
  stop(): Promise<void>;
}

export async function runRelay(config: RelayConfig, roles: Roles, log: Logger = createLogger(config.log.level)): Promise<RunningRelay> {
  const hostname = config.hostname ?? osHostname();
  const redisChoice = await chooseRedis({ url: config.redis.url, ...config.redis.embedded, log });
  const stops: (() => Promise<unknown>)[] = [];
  let listening: { host: string; port: number } | undefined;
  let inbound: Inbound | undefined;

  // The ops endpoint's own connection (fails fast, like the listener's): PING for
  // readiness, queue counts at scrape time, the dashboard's reads.
  const ops = config.http.listen ? opsReader(redisChoice.url, config.redis.prefix) : undefined;
  const metrics: Metrics = ops?.metrics ?? noMetrics;

  if (!config.smarthost && Object.keys(config.routes).length === 0 && !config.mx && roles.work) {
    log.warn('no next hop configured: set RELAY_SMARTHOST, `routes` or `mx: true`; mail will stay deferred');
  }

  // One engine for both halves: the worker converts, the listener plans for fail-fast.
  const engine = await createConversionEngine(config, log);

  if (roles.work) {
    const workerRedis = connectForWorker(redisChoice.url);
    const store = new MessageStore(workerRedis, config.redis.prefix);
    const cache = new CapabilityCache(workerRedis, { prefix: config.redis.prefix, onError: (err, op) => log.warn({ err, op }, 'capability cache unavailable') });
    const pool = new OutboundPool({ hostname, ...config.delivery, cache, log: log.child({ stage: 'outbound' }) });
    const dns = createDns(config.dns);
    const records = new DashboardRecords(workerRedis, config.redis.prefix);
    const drucof: DrucofPorts = {
      ...drucofPorts(config, { pool, cache, engine, dns }, hostname),
      metrics,
      noteDecisions: (notes) => records.noteDecisions(notes).catch((err: unknown) => log.debug({ err: (err as Error).message }, 'recent decisions not recorded')),
    };
    const worker = createRelayWorker({ config, store, connection: workerRedis, deliverer: pool, drucof, resolveMx: (d) => dns.resolveMx(d), hostname, log: log.child({ stage: 'relay' }), metrics });
    log.info({ redis: redisChoice.url, prefix: config.redis.prefix, concurrency: config.queue.concurrency }, 'drucof-relay working');
    const sweep = () =>
      store.sweepNeverQueued(NEVER_QUEUED_AGE_MS).then(
        (removed) => removed > 0 && log.info({ removed }, 'removed messages stored but never queued (a listener died mid-write; their clients never read a 250)'),
        (err: unknown) => log.warn({ err: (err as Error).message }, 'sweep of never-queued messages failed'),
      );
    void sweep();
    const sweeper = setInterval(() => void sweep(), NEVER_QUEUED_SWEEP_MS).unref();
    stops.push(async () => {
      clearInterval(sweeper);
      const graceful = worker.close();
      const timedOut = await Promise.race([graceful.then(() => false), sleep(config.shutdownTimeout).then(() => true)]);
      if (timedOut) {
        log.warn('shutdown timeout: leaving in-flight deliveries to be re-run after restart');
        await worker.close(true);
      }
      await pool.close();
      await store.close();
      workerRedis.disconnect();
    });
  }

  if (roles.listen) {
    const listenerRedis = connectForListener(redisChoice.url);
    listenerRedis.on('error', () => metrics.redisError('listener')); // reported per transaction as 451
    const store = new MessageStore(listenerRedis, config.redis.prefix);
    const cache = new CapabilityCache(listenerRedis, { prefix: config.redis.prefix });
    const capabilities = answerConneg(config.capabilities, cache);
    // DRUCOF recipients the worker would certainly fail are refused inline instead (issue 6 §5).
    const failFast = drucofFailFast({ config, cache, engine, log: log.child({ stage: 'inbound' }) });
    const records = new DashboardRecords(listenerRedis, config.redis.prefix);
    inbound = createInbound({
      config,
      store,
      log: log.child({ stage: 'inbound' }),
      hostname,
      extensions: config.extensions,
      capabilities,
      verdictSources: [failFast],
      metrics,
      noteStored: (id) => records.noteStored(id).catch((err: unknown) => log.debug({ err: (err as Error).message }, 'recent message not recorded')),
    });
    const listener = inbound;
    listening = await listener.listen();
    log.info({ ...listening, redis: redisChoice.url, prefix: config.redis.prefix }, 'drucof-relay listening');
    // Stop accepting first, so nothing new arrives while deliveries drain.
    stops.unshift(async () => {
      await listener.close(config.shutdownTimeout);
      await store.close();
      listenerRedis.disconnect();
    });
  }

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      for (const s of stops) await s().catch((err: unknown) => log.error({ err }, 'error during shutdown'));
      await redisChoice.stop();
      log.info('drucof-relay stopped');
    })());

  let http: { host: string; port: number } | undefined;
  if (ops && config.http.listen) {
    const listener = inbound;
    const server = await startOpsServer({
      listen: config.http.listen,
      metrics: ops.metrics,
      readiness: readinessCheck({ ping: () => ops.redis.ping(), ...(listener && { listening: () => listener.listening() }) }),
      ...(config.http.dashboard && {
        dashboard: dashboardSource({
          store: ops.store,
          records: new DashboardRecords(ops.redis, config.redis.prefix),
          probe: ops.probe,
          conversionStats: () => ops.metrics.conversionStats(),
        }),
      }),
      log: log.child({ stage: 'http' }),
    }).catch(async (err: unknown) => {
      stops.push(() => ops.close());
      await stop();
      throw err;
    });
    http = server.address;
    log.info({ ...http, dashboard: config.http.dashboard }, 'ops http listening');
    // Last: /readyz answers 503 while the listener drains.
    stops.push(async () => {
      await server.close();
      await ops.close();
    });
  }
  return { ...(listening && { listening }), ...(http && { http }), stop };
}

/** The ops endpoint's Redis connection, store view and metrics registry. */
function opsReader(url: string, prefix: string) {
  const redis = connectForListener(url);
  redis.on('error', () => {}); // readiness says so
  const store = new MessageStore(redis, prefix);
  const probe = storeQueueProbe(store);
  const metrics = new PromMetrics({ queue: probe });
  return {
    redis,
    store,
    probe,
    metrics,
    close: async () => {
      await store.close().catch(() => {});
      redis.disconnect();
    },
  };
}

/** Runs until SIGTERM/SIGINT, then shuts down gracefully and exits. */
export async function runUntilSignalled(config: RelayConfig, roles: Roles): Promise<void> {
  const log = createLogger(config.log.level);
  const relay = await runRelay(config, roles, log);
  const onSignal = (signal: string) => {
    log.info({ signal }, 'shutting down');
    // A shutdown that cannot finish (e.g. Redis unreachable) must still end: whatever
    // is left is in Redis or was never acknowledged.
    setTimeout(() => {
      log.error('shutdown did not finish in time; exiting');
      process.exit(1);
    }, config.shutdownTimeout + 10_000).unref();
    void relay.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

/**
 * The worker's DRUCOF ports: capabilities from the registry, the cache, the hop's
 * CONNEG answer and the domain's SRV-found capability servers (the pool's probes
 * cache what they learn); plans and conversions from the conversion engine.
 */
function drucofPorts(
  config: RelayConfig,
  { pool, cache, engine, dns }: { pool: OutboundPool; cache: CapabilityCache; engine: ConversionEngine; dns: Dns },
  hostname: string,
): DrucofPorts {
  const registry = capabilityRegistry(config.capabilities);
  // Capability servers are found with our resolver, so their addresses are too (the pool would ask the system's).
  const srvTargets = async (domain: string): Promise<SrvTarget[]> => {
    const found = await capabilityServers(domain, (n) => dns.resolveSrv(n));
    const resolved = await Promise.all(found.map(async (t) => (await dns.resolveAddresses(t.host).catch(() => [])).map((host) => ({ host, port: t.port }))));
    return resolved.flat();
  };
  return {
    capabilities: (hop, hopEhlo, recipients) =>
      resolveCapabilities(recipients, {
        registry,
        cached: (rs) => cache.getMany(rs),
        ...(hopEhlo.has('CONNEG') && { askHop: (rs: readonly string[]) => pool.probe(hop, rs, { fresh: true }) }),
        ...(config.dns.srv && { srvTargets }),
        probe: (domain, targets, rs) => pool.probe({ key: `srv:${domain}`, hosts: targets }, rs, { fresh: true, source: 'srv' }),
      }),
    plan: (message, target) => engine.plan(message, target, { drucof: true }),
    convert: (message, plan) => engine.convert(message, plan, { host: hostname }),
  };
}

/** What the relay answers to CONNEG: its own registry, else what a next hop told it (cached). */
function answerConneg(registry: Readonly<Record<string, string>>, cache: CapabilityCache): CapabilityLookup {
  const own = capabilityRegistry(registry);
  return async (recipient) => {
    const known = own(recipient);
    if (known.kind === 'known') return known;
    const cached = await cache.get(recipient);
    return cached?.kind === 'known' ? { ...cached, source: 'cache' } : { kind: 'unknown' };
  };
}

/** A stored message without a job is a never-queued leftover once it is this old (writes time out after 5 s). */
const NEVER_QUEUED_AGE_MS = 10 * 60_000;
const NEVER_QUEUED_SWEEP_MS = 60 * 60_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
