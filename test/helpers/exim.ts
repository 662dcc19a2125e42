/**
 * A private Exim 4.96 (Debian 12's build) as a real peer for the interop tests,
 * in both directions: an Exim SMTP server (the relay's next hop) and Exim as the
 * upstream client delivering one message with `-odi`.
 *
 * Installation (once per machine, shared by every test file, no system MTA touched):
 *
 *   cd var/exim/debs && apt-get download exim4-daemon-light exim4-base exim4-config libidn12 libnss-wrapper
 *   for f in *.deb; do dpkg-deb -x "$f" var/exim/root; done
 *   chmod u-s,g-s var/exim/root/usr/sbin/exim4
 *
 * The binary looks up its compiled-in user `Debian-exim` before it reads any
 * config and refuses to run with uid 0 for it; nss_wrapper (from the private
 * copy, or the system's) supplies that user as the uid Exim runs as: our own, or
 * `nobody` when the tests run as root (then every Exim process is started as
 * `nobody`, so no privilege is ever dropped or regained and deliveries cannot
 * stall). libidn.so.12 comes from the private copy through LD_LIBRARY_PATH.
 * Exim purges its environment, so each config keeps those variables
 * (`keep_environment`) for the copies of itself it re-executes.
 *
 * `findExim()` answers `{ exim }` or `{ reason }` (one line); test files do
 *   const found = await findExim();
 *   if (!found.exim) console.log(`exim: ${found.reason}; Exim interop tests skipped`);
 *   describe.runIf(found.exim)(...)
 * Set EXIM_HOME to use another folder than var/exim.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from './ports.ts';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const REPO = fileURLToPath(new URL('../../', import.meta.url));
/**
 * var/exim of the repository, unless Exim's user could not reach it (a checkout
 * under a folder closed to others, tests run as root): then a folder in tmpdir.
 */
export const EXIM_HOME = process.env.EXIM_HOME ?? (process.getuid?.() === 0 && !openToOthers(REPO) ? join(tmpdir(), 'drucof-relay-exim') : join(REPO, 'var/exim'));

