/**
 * The compose files and the image, checked without Docker (it cannot run here):
 * docker-compose.yml (the relay and its Redis) and docker-compose.lab.yml (the
 * lab: smarthost, final hop into a Maildir volume, a legacy MTA, IMAP + webmail)
 * parsed with `yaml`, for their structure — services, images and builds,
 * published ports, volumes, healthchecks, depends_on — and every configuration a
 * service mounts or names: it exists in the repo and passes the relay's own
 * validation (`loadConfig`), with the environment the service would give it.
 * Also the native lab's rewrite of the same files (lab/topology.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { loadConfig } from '../../src/config/load.ts';
import { nativeConfig, readLabConfig, validate, NODE_NAMES, type NodeName } from '../../lab/topology.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const read = (f: string) => readFileSync(join(ROOT, f), 'utf8');

interface Service {
  image?: string;
  build?: string | { context: string };
  command?: string[] | string;
  environment?: Record<string, string> | string[];
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: string[] | string };
  depends_on?: Record<string, { condition: string }> | string[];
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

/** Parsed as compose reads it: YAML merge keys (`<<: *anchor`) on. */
const compose = (f: string): Compose => YAML.parse(read(f), { merge: true }) as Compose;

/** `${VAR:-default}` as compose would interpolate it with VAR unset. */
const interpolate = (v: string) => v.replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1');

/** The environment of the image's last stage (ENV lines of the Dockerfile after its last FROM). */
function imageEnv(): Record<string, string> {
  const last = read('Dockerfile').split(/^FROM /m).pop()!;
  const env: Record<string, string> = {};
  for (const m of last.matchAll(/^ENV (.+)$/gm)) for (const kv of m[1]!.matchAll(/(\w+)=(\S+)/g)) env[kv[1]!] = kv[2]!;
  return env;
}

function environment(s: Service): Record<string, string> {
  const e = s.environment ?? {};
  const pairs = Array.isArray(e) ? e.map((x) => x.split('=', 2) as [string, string]) : Object.entries(e);
  return Object.fromEntries(pairs.map(([k, v]) => [k, interpolate(String(v))]));
}

const isBuilt = (s: Service) => s.build !== undefined;
const buildContext = (s: Service) => (typeof s.build === 'string' ? s.build : s.build?.context);

/** Bind mounts (`./host:/container[:ro]`) as [host path in the repo, container path]. */
function binds(s: Service): [string, string][] {
  return (s.volumes ?? []).filter((v) => v.startsWith('./')).map((v) => v.split(':') as [string, string]).map(([h, c]) => [resolve(ROOT, h), c]);
}

/** Named volumes a service mounts, as [volume, container path]. */
function named(s: Service): [string, string][] {
  return (s.volumes ?? []).filter((v) => !v.startsWith('./') && !v.startsWith('/')).map((v) => v.split(':') as [string, string]);
}

/** The container path of each `--config FILE` in a service's command (relative to the image's WORKDIR /app). */
function configArgs(s: Service): string[] {
  const cmd = Array.isArray(s.command) ? s.command : (s.command ?? '').split(/\s+/);
  return cmd.flatMap((a, i) => (a === '--config' || a === '-c' ? [posix.resolve('/app', cmd[i + 1]!)] : []));
}

/** The repo file behind a container path, through the service's bind mounts. */
function hostFile(s: Service, containerPath: string): string | undefined {
  for (const [host, c] of binds(s)) {
    if (containerPath === c) return host;
    if (containerPath.startsWith(`${c}/`)) return join(host, containerPath.slice(c.length + 1));
  }
  return undefined;
}

/** Every configuration file a drucof-relay service reads: the ones named by --config, else the default one (mounted over or built in). */
function relayConfigs(s: Service): string[] {
  const named = configArgs(s);
  const paths = named.length > 0 ? named : ['/app/config/relay.yaml'];
  return paths.map((p) => hostFile(s, p) ?? join(ROOT, p.replace(/^\/app\//, '')));
}

/** "127.0.0.1:2525:2525" → { host: '127.0.0.1', published: 2525, target: 2525 }. */
function port(p: string): { host?: string; published: number; target: number } {
  const parts = p.replace(/\/tcp$/, '').split(':');
  const target = Number(parts.pop());
  const published = Number(parts.pop());
  return { ...(parts[0] && { host: parts[0] }), published, target };
}

function hasHealthcheck(s: Service): boolean {
  if (s.healthcheck) return true;
  return isBuilt(s) && /^HEALTHCHECK\s/m.test(read('Dockerfile'));
}

function dependsOn(s: Service): Record<string, string> {
  const d = s.depends_on ?? {};
  return Array.isArray(d) ? Object.fromEntries(d.map((n) => [n, 'service_started'])) : Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v.condition]));
}

