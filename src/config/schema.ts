/**
 * The configuration contract (protocols.md A10 plus the relay's own keys).
 * Strict: an unknown key is an error naming its path, so a typo never silently
 * falls back to a default. Every default here is the documented one (README,
 * "Configuration reference"), chosen after Postfix's where one exists.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import ipaddr from 'ipaddr.js';

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `90`, `"90s"`, `"15m"`, `"4h"`, `"5d"` → milliseconds (a bare number means seconds). */
export const duration = z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v * 1000;
  const m = DURATION.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (e.g. 30s, 15m, 4h, 5d)` });
    return z.NEVER;
  }
  return Number(m[1]) * UNIT_MS[(m[2] ?? 's') as keyof typeof UNIT_MS];
});

/** `host:port`, `[v6]:port`; the port defaults to 25 for next hops. */
export const hostPort = z.string().transform((v, ctx) => {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+))(?::(\d{1,5}))?$/.exec(v.trim());
  const port = m?.[3] === undefined ? 25 : Number(m[3]);
  if (!m || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not host:port` });
    return z.NEVER;
  }
  return { host: (m[1] ?? m[2])!, port };
});

/**
 * A DNS server to ask: an IP literal with an optional port (53 if omitted):
 * `192.0.2.1`, `192.0.2.1:5353`, `::1`, `[::1]:5353`. No host names (a resolver
 * cannot be found by resolving). Output in the form `dns.Resolver#setServers`
 * takes: `192.0.2.1:53`, `[::1]:53`.
 */
export const dnsServer = z.string().transform((v, ctx) => {
  const t = v.trim();
  const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(t) ?? /^([^:\s]+)(?::(\d{1,5}))?$/.exec(t);
  const host = m ? m[1]! : t;
  const port = m?.[2] === undefined ? 53 : Number(m[2]);
  const family = isIP(host);
  // A bracketed literal must be IPv6; an unbracketed one with a port must be IPv4; a bare IPv6 has no port.
  const ok = family !== 0 && port >= 1 && port <= 65535 && (!m || t.startsWith('[') === (family === 6));
  if (!ok) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not an IP address with an optional port (e.g. 127.0.0.1, 127.0.0.1:5353, [::1]:53)` });
    return z.NEVER;
  }
  return family === 6 ? `[${host}]:${port}` : `${host}:${port}`;
});

const cidr = z.string().refine((v) => {
  try {
    if (v.includes('/')) ipaddr.parseCIDR(v);
    else ipaddr.parse(v);
    return true;
  } catch {
    return false;
  }
}, 'not an IP address or CIDR network');

const size = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const m = /^(\d+)\s*([kmg]i?b?|b)?$/i.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (e.g. 10485760, 10MB)` });
    return z.NEVER;
  }
  const unit = (m[2] ?? 'b').toLowerCase()[0] as 'b' | 'k' | 'm' | 'g';
  return Number(m[1]) * { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[unit];
});

/** Recipient-keyed maps: exact address or `*@domain` (protocols.md A10). */
const recipientKey = z.string().regex(/^(\*|[^@\s]+)@[^@\s]+$/, 'must be an address or *@domain');

const policy = z.strictObject({
  acceptAll: z.boolean().optional(),
  /** The reply given at RCPT, e.g. "550 5.1.1 this recipient no longer exists"; a text without a code is sent as 550 5.7.1. */
  refuse: z.string().min(1).optional(),
  refuseWords: z.array(z.string()).optional(),
  maxSize: size.optional(),
  refuseTypes: z.array(z.string()).optional(),
});

