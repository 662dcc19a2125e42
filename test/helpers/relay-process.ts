/**
 * Runs `drucof-relay <command>` as a real child process, as a user would, with a
 * config file written to a temp dir and the public environment variables.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { freePort } from './ports.ts';

const BIN = new URL('../../bin/drucof-relay.js', import.meta.url).pathname;

export interface RelayProcess {
  readonly port: number;
  readonly proc: ChildProcess;
  /** Everything the process wrote (JSON log lines and errors). */
  readonly output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startRelay(opts: {
  config?: Record<string, unknown>;
  env?: Record<string, string>;
  command?: 'start' | 'listen' | 'work';
  port?: number;
}): Promise<RelayProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'drucof-relay-'));
  const file = join(dir, 'relay.yaml');
  writeFileSync(file, YAML.stringify({ log: { level: 'info' }, ...opts.config }));
  const port = opts.port ?? (await freePort());
  const command = opts.command ?? 'start';
  const proc = spawn(process.execPath, [BIN, command, '--config', file], {
    env: { ...process.env, RELAY_LISTEN: `127.0.0.1:${port}`, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const ready = command === 'work' ? /"msg":"drucof-relay (listening|working)"|worker/ : /"msg":"drucof-relay listening"/;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`relay did not start within 20 s:\n${out}`)), 20_000);
    const check = () => {
      if (command === 'work' || ready.test(out)) {
        clearTimeout(t);
        resolve();
      }
    };
    proc.stdout!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`relay exited with ${code}:\n${out}`));
    });
    check();
  });
  return {
    port,
    proc,
    output: () => out,
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve(proc.exitCode);
        proc.once('exit', (code) => resolve(code));
        proc.kill(signal);
      }),
  };
}
