/**
 * Which Redis the relay uses when REDIS_URL is unset: one already answering on
 * 127.0.0.1:6379, else a private `redis-server` child (data under var/, AOF on,
 * loopback only) that lives and dies with the relay. With neither, a one-line
 * error saying what to do.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import type { Logger } from './log.ts';

export interface RedisChoice {
  readonly url: string;
  /** Stops the private redis-server, if we started one. */
  stop(): Promise<void>;
}

export class NoRedisError extends Error {}

/**
 * True when something at host:port answers PING with PONG within `timeoutMs`
 * (with `anyReply`, any Redis reply counts, e.g. NOAUTH from a server with a password).
 */
export function pingRedis(host: string, port: number, timeoutMs = 500, anyReply = false): Promise<boolean> {
  return new Promise((done) => {
    const sock = connect({ host, port });
    let buf = '';
    const finish = (ok: boolean) => {
      sock.destroy();
      done(ok);
    };
    sock.setTimeout(timeoutMs, () => finish(false));
    sock.on('error', () => finish(false));
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) finish(buf.startsWith('+PONG') || (anyReply && /^[-+]/.test(buf)));
    });
  });
}

export interface EmbeddedOptions {
  readonly url?: string;
  readonly dir: string;
  readonly port: number;
  readonly appendfsync: 'always' | 'everysec' | 'no';
  readonly log: Logger;
  readonly redisServer?: string;
  /** Where a shared Redis is looked for first (6379; tests move it). */
  readonly sharedPort?: number;
}

export async function chooseRedis(o: EmbeddedOptions): Promise<RedisChoice> {
  const none = async () => {};
  if (o.url) return { url: o.url, stop: none };
  const shared = o.sharedPort ?? 6379;
  if (await pingRedis('127.0.0.1', shared)) return { url: `redis://127.0.0.1:${shared}`, stop: none };
  const url = `redis://127.0.0.1:${o.port}`;
  if (await pingRedis('127.0.0.1', o.port)) {
    o.log.warn({ url }, 'a Redis already answers on the private port; using it');
    return { url, stop: none };
  }
  const dir = resolve(o.dir);
  mkdirSync(dir, { recursive: true });
  const args = [
    '--port', String(o.port), '--bind', '127.0.0.1', '--protected-mode', 'yes', '--dir', dir,
    '--appendonly', 'yes', '--appendfsync', o.appendfsync, '--save', '', '--maxmemory-policy', 'noeviction',
    '--daemonize', 'no', '--logfile', 'redis.log',
  ];
  const child = spawn(o.redisServer ?? 'redis-server', args, { stdio: 'ignore' });
  const started = await new Promise<boolean>((done) => {
    child.once('error', () => done(false));
    child.once('spawn', () => done(true));
  });
  if (!started) {
    throw new NoRedisError(
      `no Redis answers on 127.0.0.1:${shared} and redis-server is not installed: install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL=redis://host:port`,
    );
  }
  for (let i = 0; i < 100 && !(await pingRedis('127.0.0.1', o.port)); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!(await pingRedis('127.0.0.1', o.port))) {
    child.kill('SIGKILL');
    throw new NoRedisError(`the private redis-server did not start on 127.0.0.1:${o.port} (see ${dir}/redis.log)`);
  }
  o.log.info({ url, dir }, 'started a private redis-server (AOF on)');
  return { url, stop: () => stopChild(child) };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((done) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(t);
      done();
    });
    child.kill('SIGTERM');
  });
}
