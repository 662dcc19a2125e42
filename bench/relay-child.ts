/**
 * The relay as the benchmark and the fault tests run it: `node
 * bin/drucof-relay.js start|listen|work --config FILE` as a child process, with
 * the public environment variables, exactly as a user starts it. `start` and
 * `listen` are ready once their port answers `220`; `work` (no SMTP port) once
 * its ops endpoint (`http.listen`, on a loopback port of its own) answers
 * `/healthz` — all of it works at any log level. Also: CPU time and peak RSS of a
 * process from /proc, and a registry that kills every child we started on exit
 * or Ctrl-C.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { freePort } from '../test/helpers/ports.ts';

const BIN = new URL('../bin/drucof-relay.js', import.meta.url).pathname;

export type RelayCommand = 'start' | 'listen' | 'work';

export interface RelayChildOptions {
  /** Which half (or both) of the relay to run; default `start`. */
  readonly command?: RelayCommand;
  readonly smarthost: string;
  readonly redisUrl: string;
  readonly prefix: string;
  /** Listen port; a free one when unset (a restarted relay passes the old one). */
  readonly port?: number;
  /** `work` only: the ops endpoint's port used to tell it is up; a free one when unset. */
  readonly httpPort?: number;
  /** Merged over the bench defaults (warn-level logging). */
  readonly config?: Record<string, unknown>;
  /** Extra environment. */
  readonly env?: Record<string, string>;
  /** Extra node flags before the script (e.g. --cpu-prof, which NODE_OPTIONS refuses). */
  readonly nodeArgs?: readonly string[];
  readonly readyTimeoutMs?: number;
}

export interface RelayChild {
  readonly command: RelayCommand;
  readonly pid: number;
  /** The SMTP port (`start`, `listen`) or the ops endpoint's port (`work`). */
  readonly port: number;
  readonly proc: ChildProcess;
  /** The last 64 KiB the process wrote (JSON log lines, errors). */
  output(): string;
  /** Undefined while running; else how it ended (`exit 1`, `SIGKILL`). */
  exited(): string | undefined;
  /** SIGKILL and wait for the exit: no shutdown code runs. */
  kill9(): Promise<void>;
  /** SIGTERM (graceful), SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

export async function startRelayChild(o: RelayChildOptions): Promise<RelayChild> {
  const command = o.command ?? 'start';
  const dir = mkdtempSync(join(tmpdir(), 'drucof-bench-relay-'));
  const file = join(dir, 'relay.yaml');
  const work = command === 'work';
  const port = (work ? o.httpPort : o.port) ?? (await freePort());
  const config = { log: { level: 'warn' }, ...o.config, ...(work && { http: { listen: `127.0.0.1:${port}` } }) };
  writeFileSync(file, YAML.stringify(config));
  const proc = spawn(process.execPath, [...(o.nodeArgs ?? []), BIN, command, '--config', file], {
    env: {
      ...process.env,
      ...(!work && { RELAY_LISTEN: `127.0.0.1:${port}` }),
      RELAY_SMARTHOST: o.smarthost,
      REDIS_URL: o.redisUrl,
      RELAY_QUEUE_PREFIX: o.prefix,
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const unregister = children.add(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > 128 * 1024) out = out.slice(-64 * 1024);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const gone = () => proc.exitCode !== null || proc.signalCode !== null;
  const cleanup = () => {
    unregister();
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (o.readyTimeoutMs ?? 30_000);
  const ready = work ? () => answersHealthz(port) : () => answers220(port);
  while (!(await ready())) {
    if (gone() || Date.now() > deadline) {
      if (!gone()) proc.kill('SIGKILL');
      await exited;
      cleanup();
      throw new Error(`relay ${command} did not become ready on port ${port} (exit ${proc.exitCode ?? proc.signalCode}):\n${out.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    command,
    pid: proc.pid!,
    port,
    proc,
    output: () => out,
    exited: () => (gone() ? (proc.signalCode ?? `exit ${proc.exitCode}`) : undefined),
    async kill9() {
      if (!gone()) proc.kill('SIGKILL');
      await exited;
      cleanup();
    },
    async stop(graceMs = 10_000) {
      if (!gone()) {
        const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        proc.kill('SIGTERM');
        await exited;
        clearTimeout(t);
      }
      cleanup();
      return proc.exitCode;
    },
  };
}

/** True when host answers with a 220 greeting within 1 s (then says QUIT). */
export function answers220(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((done) => {
    const sock = connect({ host, port });
    let buf = '';
    const finish = (ok: boolean) => {
      sock.destroy();
      done(ok);
    };
    sock.setTimeout(1000, () => finish(false));
    sock.on('error', () => finish(false));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n')) return;
      if (buf.startsWith('220')) sock.write('QUIT\r\n');
      finish(buf.startsWith('220'));
    });
  });
}

/** True when an ops endpoint answers `GET /healthz` with 200 within 1 s. */
export async function answersHealthz(port: number, host = '127.0.0.1'): Promise<boolean> {
  try {
    const r = await fetch(`http://${host}:${port}/healthz`, { signal: AbortSignal.timeout(1000) });
    await r.body?.cancel();
    return r.status === 200;
  } catch {
    return false;
  }
}

let clockTicks: number | undefined;

function cpuTicks(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** User + system CPU seconds a live process has used so far (all its threads). */
export function cpuSeconds(pid: number): number {
  clockTicks ??= cpuTicks();
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at state (field 3).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / clockTicks; // utime (14), stime (15)
}

/** CPU seconds the whole machine has been busy (all cores; /proc/stat, steal excluded). */
export function machineBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal …
  const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]!;
  clockTicks ??= cpuTicks();
  return busy / clockTicks;
}

/** Peak resident set size (VmHWM) of a live process, in MiB. */
export function peakRssMiB(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Every child this script started, killed on exit, Ctrl-C or SIGTERM. */
export const children = (() => {
  const live = new Set<() => void>();
  let installed = false;
  const killAll = () => {
    for (const k of live) {
      try {
        k();
      } catch {
        /* best effort on the way out */
      }
    }
    live.clear();
  };
  return {
    add(kill: () => void): () => void {
      live.add(kill);
      return () => live.delete(kill);
    },
    killAll,
    /** For scripts (not tests): clean up on exit and on SIGINT/SIGTERM. */
    installExitHandlers() {
      if (installed) return;
      installed = true;
      process.on('exit', killAll);
      for (const sig of ['SIGINT', 'SIGTERM'] as const) {
        process.on(sig, () => {
          process.stderr.write(`\n${sig}: stopping children\n`);
          killAll();
          process.exit(130);
        });
      }
    },
  };
})();