describe('the image (Dockerfile, .dockerignore)', () => {
  const dockerfile = read('Dockerfile');

  it('is multi-stage, runs as a non-root user, and has a healthcheck', () => {
    expect(dockerfile.match(/^FROM /gm)!.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^COPY --from=\w+ /m);
    const user = [...dockerfile.matchAll(/^USER (\S+)/gm)].pop()?.[1];
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\\\n\s+CMD /m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "bin\/drucof-relay\.js"\]/m);
  });

  it('installs only production dependencies, and says why not npm ci', () => {
    expect(dockerfile).toMatch(/^RUN npm (ci|install) --omit=dev/m);
    if (/^RUN npm install/m.test(dockerfile)) expect(dockerfile).toMatch(/#.*npm ci/);
  });

  it('copies everything the relay needs at run time', () => {
    for (const dir of ['bin', 'src', 'converters', 'config']) expect(dockerfile).toMatch(new RegExp(`^COPY ${dir} `, 'm'));
    expect(dockerfile).toMatch(/mkdir -p \/app\/var\/maildir && chown -R node:node \/app\/var/);
  });

  it('keeps node_modules, var/ and the tests out of the build context', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim());
    for (const p of ['node_modules', 'var', '.git', 'test']) expect(ignored).toContain(p);
    for (const p of ['bin', 'src', 'converters', 'config', 'package.json', 'package-lock.json']) expect(ignored).not.toContain(p);
  });
});

describe('docker-compose.yml: the relay and its Redis', () => {
  const c = compose('docker-compose.yml');

  it('has Redis with AOF and a healthcheck, and the relay built here, waiting for it', () => {
    expect(Object.keys(c.services).sort()).toEqual(['redis', 'relay']);
    expect((c.services.redis!.command as string[]).join(' ')).toContain('--appendonly yes');
    expect(c.services.redis!.healthcheck).toBeDefined();
    expect(buildContext(c.services.relay!)).toBe('.');
    expect(dependsOn(c.services.relay!)).toEqual({ redis: 'service_healthy' });
    expect(Object.keys(c.volumes ?? {})).toEqual(['redis-data']);
    expect(named(c.services.redis!)).toEqual([['redis-data', '/data']]);
  });

  it('publishes SMTP, and the http endpoint on loopback only', () => {
    const ports = (c.services.relay!.ports ?? []).map(port);
    expect(ports).toContainEqual({ published: 2525, target: 2525 });
    expect(ports).toContainEqual({ host: '127.0.0.1', published: 9025, target: 9025 });
  });

  it('mounts config/docker.yaml as the relay\'s configuration, and it validates with the service\'s environment', () => {
    const s = c.services.relay!;
    for (const [host] of binds(s)) expect(existsSync(host), host).toBe(true);
    const [file] = relayConfigs(s);
    expect(file).toBe(join(ROOT, 'config/docker.yaml'));
    const config = loadConfig(file, { ...imageEnv(), ...environment(s) });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 2525 });
    expect(config.redis.url).toBe('redis://redis:6379');
    expect(config.http.listen).toEqual({ host: '0.0.0.0', port: 9025 });
  });
});