/** Whether every folder from `dir` up to `/` lets others through (x for others). */
function openToOthers(dir: string): boolean {
  for (let d = dir; ; d = dirname(d)) {
    try {
      if ((statSync(d).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (dirname(d) === d) return true;
  }
}
/** The three Exim packages the issue names, plus the two libraries the binary needs privately. */
export const EXIM_PACKAGES = ['exim4-daemon-light', 'exim4-base', 'exim4-config', 'libidn12', 'libnss-wrapper'] as const;
/** Packages whose absence is tolerated when the system already has the library. */
const SYSTEM_LIBS: Record<string, string> = { libidn12: 'libidn.so.12', 'libnss-wrapper': 'libnss_wrapper.so' };
const EXIM_USER = 'Debian-exim';

export interface Exim {
  readonly bin: string;
  /** `4.96` */
  readonly version: string;
  /** Environment every Exim process needs (nss_wrapper, private libraries). */
  readonly env: Readonly<Record<string, string>>;
  /** Uid/gid Exim runs as (`nobody` when the tests run as root; our own otherwise). */
  readonly uid: number;
  readonly gid: number;
}

/** spawn() options that start Exim as its user (only root can, and only root needs to). */
const ids = (exim: Exim) => (process.getuid?.() === 0 ? { uid: exim.uid, gid: exim.gid } : {});

export type EximFound = { exim: Exim; reason?: undefined } | { exim?: undefined; reason: string };

let found: Promise<EximFound> | undefined;

/** Installs (first call on a machine) or finds the private Exim; never throws. */
export function findExim(): Promise<EximFound> {
  found ??= locate().catch((err: unknown) => ({ reason: oneLine(String((err as Error)?.message ?? err)) }));
  return found;
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim().slice(0, 300);

async function locate(): Promise<EximFound> {
  if (process.platform !== 'linux') return { reason: `not on Linux (${process.platform})` };
  const root = join(EXIM_HOME, 'root');
  if (!existsSync(join(root, '.ready'))) {
    const why = await install(root);
    if (why) return { reason: why };
  }
  const bin = join(root, 'usr/sbin/exim4');
  if (!existsSync(bin)) return { reason: `${bin} missing after installation` };

  const libdirs = libDirs(root);
  const nssWrapper = findLib('libnss_wrapper.so', libdirs);
  const isRoot = process.getuid?.() === 0;
  let uid = process.getuid?.() ?? 0;
  let gid = process.getgid?.() ?? 0;
  if (isRoot) {
    const nobody = getent('passwd', 'nobody');
    uid = nobody ? Number(nobody[2]) : 65534;
    gid = nobody ? Number(nobody[3]) : 65534;
  }
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const ld = libdirs.filter((d) => d.startsWith(root));
  if (ld.length > 0) env.LD_LIBRARY_PATH = ld.join(':');
  if (nssWrapper) {
    const [passwd, group] = wrappedUserFiles(uid, gid);
    Object.assign(env, { LD_PRELOAD: nssWrapper, NSS_WRAPPER_PASSWD: passwd, NSS_WRAPPER_GROUP: group });
  } else {
    const sys = getent('passwd', EXIM_USER);
    if (!sys) return { reason: `neither nss_wrapper nor a system user ${EXIM_USER} (apt-get install libnss-wrapper)` };
    if (!isRoot && Number(sys[2]) !== uid) return { reason: `no nss_wrapper, and we are not ${EXIM_USER} nor root` };
    uid = Number(sys[2]);
    gid = Number(sys[3]);
  }

  const v = spawnSync(bin, ['-bV', '-C', '/dev/null'], { env, ...(isRoot && { uid, gid }), encoding: 'utf8', timeout: 10_000 });
  const out = `${v.stdout ?? ''}${v.stderr ?? ''}`;
  const m = /Exim version (\S+)/.exec(out);
  if (!m) return { reason: `${bin} -bV failed: ${oneLine(out || String(v.error))}` };
  if (!/Support for:.*\bPRDR\b/.test(out)) return { reason: `Exim ${m[1]} was built without PRDR` };
  return { exim: { bin, version: m[1]!, env, uid, gid } };
}

function libDirs(root: string): string[] {
  const dirs: string[] = [];
  for (const base of [join(root, 'usr/lib'), join(root, 'lib'), '/usr/lib', '/lib']) {
    if (!existsSync(base)) continue;
    for (const d of readdirSync(base)) if (/-linux-gnu$/.test(d)) dirs.push(join(base, d));
    dirs.push(base);
  }
  return dirs;
}

function findLib(name: string, dirs: string[]): string | undefined {
  return dirs.map((d) => join(d, name)).find((p) => existsSync(p));
}

function getent(db: 'passwd' | 'group', key: string): string[] | undefined {
  const r = spawnSync('getent', [db, key], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split(':') : undefined;
}

/** passwd/group files for nss_wrapper: the system's entries, plus Debian-exim as `uid`. */
function wrappedUserFiles(uid: number, gid: number): [string, string] {
  const dump = (db: string) =>
    (spawnSync('getent', [db], { encoding: 'utf8' }).stdout ?? '')
      .split('\n')
      .filter((l) => l && !l.startsWith(`${EXIM_USER}:`))
      .join('\n');
  const passwd = join(EXIM_HOME, `passwd-${uid}`);
  const group = join(EXIM_HOME, `group-${gid}`);
  writeAtomic(passwd, `${dump('passwd')}\n${EXIM_USER}:x:${uid}:${gid}:Exim for the interop tests:/nonexistent:/usr/sbin/nologin\n`);
  writeAtomic(group, `${dump('group')}\n${EXIM_USER}:x:${gid}:\n`);
  return [passwd, group];
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, file);
}

/** Downloads and unpacks the packages under one lock; answers a reason on failure. */
async function install(root: string): Promise<string | undefined> {
  mkdirSync(EXIM_HOME, { recursive: true });
  const lock = join(EXIM_HOME, '.lock');
  for (let t = 0; ; t++) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return `cannot write ${EXIM_HOME}: ${(err as Error).message}`;
      if (existsSync(join(root, '.ready'))) return undefined;
      try {
        if (Date.now() - statSync(lock).mtimeMs > 180_000) rmSync(lock, { recursive: true, force: true });
      } catch {
        /* gone meanwhile */
      }
      if (t > 1800) return 'timed out waiting for another test file installing Exim';
      await sleep(100);
    }
  }
  try {
    if (existsSync(join(root, '.ready'))) return undefined;
    if (!commandExists('apt-get') || !commandExists('dpkg-deb')) return 'no apt-get/dpkg-deb (Exim comes from Debian packages)';
    const debs = join(EXIM_HOME, 'debs');
    mkdirSync(debs, { recursive: true });
    const have = () => readdirSync(debs).filter((f) => f.endsWith('.deb'));
    const missing = () => EXIM_PACKAGES.filter((p) => !have().some((f) => f.startsWith(`${p}_`)));
    let error = '';
    const download = async () => {
      for (const p of missing()) {
        try {
          await run('apt-get', ['download', '-qq', p], { cwd: debs, timeout: 180_000 });
        } catch (err) {
          error = oneLine(String((err as { stderr?: string }).stderr || (err as Error).message)).split(/ E: /).pop()!;
        }
      }
    };
    await download();
    if (missing().some((p) => !SYSTEM_LIBS[p]) && process.getuid?.() === 0 && /locate package|Unable to|404/.test(error)) {
      // A fresh machine has no package lists yet.
      await run('apt-get', ['update', '-qq'], { timeout: 300_000 }).catch(() => {});
      await download();
    }
    const stillMissing = missing().filter((p) => !SYSTEM_LIBS[p] || !findLib(SYSTEM_LIBS[p]!, libDirs('/nonexistent')));
    if (stillMissing.length > 0) return `apt-get download ${stillMissing.join(' ')} failed: ${error}`;

    const tmp = `${root}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    for (const f of have()) await run('dpkg-deb', ['-x', join(debs, f), tmp], { timeout: 60_000 });
    const bin = join(tmp, 'usr/sbin/exim4');
    if (!existsSync(bin)) return 'exim4-daemon-light unpacked without usr/sbin/exim4';
    chmodSync(bin, 0o755); // no setuid: never root, never a privilege change mid-delivery
    rmSync(root, { recursive: true, force: true });
    renameSync(tmp, root);
    writeFileSync(join(root, '.ready'), have().join('\n') + '\n');
    return undefined;
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function commandExists(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

// ---------------------------------------------------------------------------
// Instances: a folder with spool, logs and a maildir; configs written per instance.

interface Instance {
  readonly dir: string;
  readonly config: string;
}

/** Instance folders and daemons of this process. */
const instanceDirs: string[] = [];
const daemons = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of daemons) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

/**
 * Stops this process's Exim daemons and removes every instance folder it made
 * (call in afterAll). EXIM_KEEP=1 keeps the folders, whose paths failed
 * assertions print, for a look at Exim's logs and spool.
 */
export async function removeEximInstances(): Promise<void> {
  for (const p of daemons) p.kill('SIGKILL');
  if (process.env.EXIM_KEEP) return;
  for (const d of instanceDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

function newInstance(exim: Exim, kind: string): string {
  const dir = mkdtempSync(join(tmpdir(), `drucof-exim-${kind}-`));
  instanceDirs.push(dir);
  chmodSync(dir, 0o755);
  for (const d of ['spool', 'log', 'maildir']) mkdirSync(join(dir, d), { mode: 0o755 });
  if (process.getuid?.() === 0) for (const d of ['', 'spool', 'log', 'maildir']) chownSync(join(dir, d), exim.uid, exim.gid);
  return dir;
}

function mainSection(exim: Exim, dir: string, hostname: string, extra: string): string {
  return `# generated by test/helpers/exim.ts
keep_environment = LD_PRELOAD : LD_LIBRARY_PATH : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP : PATH
exim_path = ${exim.bin}
primary_hostname = ${hostname}
qualify_domain = ${hostname}
spool_directory = ${dir}/spool
log_file_path = ${dir}/log/%slog
pid_file_path = ${dir}/exim.pid
trusted_users = ${EXIM_USER}
untrusted_set_sender = *
local_from_check = false
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
chunking_advertise_hosts =
log_selector = +received_recipients +smtp_protocol_error +smtp_syntax_error +smtp_connection +smtp_no_mail +outgoing_port +subject +return_path_on_delivery
${extra}
`;
}

const MAILDIR_TRANSPORT = (dir: string) => `local_maildir:
  driver = appendfile
  directory = ${dir}/maildir
  maildir_format
  create_directory
  envelope_to_add
  return_path_add
  delivery_date_add
  user = ${EXIM_USER}
`;

function writeConfig(dir: string, text: string): string {
  const file = join(dir, 'exim.conf');
  writeFileSync(file, text, { mode: 0o644 });
  return file;
}

const readOr = (file: string) => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
};

/** One message Exim delivered into an instance's maildir. */
export interface EximDelivery {
  /** `Envelope-to:` (the recipient this copy is for). */
  readonly to: string;
  /** `Return-path:` without the brackets ('' for a bounce). */
  readonly returnPath: string;
  /** The whole file, headers Exim added included. */
  readonly raw: string;
}

function maildirMessages(dir: string): EximDelivery[] {
  const out: EximDelivery[] = [];
  for (const sub of ['new', 'cur']) {
    const d = join(dir, 'maildir', sub);
    if (!existsSync(d)) continue;
    for (const f of readdirSync(d).sort()) {
      const raw = readOr(join(d, f));
      const header = raw.split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]+/g, ' ');
      const h = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(header)?.[1]?.trim() ?? '';
      out.push({ to: h('Envelope-to'), returnPath: h('Return-path').replace(/^<|>$/g, ''), raw });
    }
  }
  return out;
}

/** A mainlog delivery line: `=>` first delivery, `->` more addresses of the same delivery, `**` failed, `==` deferred. */
export interface EximLogLine {
  readonly id: string;
  readonly flag: '<=' | '=>' | '->' | '**' | '==' | '>>' | '*>';
  readonly address: string;
  /** Everything after the address (R=… T=… H=… and, for `**`/`==`, the error). */
  readonly rest: string;
  readonly line: string;
}

export function parseMainlog(text: string): EximLogLine[] {
  const out: EximLogLine[] = [];
  for (const line of text.split('\n')) {
    // `=> postmaster <postmaster@example.net> …` for local deliveries: the original address is in brackets.
    const m = /^\S+ \S+ (?:\[\d+\] )?(\S{16,23}) (<=|=>|->|\*\*|==|>>|\*>) (\S+)(?: <([^>]*)>)?(.*)$/.exec(line);
    if (m) out.push({ id: m[1]!, flag: m[2] as EximLogLine['flag'], address: m[4] ?? m[3]!, rest: m[5]!.trim(), line });
  }
  return out;
}

abstract class EximInstanceBase implements Instance {
  constructor(
    readonly exim: Exim,
    readonly dir: string,
    readonly config: string,
  ) {}
  mainlog(): string {
    return readOr(join(this.dir, 'log/mainlog'));
  }
  rejectlog(): string {
    return readOr(join(this.dir, 'log/rejectlog'));
  }
  paniclog(): string {
    return readOr(join(this.dir, 'log/paniclog'));
  }
  logLines(): EximLogLine[] {
    return parseMainlog(this.mainlog());
  }
  /** Messages Exim delivered into this instance's maildir. */
  maildir(): EximDelivery[] {
    return maildirMessages(this.dir);
  }
  /** Everything, for a failed assertion's message. */
  logs(): string {
    return `--- ${this.dir}/log/mainlog\n${this.mainlog()}--- rejectlog\n${this.rejectlog()}--- paniclog\n${this.paniclog()}`;
  }
  async waitFor<T>(what: string, fn: () => T | undefined | false, ms = 20_000): Promise<T> {
    for (const end = Date.now() + ms; ; await sleep(50)) {
      const v = fn();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${this.logs()}`);
    }
  }
}