export const configSchema = z.strictObject({
  /** Name used in the banner, Received:, EHLO to next hops and Reporting-MTA. */
  hostname: z.string().min(1).optional(),
  listen: hostPort.default({ host: '127.0.0.1', port: 2525 }),
  smarthost: hostPort.optional(),
  /** Per-domain next hops; they win over the smarthost. */
  routes: z.record(z.string(), hostPort).default({}),
  /** Look up MX records for domains with no route when no smarthost is set. */
  mx: z.boolean().default(false),
  allowNetworks: z.array(cidr).default(['127.0.0.0/8', '::1/128']),
  redis: z
    .strictObject({
      url: z.string().optional(),
      prefix: z.string().regex(/^[A-Za-z0-9_.:-]+$/).default('drucof'),
      /** The private redis-server started when no Redis answers. */
      embedded: z
        .strictObject({
          dir: z.string().default('var/redis'),
          port: z.number().int().min(1).max(65535).default(6390),
          appendfsync: z.enum(['always', 'everysec', 'no']).default('always'),
        })
        .prefault({}),
    })
    .prefault({}),
  tls: z
    .strictObject({
      key: z.string(),
      cert: z.string(),
    })
    .optional(),
  auth: z
    .strictObject({
      users: z.record(z.string(), z.string()),
      /** Allow AUTH before STARTTLS (only sensible on loopback). */
      allowInsecure: z.boolean().default(false),
    })
    .optional(),
  limits: z
    .strictObject({
      maxMessageSize: size.prefault(26_214_400),
      maxRecipients: z.number().int().positive().default(1000),
      maxConnections: z.number().int().positive().default(100),
      idleTimeout: duration.prefault(300),
    })
    .prefault({}),
  queue: z
    .strictObject({
      /** Delays after the 1st, 2nd, … failed attempt; the last repeats. */
      retrySchedule: z.array(duration).min(1).prefault([300, 600, 1200, 2400, 3600]),
      maxLifetime: duration.prefault('5d'),
      /** Age after which a recipient still deferred gets its one `delayed` report, if it asked (NOTIFY=DELAY). 0 = never. */
      delayWarning: duration.prefault('4h'),
      /** Largest original returned whole in a failure report under RET=FULL (Postfix's bounce_size_limit is 50 KB). */
      returnLimit: size.prefault('10MB'),
      concurrency: z.number().int().positive().default(50),
      /** How long records of finished messages stay readable by `queue show`. */
      keepFinished: duration.prefault('1d'),
    })
    .prefault({}),
  delivery: z
    .strictObject({
      connectionsPerHop: z.number().int().positive().default(10),
      maxRecipientsPerTransaction: z.number().int().positive().default(100),
      connectTimeout: duration.prefault(30),
      greetingTimeout: duration.prefault(300),
      commandTimeout: duration.prefault(300),
      /** Keep an idle connection open for reuse this long. */
      idleReuse: duration.prefault(10),
      /** Verify next hops' TLS certificates (opportunistic STARTTLS either way). */
      tlsVerify: z.boolean().default(false),
    })
    .prefault({}),
  shutdownTimeout: duration.prefault(30),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).prefault({}),
  /** SMTP extensions the relay offers its clients; a switched-off one is not advertised and its parameters are refused. */
  extensions: z
    .strictObject({
      conneg: z.boolean().default(true),
      drucof: z.boolean().default(true),
      inlineDsn: z.boolean().default(true),
      prdr: z.boolean().default(true),
    })
    .prefault({}),
  /** Where converters come from (ZoneMTA's core / ./ / module triad); all load through one validator. */
  converters: z
    .strictObject({
      builtin: z.boolean().default(true),
      dirs: z.array(z.string()).default([]),
      packages: z.array(z.string()).default([]),
    })
    .prefault({}),
  /** Limits on every conversion: a part that breaks one fails, the process does not. */
  conversion: z
    .strictObject({
      timeout: duration.prefault('30s'),
      maxPixels: z.number().int().positive().default(100_000_000),
      maxOutputBytes: size.prefault('50MB'),
    })
    .prefault({}),
  /** The operations HTTP endpoint: Prometheus `/metrics`, `/healthz`, `/readyz`, and the dashboard when switched on. Off unless `listen` is set. */
  http: z
    .strictObject({
      /** `host:port` to serve on (e.g. `127.0.0.1:9025`); unset: no HTTP endpoint. */
      listen: hostPort.optional(),
      /** Serve the dashboard at `/` (queue, recent decisions, conversion statistics). */
      dashboard: z.boolean().default(false),
    })
    .prefault({}),
  /** DNS for MX and `_conneg._tcp` SRV look-ups. */
  dns: z
    .strictObject({
      /** Resolvers to ask, in order; unset: the system's (/etc/resolv.conf). */
      servers: z.array(dnsServer).min(1, 'list at least one server, or leave dns.servers out to use the system\'s').optional(),
      /** Per query try (two tries per server). */
      timeout: duration.refine((ms) => ms >= 1 && ms <= 2_147_483_647, 'must be between 1ms and about 24 days').prefault('5s'),
      /** Look up `_conneg._tcp.<domain>` SRV records to find a domain's capability servers (DRUCOF outline §2). */
      srv: z.boolean().default(true),
    })
    .prefault({}),
  /** CONNEG: capability registry (address or *@domain → RFC 2533 expression), answered to clients and used for decisions. */
  capabilities: z.record(recipientKey, z.string()).default({}),
  policies: z.record(recipientKey, policy).default({}),
});

export type RelayConfig = z.output<typeof configSchema>;
export type HostPort = { readonly host: string; readonly port: number };
