/**
 * A private redis-server for one benchmark or no-loss run: a free loopback port,
 * AOF on with the chosen `appendfsync`, no RDB snapshots, data in a fresh temp
 * dir (on the same disk as os.tmpdir(), so `always` really fsyncs), stopped and
 * removed afterwards. Never touches the shared Redis on 6379.
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
  readonly pid: number;
  readonly dir: string;
  readonly appendfsync: AppendFsync;
  /** `INFO <section>` as key → value. */
  info(section?: string): Promise<Record<string, string>>;
  /** Calls per command since start (from INFO commandstats). */
  commandCalls(): Promise<Record<string, number>>;
  flushAll(): Promise<void>;
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
  const child: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`cannot start redis-server (is it on PATH?): ${err.message}`)));
    child.once('spawn', () => resolve());
  });
  const unregister = children.add(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  client.on('error', () => {});
  let up = false;
  for (let i = 0; i < 100 && child.exitCode === null; i++) {
    try {
      if (client.status === 'wait') await client.connect();
      if ((await client.ping()) === 'PONG') {
        up = true;
        break;
      }
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  let removed = false;
  const removeDir = () => {
    unregister();
    if (removed) return;
    removed = true;
    rmSync(dir, { recursive: true, force: true });
  };
  if (!up) {
    client.disconnect();
    child.kill('SIGKILL');
    removeDir();
    throw new Error(`redis-server did not answer on ${url}`);
  }

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
    pid: child.pid!,
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
    stop: () =>
      new Promise<void>((resolve) => {
        client.disconnect();
        if (child.exitCode !== null || child.signalCode !== null) {
          removeDir();
          return resolve();
        }
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', () => {
          clearTimeout(t);
          removeDir();
          resolve();
        });
        child.kill('SIGTERM');
      }),
    killSync() {
      client.disconnect();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      removeDir();
    },
  };
}