describe('docker-compose.lab.yml: the lab', () => {
  const c = compose('docker-compose.lab.yml');
  const svc = (n: string) => c.services[n]!;

  it('has the lab\'s services: Redis, two drucof-relays built here, mailpit, Dovecot and a webmail', () => {
    expect(Object.keys(c.services).sort()).toEqual(['dovecot', 'final', 'mailpit', 'redis', 'relay', 'webmail']);
    for (const n of ['relay', 'final']) {
      expect(buildContext(svc(n))).toBe('.');
      expect(svc(n).image).toBe('drucof-relay:lab');
    }
    expect(svc('redis').image).toMatch(/^redis:7/);
    expect(svc('mailpit').image).toMatch(/^axllent\/mailpit:v\d+\.\d+$/);
    expect(svc('dovecot').image).toMatch(/^dovecot\/dovecot:2\.3\./);
    expect(svc('webmail').image).toMatch(/^roundcube\/roundcubemail:/);
    for (const [n, s] of Object.entries(c.services)) if (!isBuilt(s)) expect(s.image, n).not.toMatch(/:latest$|^[^:]+$/);
  });

  it('runs Redis with AOF, fsync always', () => {
    const cmd = (svc('redis').command as string[]).join(' ');
    expect(cmd).toContain('--appendonly yes');
    expect(cmd).toContain('--appendfsync always');
  });

  it('publishes the relay (SMTP and http), the final hop, mailpit\'s UI and the webmail — on 127.0.0.1 only', () => {
    const published = Object.fromEntries(Object.entries(c.services).map(([n, s]) => [n, (s.ports ?? []).map(port)]));
    expect(published.relay).toEqual([
      { host: '127.0.0.1', published: 2525, target: 2525 },
      { host: '127.0.0.1', published: 9025, target: 9025 },
    ]);
    expect(published.final).toContainEqual({ host: '127.0.0.1', published: 2526, target: 2525 });
    expect(published.final).toContainEqual({ host: '127.0.0.1', published: 9026, target: 9025 });
    expect(published.mailpit).toContainEqual({ host: '127.0.0.1', published: 8025, target: 8025 });
    expect(published.webmail).toContainEqual({ host: '127.0.0.1', published: 8080, target: 80 });
    const all = Object.values(published).flat();
    for (const p of all) expect(p.host).toBe('127.0.0.1');
    expect(new Set(all.map((p) => p.published)).size).toBe(all.length);
  });

  it('declares every named volume it mounts, and mounts every one it declares', () => {
    const used = new Set(Object.values(c.services).flatMap((s) => named(s).map(([v]) => v)));
    expect([...used].sort()).toEqual(Object.keys(c.volumes ?? {}).sort());
    expect(named(svc('redis'))).toContainEqual(['redis-data', '/data']);
  });

  it('gives every service a healthcheck (its own, or the image\'s for the ones built here)', () => {
    for (const [n, s] of Object.entries(c.services)) expect(hasHealthcheck(s), n).toBe(true);
  });

  it('starts each service after what it needs, healthy', () => {
    const deps = Object.fromEntries(Object.entries(c.services).map(([n, s]) => [n, dependsOn(s)]));
    expect(deps.relay).toEqual({ redis: 'service_healthy', final: 'service_healthy', mailpit: 'service_healthy' });
    expect(deps.final).toEqual({ redis: 'service_healthy' });
    expect(deps.dovecot).toMatchObject({ final: expect.any(String) });
    expect(deps.webmail).toMatchObject({ dovecot: 'service_healthy' });
    // Every dependency exists, waits only on services that have a healthcheck when it asks for health, and there is no cycle.
    for (const [n, d] of Object.entries(deps)) {
      for (const [dep, cond] of Object.entries(d)) {
        expect(c.services[dep], `${n} → ${dep}`).toBeDefined();
        if (cond === 'service_healthy') expect(hasHealthcheck(c.services[dep]!), `${dep} has a healthcheck`).toBe(true);
      }
    }
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (n: string) => {
      if (done.has(n)) return;
      expect(visiting.has(n), `cycle through ${n}`).toBe(false);
      visiting.add(n);
      for (const dep of Object.keys(deps[n] ?? {})) visit(dep);
      visiting.delete(n);
      done.add(n);
    };
    for (const n of Object.keys(deps)) visit(n);
  });

  it('mounts only files that exist in the repo', () => {
    for (const [n, s] of Object.entries(c.services)) for (const [host] of binds(s)) expect(existsSync(host), `${n}: ${host}`).toBe(true);
  });

  it('gives each drucof-relay a configuration from config/lab/ that the relay accepts, with the service\'s environment', () => {
    for (const n of ['relay', 'final']) {
      const s = svc(n);
      const files = relayConfigs(s);
      expect(files, n).toEqual([join(ROOT, `config/lab/${n}.yaml`)]);
      const config = loadConfig(files[0], { ...imageEnv(), ...environment(s) });
      expect(config.listen.port, n).toBe(2525);
      expect(config.redis.url, n).toBe('redis://redis:6379');
      expect(config.http.listen, n).toEqual({ host: '0.0.0.0', port: 9025 });
      expect(config.http.dashboard, n).toBe(true);
    }
  });

  it('routes between services by name: the relay sends drucof.lab to the final hop and legacy.lab to mailpit', () => {
    const relay = loadConfig(join(ROOT, 'config/lab/relay.yaml'), {});
    expect(relay.routes['drucof.lab']).toMatchObject({ host: 'final', port: 2525 });
    expect(relay.routes['legacy.lab']).toMatchObject({ host: 'mailpit', port: 1025 });
    // …on the ports those services listen on.
    expect(loadConfig(join(ROOT, 'config/lab/final.yaml'), imageEnv()).listen.port).toBe(2525);
    expect(environment(svc('mailpit')).MP_SMTP_BIND_ADDR).toBe('0.0.0.0:1025');
    expect(relay.dns.srv).toBe(false);
  });

  it('makes the final hop a final hop: drucof.lab into the Maildir volume that Dovecot serves', () => {
    const final = loadConfig(join(ROOT, 'config/lab/final.yaml'), {});
    expect(final.routes['drucof.lab']).toMatchObject({ transport: 'maildir', dir: '/app/var/maildir' });
    expect(named(svc('final'))).toContainEqual(['final-maildir', '/app/var/maildir']);
    expect(named(svc('dovecot'))).toContainEqual(['final-maildir', '/srv/mail']);
    const dovecot = read('config/lab/dovecot.conf');
    // The final hop writes <dir>/<domain>/<local>/new/: Dovecot's %d/%n under the same volume.
    expect(dovecot).toMatch(/^mail_location = maildir:\/srv\/mail\/%L?d\/%L?n$/m);
    expect(dovecot).toMatch(/^mail_uid = 1000$/m); // the image's `node` user
    expect(environment(svc('webmail'))).toMatchObject({ ROUNDCUBEMAIL_DEFAULT_HOST: 'dovecot', ROUNDCUBEMAIL_SMTP_SERVER: 'relay', ROUNDCUBEMAIL_SMTP_PORT: '2525' });
  });

  it('sets up capabilities that exercise conversion: the final hop answers CONNEG, the relay knows legacy recipients', () => {
    const final = loadConfig(join(ROOT, 'config/lab/final.yaml'), {});
    expect(final.extensions).toEqual({ conneg: true, drucof: true, inlineDsn: true, prdr: true });
    expect(final.capabilities['photo@drucof.lab']).toMatch(/image\/jpeg.*pix-x<=800/);
    const relay = loadConfig(join(ROOT, 'config/lab/relay.yaml'), {});
    expect(relay.capabilities['fax@legacy.lab']).toMatch(/image\/jpeg/);
    expect(relay.capabilities['text@legacy.lab']).toBe('(type="text/plain")');
    // The relay itself knows nothing of drucof.lab: it must ask the final hop.
    expect(Object.keys(relay.capabilities).filter((k) => k.endsWith('@drucof.lab'))).toEqual([]);
  });
});