// ---------------------------------------------------------------------------
// Exim as an SMTP server (a next hop).

export interface EximServerOptions {
  /** Advertise PRDR (default true). */
  prdr?: boolean;
  /** Recipients (full addresses, case-insensitive) the PRDR ACL refuses with `550 <prdrText>`. */
  prdrRefuse?: readonly string[];
  /** Recipients the PRDR ACL defers (`450`). */
  prdrDefer?: readonly string[];
  /** Text of the PRDR ACL's refusals (Exim prints it after the code). */
  prdrText?: string;
  /** Recipients refused at RCPT with `550` (no PRDR line for them). */
  rcptRefuse?: readonly string[];
  hostname?: string;
  /** Extra main-section lines. */
  extraMain?: string;
}

export class EximServer extends EximInstanceBase {
  constructor(
    exim: Exim,
    dir: string,
    config: string,
    readonly port: number,
    private readonly proc: ChildProcess,
    private readonly output: () => string,
  ) {
    super(exim, dir, config);
  }

  /** Messages Exim accepted and delivered locally (one per recipient). */
  delivered(): EximDelivery[] {
    return this.maildir();
  }

  override logs(): string {
    return `${super.logs()}--- daemon output\n${this.output()}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) return resolve();
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      this.proc.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      this.proc.kill('SIGTERM');
    });
  }
}

const addressList = (xs: readonly string[]) => (xs.length === 0 ? ':' : xs.map((x) => x.toLowerCase()).join(' : '));

export async function startEximServer(exim: Exim, opts: EximServerOptions = {}): Promise<EximServer> {
  const dir = newInstance(exim, 'server');
  const port = await freePort();
  const hostname = opts.hostname ?? 'exim-server.test';
  const text = opts.prdrText ?? 'refused by the PRDR ACL';
  const config = writeConfig(
    dir,
    `${mainSection(
      exim,
      dir,
      hostname,
      `daemon_smtp_ports = ${port}
local_interfaces = <; 127.0.0.1
prdr_enable = ${opts.prdr === false ? 'false' : 'true'}
acl_smtp_rcpt = acl_rcpt
acl_smtp_data_prdr = acl_prdr
queue_run_max = 0
${opts.extraMain ?? ''}`,
    )}
begin acl

acl_rcpt:
  deny condition = \${if match_address{\${lc:$local_part@$domain}}{${addressList(opts.rcptRefuse ?? [])}}}
       message = refused at RCPT
  accept

acl_prdr:
  deny condition = \${if match_address{\${lc:$local_part@$domain}}{${addressList(opts.prdrRefuse ?? [])}}}
       message = ${text}
  defer condition = \${if match_address{\${lc:$local_part@$domain}}{${addressList(opts.prdrDefer ?? [])}}}
       message = deferred by the PRDR ACL
  accept

begin routers

local:
  driver = accept
  transport = local_maildir

begin transports

${MAILDIR_TRANSPORT(dir)}
begin retry

* * F,1h,1h
`,
  );
  const proc = spawn(exim.bin, ['-C', config, '-bdf'], { env: { ...exim.env }, ...ids(exim), stdio: ['ignore', 'pipe', 'pipe'] });
  daemons.add(proc);
  proc.once('exit', () => daemons.delete(proc));
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const server = new EximServer(exim, dir, config, port, proc, () => out);
  for (const end = Date.now() + 15_000; ; await sleep(50)) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`exim daemon exited (${proc.exitCode ?? proc.signalCode})\n${server.logs()}`);
    if (/daemon started/.test(server.mainlog()) && (await canConnect(port))) break;
    if (Date.now() > end) {
      await server.stop();
      throw new Error(`exim daemon did not listen on ${port} within 15 s\n${server.logs()}`);
    }
  }
  return server;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

// ---------------------------------------------------------------------------
// Exim as the upstream client: one message, delivered with -odi.

export interface EximSendOptions {
  /** Where every remote recipient goes (manualroute to 127.0.0.1::port). */
  port: number;
  host?: string;
  from: string;
  to: readonly string[];
  /** The message (headers and body); LF or CRLF line ends. */
  message: string | Buffer;
  /** `hosts_try_prdr = *` (default true). */
  prdr?: boolean;
  /** Domains delivered into the client's own maildir (default: the sender's domain, so bounces land there). */
  localDomains?: readonly string[];
  hostname?: string;
  /** Run with `-d+transport` and keep the debug output. */
  debug?: boolean;
  /** Kill Exim after this long (default 25 s, under vitest's 30 s test timeout). */
  timeoutMs?: number;
}

export class EximClientRun extends EximInstanceBase {
  constructor(
    exim: Exim,
    dir: string,
    config: string,
    readonly status: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(exim, dir, config);
  }

  /** Exim's id of the message it was given (its `<=` line). */
  get messageId(): string | undefined {
    return this.logLines().find((l) => l.flag === '<=' && l.address !== '<>')?.id;
  }

  private linesFor(flags: readonly string[]): EximLogLine[] {
    const id = this.messageId;
    return this.logLines().filter((l) => l.id === id && flags.includes(l.flag));
  }

  /** Recipients recorded as delivered (`=>` and `->` lines). */
  delivered(): string[] {
    return this.linesFor(['=>', '->']).map((l) => l.address);
  }

  /** Recipients recorded as failed (`**` lines), with Exim's error text. */
  failed(): { address: string; error: string }[] {
    return this.linesFor(['**']).map((l) => ({ address: l.address, error: l.rest }));
  }

  /** Recipients deferred (`==` lines). */
  deferred(): { address: string; error: string }[] {
    return this.linesFor(['==']).map((l) => ({ address: l.address, error: l.rest }));
  }

  /** Bounces (from `<>`) Exim delivered into its local maildir for the sender. */
  bounces(): EximDelivery[] {
    return this.maildir().filter((m) => m.returnPath === '');
  }

  override logs(): string {
    return `${super.logs()}--- exit ${this.status}\n--- stderr\n${this.stderr}`;
  }
}

export async function eximSend(exim: Exim, opts: EximSendOptions): Promise<EximClientRun> {
  const dir = newInstance(exim, 'client');
  const hostname = opts.hostname ?? 'exim-client.test';
  const senderDomain = opts.from.includes('@') ? opts.from.slice(opts.from.lastIndexOf('@') + 1) : hostname;
  const local = opts.localDomains ?? [senderDomain];
  const host = opts.host ?? '127.0.0.1';
  const config = writeConfig(
    dir,
    `${mainSection(exim, dir, hostname, `domainlist local_domains = ${local.length ? local.join(' : ') : hostname}\nqueue_run_max = 0`)}
begin routers

local:
  driver = accept
  domains = +local_domains
  transport = local_maildir

to_peer:
  driver = manualroute
  route_list = * ${host.includes(':') ? `<; [${host}]:${opts.port}` : `${host}::${opts.port}`}
  self = send
  transport = to_peer

begin transports

to_peer:
  driver = smtp
  allow_localhost
  hosts_try_prdr = ${opts.prdr === false ? ':' : '*'}
  hosts_avoid_tls = *
  hosts_try_chunking = :
  hosts_try_fastopen = :
  # A lost reply shows as a deferral (==) with Exim's reason within seconds, not a hung test.
  connect_timeout = 5s
  command_timeout = 10s
  data_timeout = 10s
  final_timeout = 10s

${MAILDIR_TRANSPORT(dir)}
begin retry

* * F,1h,1h
`,
  );
  const args = ['-C', config, '-odi', '-oi', '-f', opts.from, ...(opts.debug ? ['-d+transport'] : []), '--', ...opts.to];
  const proc = spawn(exim.bin, args, { env: { ...exim.env }, ...ids(exim), stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdin!.on('error', () => {});
  proc.stdin!.end(typeof opts.message === 'string' ? opts.message.replace(/\r\n/g, '\n') : opts.message);
  const status = await new Promise<number | null>((resolve) => {
    const t = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 25_000);
    proc.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
  return new EximClientRun(exim, dir, config, status, stdout, stderr);
}

// ---------------------------------------------------------------------------
// A recording TCP proxy, for transcripts of real dialogues (half-closes included).

export interface Recorder {
  readonly port: number;
  /** `C: ` / `S: ` lines in arrival order, with `(FIN)` where a side half-closed. */
  transcript(): string;
  close(): Promise<void>;
}

export async function startRecorder(target: { host?: string; port: number }, labels = { client: 'C', server: 'S' }): Promise<Recorder> {
  const lines: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ host: target.host ?? '127.0.0.1', port: target.port, allowHalfOpen: true });
    const pending = { C: '', S: '' };
    const record = (side: 'C' | 'S', chunk: Buffer) => {
      pending[side] += chunk.toString('latin1');
      let nl: number;
      while ((nl = pending[side].indexOf('\n')) >= 0) {
        lines.push(`${side === 'C' ? labels.client : labels.server}: ${pending[side].slice(0, nl).replace(/\r$/, '')}`);
        pending[side] = pending[side].slice(nl + 1);
      }
    };
    const fin = (side: 'C' | 'S') => {
      if (pending[side]) lines.push(`${side === 'C' ? labels.client : labels.server}: ${pending[side]}`);
      pending[side] = '';
      lines.push(`${side === 'C' ? labels.client : labels.server}: (FIN: closes its sending side)`);
    };
    down.on('data', (c: Buffer) => {
      record('C', c);
      up.write(c);
    });
    up.on('data', (c: Buffer) => {
      record('S', c);
      down.write(c);
    });
    down.on('end', () => {
      fin('C');
      up.end();
    });
    up.on('end', () => {
      fin('S');
      down.end();
    });
    // No destroy on 'close': that would drop bytes still queued for the other side.
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    transcript: () => lines.join('\n') + '\n',
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
