/**
 * The configuration contract (protocols.md A10 plus the relay's own keys).
 * Strict: an unknown key is an error naming its path, so a typo never silently
 * falls back to a default. Every default here is the documented one (README,
 * "Configuration reference"), chosen after Postfix's where one exists.
 */
import { isIP } from 'node:net';
import { resolve as resolvePath } from 'node:path';
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

/** `host:port` or `[v6]:port` → host and port (`defaultPort` when none is written); undefined when it is not that. */
function parseHostPort(v: string, defaultPort: number | undefined): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+))(?::(\d{1,5}))?$/.exec(v.trim());
  const port = m?.[3] === undefined ? defaultPort : Number(m[3]);
  if (!m || port === undefined || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** `host:port`, `[v6]:port`; the port defaults to 25 for next hops. */
export const hostPort = z.string().transform((v, ctx) => {
  const hp = parseHostPort(v, 25);
  if (!hp) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not host:port` });
    return z.NEVER;
  }
  return hp;
});

/**
 * Where a `routes:` entry sends its domain: a next hop spoken to in SMTP (relaying)
 * or LMTP (RFC 2033, final delivery), or Maildirs the relay writes itself (final delivery).
 */
export type RouteTarget =
  | { readonly transport: 'smtp'; readonly host: string; readonly port: number }
  | { readonly transport: 'lmtp'; readonly host: string; readonly port: number }
  | {
      readonly transport: 'maildir';
      /** Absolute (a relative one is resolved against the working directory when the config is read). */
      readonly dir: string;
    };

/**
 * A `routes:` value: `host:port` (SMTP, port 25 if omitted), `lmtp:host:port` (LMTP;
 * the port is required, LMTP has no standard one), or `maildir:DIR` (Maildirs
 * under DIR, relative to the working directory). The prefixes win: an SMTP host
 * literally named `lmtp` or `maildir` is written with its domain.
 */
export const routeTarget = z.string().transform((v, ctx): RouteTarget => {
  const t = v.trim();
  const fail = (message: string) => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  const prefix = /^(lmtp|maildir):/i.exec(t)?.[1]?.toLowerCase();
  if (prefix === 'maildir') {
    const dir = t.slice('maildir:'.length).trim();
    if (dir === '' || dir.includes('\0')) return fail(`"${v}" names no directory (e.g. maildir:var/lab/mail)`);
    return { transport: 'maildir', dir: resolvePath(dir) };
  }
  if (prefix === 'lmtp') {
    const hp = parseHostPort(t.slice('lmtp:'.length), undefined);
    if (!hp) return fail(`"${v}" is not lmtp:host:port (the port is required, e.g. lmtp:127.0.0.1:24)`);
    return { transport: 'lmtp', ...hp };
  }
  const hp = parseHostPort(t, 25);
  if (!hp) return fail(`"${v}" is not host:port, lmtp:host:port or maildir:DIR`);
  return { transport: 'smtp', ...hp };
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
  hostname: z.string().min(1).optional().describe("name in the banner, `Received:`, EHLO to next hops and DSN `Reporting-MTA`; unset: the machine's name"),
  listen: hostPort.default({ host: '127.0.0.1', port: 2525 }).describe('where to accept SMTP (`RELAY_LISTEN`)'),
  smarthost: hostPort.optional().describe('next hop for all mail, `host:port` (`RELAY_SMARTHOST`)'),
  routes: z
    .record(z.string(), routeTarget)
    .default({})
    .describe(
      'per-domain next hops (`.example.org` also matches subdomains); win over the smarthost. `host:port` relays by SMTP (port 25 if omitted); `lmtp:host:port` delivers by LMTP (RFC 2033, port required); `maildir:DIR` delivers into Maildirs `DIR/<domain>/<local part>/` (the relay is then the final hop)',
    ),
  mx: z.boolean().default(false).describe('deliver by MX look-up when no route or smarthost applies'),
  allowNetworks: z
    .array(cidr)
    .default(['127.0.0.0/8', '::1/128'])
    .describe('clients that may relay without AUTH; others must authenticate or are refused (`554 5.7.1` at connect without AUTH configured, `550 5.7.1` at RCPT with it)'),
  redis: z
    .strictObject({
      url: z.string().optional().describe('as `REDIS_URL`; unset: 127.0.0.1:6379 if it answers, else a private redis-server'),
      prefix: z.string().regex(/^[A-Za-z0-9_.:-]+$/).default('drucof').describe('prefix of every Redis key (`RELAY_QUEUE_PREFIX`), so several relays share one Redis'),
      embedded: z
        .strictObject({
          dir: z.string().default('var/redis').describe('data directory of the private redis-server started when no Redis answers'),
          port: z.number().int().min(1).max(65535).default(6390).describe('its loopback port'),
          appendfsync: z.enum(['always', 'everysec', 'no']).default('always').describe('its AOF fsync policy (`always`: every accepted message is on disk before the 250)'),
        })
        .prefault({}),
    })
    .prefault({}),
  tls: z
    .strictObject({
      key: z.string().describe('PEM private key; STARTTLS is advertised only when `tls` is set'),
      cert: z.string().describe('PEM certificate (chain)'),
    })
    .optional(),
  auth: z
    .strictObject({
      users: z.record(z.string(), z.string()).describe('`{ user: password }`; AUTH PLAIN/LOGIN is advertised only when `auth` is set; authenticated clients may relay from anywhere'),
      allowInsecure: z.boolean().default(false).describe('allow AUTH before STARTTLS (only sensible on loopback)'),
    })
    .optional(),
  limits: z
    .strictObject({
      maxMessageSize: size.prefault(26_214_400).describe('bytes (or `25MB`); `552 5.3.4` above it (SIZE is advertised)'),
      maxRecipients: z.number().int().positive().default(1000).describe('per transaction; `452 4.5.3` above it'),
      maxConnections: z.number().int().positive().default(100).describe('simultaneous clients; `421 4.4.5` above it; one address holds at most half of them (`421 4.7.0`)'),
      idleTimeout: duration.prefault(300).describe('a silent client is disconnected (`421 4.4.2`); also the deadline for one command line, and for the message data plus one second per 500 bytes received'),
    })
    .prefault({}),
  queue: z
    .strictObject({
      retrySchedule: z
        .array(duration)
        .min(1)
        .prefault([300, 600, 1200, 2400, 3600])
        .describe("delay after the 1st, 2nd … failed attempt; the last repeats; a next hop's `[RETRY-AFTER n]` hint moves it"),
      maxLifetime: duration.prefault('5d').describe('then a recipient still deferred fails with `4.4.7`'),
      delayWarning: duration.prefault('4h').describe('one `delayed` report after this, to recipients that asked (`NOTIFY=DELAY`); `0` = never'),
      returnLimit: size.prefault('10MB').describe('`RET=FULL` returns the whole message up to this size, else its headers'),
      concurrency: z.number().int().positive().default(50).describe('messages delivered at once per worker process'),
      keepFinished: duration.prefault('1d').describe('how long `queue show` and `explain` can still read a finished message'),
    })
    .prefault({}),
  delivery: z
    .strictObject({
      connectionsPerHop: z.number().int().positive().default(10).describe('simultaneous connections to one next hop'),
      maxRecipientsPerTransaction: z.number().int().positive().default(100).describe('larger groups are split'),
      connectTimeout: duration.prefault(30).describe('outbound: connecting'),
      greetingTimeout: duration.prefault(300).describe("outbound: waiting for the hop's greeting"),
      commandTimeout: duration.prefault(300).describe('outbound: waiting for each reply'),
      idleReuse: duration.prefault(10).describe('an idle connection is kept this long for the next message to the same hop'),
      tlsVerify: z.boolean().default(false).describe('STARTTLS is used whenever a hop offers it; verify its certificate?'),
    })
    .prefault({}),
  shutdownTimeout: duration.prefault(30).describe('how long in-flight work may take on SIGTERM'),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('pino level; logs are JSON lines, one per transaction, delivery attempt and DRUCOF decision'),
    })
    .prefault({}),
  // A switched-off extension is not advertised and its parameters are refused.
  extensions: z
    .strictObject({
      conneg: z.boolean().default(true).describe('offer CONNEG (answer capability queries) to clients'),
      drucof: z.boolean().default(true).describe('offer DRUCOF to clients'),
      inlineDsn: z.boolean().default(true).describe('offer INLINE-DSN (352/353 per-recipient verdicts) to clients'),
      prdr: z.boolean().default(true).describe('offer PRDR (per-recipient verdicts as Exim speaks them) to clients'),
    })
    .prefault({}),
  // ZoneMTA's core / ./ / module triad; all load through one validator.
  converters: z
    .strictObject({
      builtin: z.boolean().default(true).describe('load the built-in converters (`converters/`)'),
      dirs: z.array(z.string()).default([]).describe('directories of your own converters'),
      packages: z.array(z.string()).default([]).describe('npm packages of converters'),
    })
    .prefault({}),
  // A part that breaks a limit fails; the process does not.
  conversion: z
    .strictObject({
      timeout: duration.prefault('30s').describe('time limit of each conversion'),
      maxPixels: z.number().int().positive().default(100_000_000).describe('larger images are refused before decoding (decompression bombs)'),
      maxOutputBytes: size.prefault('50MB').describe('largest converted part'),
    })
    .prefault({}),
  http: z
    .strictObject({
      listen: hostPort.optional().describe('`host:port` of the operations endpoint: Prometheus `/metrics`, `/healthz`, `/readyz`; unset: none'),
      dashboard: z.boolean().default(false).describe('serve the dashboard at `/` of that endpoint (queue, recent decisions, conversion statistics)'),
    })
    .prefault({}),
  dns: z
    .strictObject({
      servers: z
        .array(dnsServer)
        .min(1, "list at least one server, or leave dns.servers out to use the system's")
        .optional()
        .describe("resolvers for MX and SRV look-ups: IP literals with an optional port (`[\"127.0.0.1:5353\", \"[::1]:53\"]`); host names are refused; unset: the system's"),
      timeout: duration
        .refine((ms) => ms >= 1 && ms <= 2_147_483_647, 'must be between 1ms and about 24 days')
        .prefault('5s')
        .describe('one query try; each server is tried twice'),
      srv: z.boolean().default(true).describe("look up `_conneg._tcp.<domain>` SRV records to find a domain's capability servers (DRUCOF outline §2)"),
    })
    .prefault({}),
  capabilities: z
    .record(recipientKey, z.string())
    .default({})
    .describe('CONNEG capability registry: address or `*@domain` → RFC 2533 expression; answered to `RCPT … CONNEG`, and the relay is authoritative for these recipients in DRUCOF decisions'),
  policies: z
    .record(recipientKey, policy)
    .default({})
    .describe('per-recipient content policies → per-recipient verdicts: `acceptAll`, `refuse: "550 5.1.1 …"` (at RCPT), `refuseWords`, `maxSize`, `refuseTypes` (after the data)'),
});

export type RelayConfig = z.output<typeof configSchema>;
export type HostPort = { readonly host: string; readonly port: number };
