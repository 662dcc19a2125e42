/**
 * `npm run lab`: the lab as plain processes on loopback, no Docker. Three
 * drucof-relay processes from config/lab/*.yaml (the docker lab's files, with
 * addresses rewritten for 127.0.0.1):
 *
 *   relay  (A) the smarthost, SMTP 2525 (or the first free port above it)
 *   final  (B) final-hop mode: drucof.lab into Maildirs under <dir>/final/maildir,
 *              answering CONNEG from its registry
 *   legacy (C) every extension of ours off, legacy.lab into <dir>/legacy/maildir
 *
 * sharing one Redis under three prefixes (REDIS_URL or --redis, else the one on
 * 127.0.0.1:6379, else a redis-server of the lab's own), or with
 * --separate-redis one redis-server each. It prints the topology, the ports and
 * commands to try, writes <dir>/lab.json for `npm run lab:demo`, and on
 * Ctrl-C/SIGTERM stops every child (relays first, so they drain into a Redis that
 * is still there) and exits; a child that dies stops the lab with one line.
 *
 *   npm run lab [-- --port N] [--dir DIR] [--prefix P] [--redis URL] [--separate-redis]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { pingRedis } from '../src/ops/redis-embedded.ts';
import { greets } from './smtp.ts';
import {
  BIN,
  DEFAULT_DIR,
  ROOT,
  NODE_NAMES,
  NODE_ROLES,
  STATE_FILE,
  nativeConfig,
  pickPort,
  readLabConfig,
  readState,
  shown,
  validate,
  type LabNode,
  type LabState,
  type NodeName,
} from './topology.ts';

export class LabError extends Error {}

export interface LabOptions {
  /** The smarthost's SMTP port: 2525 by default (the first free one from there); 0: any free port, for every port of the lab. */
  readonly port?: number;
  readonly dir?: string;
  /** Redis key prefixes are `<prefix>-relay`, `<prefix>-final`, `<prefix>-legacy`. */
  readonly prefix?: string;
  readonly redisUrl?: string;
  readonly separateRedis?: boolean;
  /** Lines for the person running the lab. */
  readonly print?: (line: string) => void;
}

export interface RunningLab {
  readonly state: LabState;
  /** Resolves with the exit code the lab should end with once every child is gone. */
  readonly done: Promise<number>;
  stop(reason?: string): Promise<number>;
}

/** Variables that would override the generated configurations in the children. */
const OVERRIDING_ENV = ['RELAY_LISTEN', 'RELAY_SMARTHOST', 'REDIS_URL', 'RELAY_QUEUE_PREFIX'];

