/**
 * A private redis-server for one benchmark or no-loss run: a free loopback port,
 * AOF on with the chosen `appendfsync`, no RDB snapshots, data in a fresh temp
 * dir (on the same disk as os.tmpdir(), so `always` really fsyncs), stopped and
 * removed afterwards. Never touches the shared Redis on 6379. `restart` stops and
 * starts it again on the same port and dir (the Redis-restart fault test).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../test/helpers/ports.ts';
import { children } from './relay-child.ts';

export type AppendFsync = 'always' | 'everysec' | 'no';

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** The current redis-server's pid (a new one after `restart`). */
  readonly pid: number;
  readonly dir: string;
  readonly appendfsync: AppendFsync;
  /** `INFO <section>` as key → value. */
  info(section?: string): Promise<Record<string, string>>;
  /** Calls per command since start (from INFO commandstats). */
  commandCalls(): Promise<Record<string, number>>;
  flushAll(): Promise<void>;
  /**
   * Stops redis-server with `signal` (SIGTERM: it flushes the AOF and exits; SIGKILL:
   * nothing runs), stays down `downMs`, then starts it again on the same port and
   * data dir (it loads its AOF) and resolves once it answers PING.
   */
  restart(o: { signal: 'SIGTERM' | 'SIGKILL'; downMs?: number }): Promise<{ downMs: number }>;
  /** SIGTERM (SIGKILL after 5 s), then removes the data dir. */
  stop(): Promise<void>;
  /** For exit handlers: SIGKILL now and remove the data dir, synchronously. */
  killSync(): void;
}

export async function startRedis(opts: { appendfsync?: AppendFsync; dir?: string } = {}): Promise<PrivateRedis> {
  const appendfsync = opts.appendfsync ?? 'always';
  const dir = mkdtempSync(join(opts.dir ?? tmpdir(), 'drucof-bench-redis-'));
  const port = await freePort();
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--protected-mode', 'yes', '--dir', dir,
    '--appendonly', 'yes', '--appendfsync', appendfsync, '--save', '', '--maxmemory-policy', 'noeviction',
    '--daemonize', 'no', '--logfile', 'redis.log',
  ];
  let child: ChildProcess | undefined;
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const unregister = children.add(() => {
    if (running()) child!.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  client.on('error', () => {});
  let removed = false;
  const removeDir = () => {
    unregister();
    if (removed) return;
    removed = true;
    rmSync(dir, { recursive: true, force: true });
  };

  /** Spawns redis-server on our port and dir; resolves once it answers PING (its AOF loaded). */
  const launch = async () => {
    const c: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
    await new Promise<void>((resolve, reject) => {
      c.once('error', (err) => reject(new Error(`cannot start redis-server (is it on PATH?): ${err.message}`)));
      c.once('spawn', () => resolve());
    });
    child = c;
    for (let i = 0; i < 200 && c.exitCode === null; i++) {
      try {
        if (client.status === 'wait') await client.connect();
        // PING is answered while the AOF still loads; INFO says when it is done.
        if ((await client.ping()) === 'PONG' && /^loading:0\r?$/m.test(await client.info('persistence'))) return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    client.disconnect();
    c.kill('SIGKILL');
    removeDir();
    throw new Error(`redis-server did not answer on ${url} (see ${join(dir, 'redis.log')})`);
  };
  await launch();

  const exitOf = (c: ChildProcess) =>
    c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r()));

  const info = async (section = 'all') => {
    const text = await client.info(section);
    const out: Record<string, string> = {};
    for (const line of text.split('\r\n')) {
      const at = line.indexOf(':');
      if (at > 0 && !line.startsWith('#')) out[line.slice(0, at)] = line.slice(at + 1);
    }
    return out;
  };

  return {
    port,
    url,
    get pid() {
      return child!.pid!;
    },
    dir,
    appendfsync,
    info,
    async commandCalls() {
      const stats = await info('commandstats');
      const out: Record<string, number> = {};
      for (const [k, v] of Object.entries(stats)) {
        const calls = /calls=(\d+)/.exec(v);
        if (k.startsWith('cmdstat_') && calls) out[k.slice(8)] = Number(calls[1]);
      }
      return out;
    },
    async flushAll() {
      await client.flushall();
    },
    async restart({ signal, downMs = 0 }) {
      const c = child!;
      const t0 = Date.now();
      const killer = signal === 'SIGTERM' ? setTimeout(() => c.kill('SIGKILL'), 10_000) : undefined;
      if (running()) c.kill(signal);
      await exitOf(c);
      clearTimeout(killer);
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      await launch();
      return { downMs: Date.now() - t0 };
    },
    stop: () =>
      new Promise<void>((resolve) => {
        client.disconnect();
        const c = child!;
        if (!running()) {
          removeDir();
          return resolve();
        }
        const t = setTimeout(() => c.kill('SIGKILL'), 5000);
        c.once('exit', () => {
          clearTimeout(t);
          removeDir();
          resolve();
        });
        c.kill('SIGTERM');
      }),
    killSync() {
      client.disconnect();
      if (running()) child!.kill('SIGKILL');
      removeDir();
    },
  };
}
