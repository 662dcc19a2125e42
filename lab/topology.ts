/**
 * The lab's topology, shared by `npm run lab` (lab/native.ts), `npm run lab:demo`
 * (lab/demo.ts) and the tests: three drucof-relay processes and what each is for,
 * their configurations (config/lab/*.yaml, the same files the docker lab uses,
 * with compose service names and container paths rewritten for loopback), and the
 * state file a running lab writes so that the demo can find it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { parseConfig } from '../src/config/load.ts';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'drucof-relay.js');
export const CONFIG_DIR = join(ROOT, 'config', 'lab');
export const DEFAULT_DIR = 'var/lab';
export const STATE_FILE = 'lab.json';

export type NodeName = 'relay' | 'final' | 'legacy';
export const NODE_NAMES: readonly NodeName[] = ['relay', 'final', 'legacy'];

/** What each node is, in one line (printed by the lab). */
export const NODE_ROLES: Readonly<Record<NodeName, string>> = {
  relay: 'smarthost (A): clients submit here; CONNEG, DRUCOF, INLINE-DSN, PRDR',
  final: 'final hop (B): drucof.lab into Maildirs; answers CONNEG from its registry; CONNEG, DRUCOF, INLINE-DSN, PRDR',
  legacy: 'legacy hop (C): legacy.lab into Maildirs; none of CONNEG, DRUCOF, INLINE-DSN, PRDR',
};

/** Compose service names in config/lab/*.yaml → the native node that plays them (mailpit is the docker lab's legacy hop). */
export const SERVICE_NODES: Readonly<Record<string, NodeName>> = { relay: 'relay', final: 'final', mailpit: 'legacy' };

/** Which domain each hop receives. */
export const DOMAINS = { drucof: 'drucof.lab', legacy: 'legacy.lab' } as const;

export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

export interface LabNode {
  readonly name: NodeName;
  readonly role: string;
  readonly smtp: Endpoint;
  readonly http: Endpoint;
  readonly redisUrl: string;
  readonly prefix: string;
  /** The configuration written for this process. */
  readonly config: string;
  readonly log: string;
  /** Where its `maildir:` route delivers (final and legacy). */
  readonly maildir?: string;
  pid?: number;
}

/** What a running lab writes to `<dir>/lab.json`. */
export interface LabState {
  readonly version: 1;
  /** The lab process (the parent of every child below). */
  readonly pid: number;
  readonly startedAt: string;
  readonly dir: string;
  readonly redis: { readonly mode: 'shared' | 'lab' | 'separate'; readonly urls: readonly string[] };
  readonly nodes: Readonly<Record<NodeName, LabNode>>;
  /** Every child process the lab started (relays, and any redis-server of its own). */
  readonly children: readonly number[];
}

/** The raw YAML of a node's checked-in configuration. */
export function readLabConfig(name: NodeName): Record<string, unknown> {
  const file = join(CONFIG_DIR, `${name}.yaml`);
  return (YAML.parse(readFileSync(file, 'utf8')) ?? {}) as Record<string, unknown>;
}

/**
 * A checked-in lab configuration rewritten for this machine: listen and http on
 * loopback ports, the next hops' compose service names replaced by their loopback
 * ports, every `maildir:` route pointed at the node's Maildir under the lab
 * directory, Redis and prefix as given, and a short shutdown (Ctrl-C should be
 * quick). Everything else (registries, policies, extensions) is the file's.
 */
export function nativeConfig(
  raw: Record<string, unknown>,
  opts: { node: NodeName; smtpPorts: Readonly<Record<NodeName, number>>; httpPort: number; redisUrl: string; prefix: string; maildir: string },
): Record<string, unknown> {
  const mapTarget = (v: string): string => {
    const t = v.trim();
    if (/^maildir:/i.test(t)) return `maildir:${opts.maildir}`;
    const m = /^(lmtp:)?([^:\s]+)(?::(\d+))?$/i.exec(t);
    const node = m ? SERVICE_NODES[m[2]!.toLowerCase()] : undefined;
    return node ? `${m![1] ?? ''}127.0.0.1:${opts.smtpPorts[node]}` : t;
  };
  const routes = Object.fromEntries(Object.entries((raw.routes ?? {}) as Record<string, string>).map(([d, v]) => [d, mapTarget(String(v))]));
  const http = { ...((raw.http ?? {}) as Record<string, unknown>), listen: `127.0.0.1:${opts.httpPort}` };
  const redis = { ...((raw.redis ?? {}) as Record<string, unknown>), url: opts.redisUrl, prefix: opts.prefix };
  return {
    ...raw,
    listen: `127.0.0.1:${opts.smtpPorts[opts.node]}`,
    routes,
    ...(typeof raw.smarthost === 'string' && { smarthost: mapTarget(raw.smarthost) }),
    http,
    redis,
    shutdownTimeout: '5s',
  };
}

/** Validates a configuration the way the relay will (one clear error naming the node and key). */
export function validate(node: NodeName, config: Record<string, unknown>): void {
  parseConfig(config, {}, `lab ${node} config`);
}

/** True when nothing listens on 127.0.0.1:port. */
export function isFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const srv = createServer();
    srv.once('error', () => done(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => done(true)));
  });
}

/** Any free port the system hands out. */
function anyPort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => done(port));
    });
  });
}

/**
 * `preferred` if free, else the first free one above it (0: any free port),
 * never one in `taken` (which it then joins).
 */
export async function pickPort(preferred: number, taken: Set<number>): Promise<number> {
  if (preferred === 0) {
    for (;;) {
      const p = await anyPort();
      if (!taken.has(p)) return take(p, taken);
    }
  }
  for (let p = preferred; p < Math.min(preferred + 200, 65536); p++) {
    if (!taken.has(p) && (await isFree(p))) return take(p, taken);
  }
  throw new Error(`no free port on 127.0.0.1 from ${preferred} to ${preferred + 199}`);
}

function take(p: number, taken: Set<number>): number {
  taken.add(p);
  return p;
}

/** Whether a process is alive (signal 0 checks without sending anything). */
export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The state of a lab whose process is still alive, from `<dir>/lab.json` (or that file itself); undefined otherwise. */
export function readState(fileOrDir: string): LabState | undefined {
  const file = fileOrDir.endsWith('.json') ? fileOrDir : join(fileOrDir, STATE_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as LabState;
    return state.version === 1 && alive(state.pid) ? state : undefined;
  } catch {
    return undefined;
  }
}

/** A path as a person would type it: relative to the working directory when inside it. */
export function shown(path: string): string {
  const abs = resolve(path);
  const rel = relative(process.cwd(), abs);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
}