export async function startLab(opts: LabOptions = {}): Promise<RunningLab> {
  const print = opts.print ?? ((l: string) => console.log(l));
  const dir = resolve(opts.dir ?? DEFAULT_DIR);
  const running = readState(dir);
  if (running) throw new LabError(`a lab is already running from ${shown(dir)} (pid ${running.pid}, SMTP ${running.nodes.relay.smtp.host}:${running.nodes.relay.smtp.port}); stop it first or give --dir`);
  mkdirSync(dir, { recursive: true });
  const prefix = opts.prefix ?? 'lab';
  const children: { name: string; proc: ChildProcess; kind: 'relay' | 'redis' }[] = [];

  // Ports: the smarthost's first (2525 or the first free above it), then the others after it.
  const taken = new Set<number>();
  const base = opts.port ?? 2525;
  const smtpPorts = {} as Record<NodeName, number>;
  smtpPorts.relay = await pickPort(base, taken);
  smtpPorts.final = await pickPort(base === 0 ? 0 : smtpPorts.relay + 1, taken);
  smtpPorts.legacy = await pickPort(base === 0 ? 0 : smtpPorts.final + 1, taken);
  const httpPorts = {} as Record<NodeName, number>;
  for (const [i, n] of NODE_NAMES.entries()) httpPorts[n] = await pickPort(base === 0 ? 0 : (i === 0 ? 9025 : httpPorts[NODE_NAMES[i - 1]!] + 1), taken);

  // Stops the relays first (they drain into a Redis still there), then any Redis of the lab's own.
  const stopAll = async (code: number): Promise<number> => {
    await stopChildren(children.filter((c) => c.kind === 'relay'));
    await stopChildren(children.filter((c) => c.kind === 'redis'));
    rmSync(join(dir, STATE_FILE), { force: true });
    return code;
  };
  // Redis: shared (given, or 6379, or one of the lab's own), or one of the lab's own per node.
  let redisMode: LabState['redis']['mode'];
  const redisFor = {} as Record<NodeName, string>;
  try {
    const given = opts.redisUrl ?? process.env.REDIS_URL;
    if (opts.separateRedis) {
      redisMode = 'separate';
      for (const n of NODE_NAMES) {
        const r = await startRedis(join(dir, `redis-${n}`), await pickPort(base === 0 ? 0 : 6391, taken));
        children.push({ name: `redis-${n}`, proc: r.proc, kind: 'redis' });
        redisFor[n] = r.url;
      }
    } else if (given) {
      redisMode = 'shared';
      for (const n of NODE_NAMES) redisFor[n] = given;
    } else if (await pingRedis('127.0.0.1', 6379)) {
      redisMode = 'shared';
      for (const n of NODE_NAMES) redisFor[n] = 'redis://127.0.0.1:6379';
    } else {
      redisMode = 'lab';
      const r = await startRedis(join(dir, 'redis'), await pickPort(base === 0 ? 0 : 6391, taken));
      children.push({ name: 'redis', proc: r.proc, kind: 'redis' });
      for (const n of NODE_NAMES) redisFor[n] = r.url;
    }
  } catch (err) {
    await stopAll(1);
    throw err;
  }

  // Configurations: config/lab/<node>.yaml rewritten, validated, written under <dir>/<node>/.
  const nodes = {} as Record<NodeName, LabNode>;
  for (const n of NODE_NAMES) {
    const nodeDir = join(dir, n);
    const maildir = join(nodeDir, 'maildir');
    const config = nativeConfig(readLabConfig(n), { node: n, smtpPorts, httpPort: httpPorts[n], redisUrl: redisFor[n], prefix: `${prefix}-${n}`, maildir });
    try {
      validate(n, config);
    } catch (err) {
      await stopAll(1);
      throw new LabError((err as Error).message);
    }
    mkdirSync(nodeDir, { recursive: true });
    const file = join(nodeDir, 'config.yaml');
    writeFileSync(file, `# Written by npm run lab from config/lab/${n}.yaml; rewritten on every start.\n${YAML.stringify(config)}`);
    const hasMaildir = Object.values(config.routes as Record<string, string>).some((v) => v.startsWith('maildir:'));
    nodes[n] = {
      name: n,
      role: NODE_ROLES[n],
      smtp: { host: '127.0.0.1', port: smtpPorts[n] },
      http: { host: '127.0.0.1', port: httpPorts[n] },
      redisUrl: redisFor[n],
      prefix: `${prefix}-${n}`,
      config: file,
      log: join(nodeDir, 'relay.log'),
      ...(hasMaildir && { maildir }),
    };
  }

  // The relays, all at once; each is ready when its SMTP port greets.
  const env = { ...process.env };
  for (const k of OVERRIDING_ENV) delete env[k];
  for (const n of NODE_NAMES) {
    const node = nodes[n];
    const fd = openSync(node.log, 'a');
    const proc = spawn(process.execPath, [BIN, 'start', '--config', node.config], { env, stdio: ['ignore', fd, fd], cwd: ROOT });
    closeSync(fd);
    node.pid = proc.pid;
    children.push({ name: n, proc, kind: 'relay' });
  }
  try {
    await Promise.all(NODE_NAMES.map((n) => waitListening(nodes[n], children.find((c) => c.name === n)!.proc)));
  } catch (err) {
    await stopAll(1);
    throw err;
  }

  const state: LabState = {
    version: 1,
    pid: process.pid,
    startedAt: new Date().toISOString(),
    dir,
    redis: { mode: redisMode, urls: [...new Set(Object.values(redisFor))] },
    nodes,
    children: children.map((c) => c.proc.pid!).filter(Boolean),
  };
  writeFileSync(join(dir, STATE_FILE), JSON.stringify(state, null, 2) + '\n');

  // A child that dies on its own stops the lab.
  let stopping: Promise<number> | undefined;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  const stop = (reason?: string) => {
    if (!stopping) {
      if (reason) print(reason);
      stopping = stopAll(reason ? 1 : 0).then((code) => {
        resolveDone(code);
        return code;
      });
    }
    return stopping;
  };
  for (const c of children) {
    c.proc.once('exit', (code, signal) => {
      if (!stopping) void stop(`lab: ${c.name} exited (${signal ?? `code ${code}`}); stopping the lab${c.kind === 'relay' ? ` (its log: ${shown(nodes[c.name as NodeName].log)})` : ''}`);
    });
  }
  return { state, done, stop: (reason?: string) => stop(reason) };
}