describe('the native lab (npm run lab): the same files, rewritten for loopback', () => {
  const smtpPorts: Record<NodeName, number> = { relay: 2525, final: 2526, legacy: 2527 };
  const rewritten = (n: NodeName) =>
    nativeConfig(readLabConfig(n), { node: n, smtpPorts, httpPort: 9025 + NODE_NAMES.indexOf(n), redisUrl: 'redis://127.0.0.1:6379', prefix: `lab-${n}`, maildir: `/tmp/lab/${n}/maildir` });

  it('validates every node\'s configuration, with service names replaced by loopback ports', () => {
    for (const n of NODE_NAMES) expect(() => validate(n, rewritten(n))).not.toThrow();
    expect(rewritten('relay')).toMatchObject({ listen: '127.0.0.1:2525', routes: { 'drucof.lab': '127.0.0.1:2526', 'legacy.lab': '127.0.0.1:2527' }, http: { listen: '127.0.0.1:9025' } });
    expect(rewritten('final')).toMatchObject({ listen: '127.0.0.1:2526', routes: { 'drucof.lab': 'maildir:/tmp/lab/final/maildir' }, redis: { url: 'redis://127.0.0.1:6379', prefix: 'lab-final' } });
    expect(rewritten('legacy')).toMatchObject({ routes: { 'legacy.lab': 'maildir:/tmp/lab/legacy/maildir', 'drucof.lab': '127.0.0.1:2526' } });
  });

  it('has a legacy hop with every extension of ours off', () => {
    expect(readLabConfig('legacy').extensions).toEqual({ conneg: false, drucof: false, inlineDsn: false, prdr: false });
  });
});