/** Waits for a relay's 220 greeting; a child that exits first fails with the end of its log. */
async function waitListening(node: LabNode, proc: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new LabError(`${node.name} exited (${proc.signalCode ?? `code ${proc.exitCode}`}) before it listened; end of ${shown(node.log)}:\n${tail(node.log, 8)}`);
    }
    if (await greets(node.smtp.host, node.smtp.port, 1000)) return;
    await sleep(200);
  }
  throw new LabError(`${node.name} did not listen on ${node.smtp.host}:${node.smtp.port} within ${timeoutMs / 1000} s; end of ${shown(node.log)}:\n${tail(node.log, 8)}`);
}

function tail(file: string, n: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).map((l) => `  ${l}`).join('\n');
  } catch {
    return '  (no log)';
  }
}

/**
 * A redis-server of the lab's own: loopback, AOF on (fsync always, as the relay's
 * private one), in its own process group so that a Ctrl-C in the terminal reaches
 * the relays but not their Redis, which the lab stops last.
 */
async function startRedis(dir: string, port: number): Promise<{ url: string; proc: ChildProcess }> {
  mkdirSync(dir, { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'no', '--logfile', 'redis.log'];
  const proc = spawn('redis-server', args, { stdio: 'ignore', detached: true });
  const started = await new Promise<boolean>((done) => {
    proc.once('error', () => done(false));
    proc.once('spawn', () => done(true));
  });
  if (!started) {
    throw new LabError('no Redis: set REDIS_URL or --redis, run one on 127.0.0.1:6379, or install redis-server (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)');
  }
  for (let i = 0; i < 100; i++) {
    if (await pingRedis('127.0.0.1', port)) return { url: `redis://127.0.0.1:${port}`, proc };
    if (proc.exitCode !== null) break;
    await sleep(100);
  }
  proc.kill('SIGKILL');
  throw new LabError(`the lab's redis-server did not start on 127.0.0.1:${port} (see ${shown(join(dir, 'redis.log'))})`);
}

/** SIGTERM to each, SIGKILL to any still running after `graceMs`; resolves when all have exited. */
function stopChildren(list: readonly { proc: ChildProcess }[], graceMs = 15_000): Promise<void> {
  return Promise.all(
    list.map(
      ({ proc }) =>
        new Promise<void>((done) => {
          if (proc.exitCode !== null || proc.signalCode !== null) return done();
          const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
          proc.once('exit', () => {
            clearTimeout(t);
            done();
          });
          proc.kill('SIGTERM');
        }),
    ),
  ).then(() => undefined);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What the lab prints once it runs: the topology, the ports, and things to try. */
export function describeLab(state: LabState): string[] {
  const { relay, final, legacy } = state.nodes;
  const at = (e: { host: string; port: number }) => `${e.host}:${e.port}`;
  const photo = shown(join(ROOT, 'test', 'fixtures', 'images', 'photo.png'));
  const redis =
    state.redis.mode === 'separate'
      ? `one redis-server each (${state.redis.urls.join(', ')})`
      : `${state.redis.urls[0]}${state.redis.mode === 'lab' ? " (the lab's own)" : ''}, prefixes ${relay.prefix}, ${final.prefix}, ${legacy.prefix}`;
  const explainCmd = `node bin/drucof-relay.js explain QUEUEID --config ${shown(relay.config)}`;
  return [
    `drucof-relay lab: three relays on loopback (pid ${state.pid}); Redis ${redis}`,
    '',
    `  client ──SMTP──> relay   ${at(relay.smtp).padEnd(16)} ${relay.role}`,
    `                     ├─ drucof.lab ──> final   ${at(final.smtp).padEnd(16)} ${final.role}`,
    `                     │                   Maildir ${shown(final.maildir ?? '')}/drucof.lab/<local>/new/`,
    `                     └─ legacy.lab ──> legacy  ${at(legacy.smtp).padEnd(16)} ${legacy.role}`,
    `                                         Maildir ${shown(legacy.maildir ?? '')}/legacy.lab/<local>/new/`,
    '',
    `  http (metrics, /healthz, dashboard at /): relay http://${at(relay.http)}/  final http://${at(final.http)}/  legacy http://${at(legacy.http)}/`,
    `  logs: ${shown(relay.log)}, ${shown(final.log)}, ${shown(legacy.log)}`,
    `  configs (from config/lab/*.yaml): ${shown(relay.config)}, ${shown(final.config)}, ${shown(legacy.config)}`,
    '',
    'Try it:',
    `  npm run lab:demo -- --state ${shown(join(state.dir, STATE_FILE))}     # the demo messages, and what happened to each`,
    `  swaks --server ${at(relay.smtp)} --from demo@drucof.lab --to someone@legacy.lab --header 'Subject: hello'`,
    `  swaks --server ${at(relay.smtp)} --from demo@drucof.lab --to photo@drucof.lab --attach-type image/png --attach @${photo}`,
    '      (no DRUCOF: delivered as sent. swaks cannot add RCPT parameters; for DRUCOF and CONNEG, bash:)',
    `  # What can photo@drucof.lab use? Ask the final hop (CONNEG):`,
    `  exec 3<>/dev/tcp/${final.smtp.host}/${final.smtp.port}; head -1 <&3`,
    `  printf 'EHLO me\\r\\nMAIL FROM:<>\\r\\nRCPT TO:<photo@drucof.lab> CONNEG\\r\\nQUIT\\r\\n' >&3; timeout 3 cat <&3`,
    `  # The photo with DRUCOF: the relay asks, converts to JPEG <= 800 px, the final hop delivers it:`,
    `  exec 3<>/dev/tcp/${relay.smtp.host}/${relay.smtp.port}; head -1 <&3`,
    `  { printf 'EHLO me\\r\\nMAIL FROM:<demo@drucof.lab>\\r\\nRCPT TO:<photo@drucof.lab> DRUCOF\\r\\nDATA\\r\\n'`,
    `    printf 'Subject: photo\\r\\nMIME-Version: 1.0\\r\\nContent-Type: multipart/mixed; boundary=b\\r\\n\\r\\n'`,
    `    printf -- '--b\\r\\nContent-Type: text/plain\\r\\n\\r\\nThe photo.\\r\\n--b\\r\\nContent-Type: image/png\\r\\nContent-Transfer-Encoding: base64\\r\\n\\r\\n'`,
    `    base64 -w 76 ${photo} | sed 's/$/\\r/'`,
    `    printf -- '--b--\\r\\n.\\r\\nQUIT\\r\\n'; } >&3`,
    `  timeout 5 cat <&3                     # … 250 2.0.0 [QUEUEID …] queued`,
    `  ${explainCmd}`,
    `  ls ${shown(final.maildir ?? '')}/drucof.lab/photo/new/`,
    '',
    'Ctrl-C stops the lab.',
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      dir: { type: 'string' },
      prefix: { type: 'string' },
      redis: { type: 'string' },
      'separate-redis': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log('npm run lab [-- --port N (2525; 0 = any free)] [--dir DIR (var/lab)] [--prefix P (lab)] [--redis URL] [--separate-redis]');
    return;
  }
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port < 65536)) throw new LabError(`--port ${values.port}: not a port number`);
  if (values.prefix !== undefined && !/^[A-Za-z0-9_.:-]+$/.test(values.prefix)) throw new LabError(`--prefix ${values.prefix}: letters, digits and _ . : - only`);

  console.log('lab: starting Redis and three relays …');
  const lab = await startLab({
    ...(port !== undefined && { port }),
    ...(values.dir !== undefined && { dir: values.dir }),
    ...(values.prefix !== undefined && { prefix: values.prefix }),
    ...(values.redis !== undefined && { redisUrl: values.redis }),
    separateRedis: values['separate-redis'] ?? false,
  });
  for (const line of describeLab(lab.state)) console.log(line);

  // The first signal stops the lab gracefully. Copies of it arrive at once (npm passes
  // Ctrl-C on to us and the terminal sends it to the whole group), so only a signal
  // more than 2 s later counts as a second one: it kills the children without waiting.
  let firstSignal = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (firstSignal === 0) {
      firstSignal = Date.now();
      console.log(`lab: ${signal}: stopping the relays, then Redis (again to kill them at once) …`);
      void lab.stop();
      return;
    }
    if (Date.now() - firstSignal < 2000) return;
    for (const pid of lab.state.children) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(join(lab.state.dir, STATE_FILE), { force: true });
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const code = await lab.done;
  console.log(code === 0 ? 'lab: stopped' : 'lab: stopped after an error');
  process.exitCode = code;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  main().catch((err: unknown) => {
    process.stderr.write(`lab: ${err instanceof LabError ? err.message : (err as Error).message ?? String(err)}\n`);
    process.exit(1);
  });
}
