/**
 * Connection reuse per next hop (Postfix's scache, in-process): at most
 * `connectionsPerHop` connections per `hop.key`; after a transaction the
 * connection gets RSET and waits idle for `idleReuse` ms, and the next
 * transaction to the same hop takes it (once the RSET succeeded). A parked
 * connection that died is replaced by a new one without the caller noticing,
 * and a transaction that lost a reused connection before any reply is run again
 * on a fresh one (nothing can have been delivered: no RCPT reply, no DATA).
 * Connecting tries `hop.hosts` in order. STARTTLS is opportunistic: used when
 * offered (certificates checked when `tlsVerify`), and when the upgrade fails the
 * same host is tried again in plaintext (Postfix `smtp_tls_security_level = may`).
 *
 * The pool also keeps what the decision logic needs to know of each hop: its
 * EHLO keywords (`hopKeywords`, refreshed by every connection it opens, kept
 * with a TTL in memory and in the capability cache), and runs CONNEG probes
 * (`probe`: MAIL FROM:<>, RCPTs with CONNEG, RSET; protocols.md A3) whose
 * answers, like those of queries made during a delivery, go to the cache.
 *
 * Final hops: an LMTP hop (`transport: 'lmtp'`) is pooled like any other, its
 * connections speaking LMTP (client.ts) and its keywords being the LHLO reply's;
 * a Maildir hop has no connection at all: `deliver` writes the Maildirs
 * (maildir.ts), `hopKeywords` is the empty set (it advertises neither CONNEG
 * nor DRUCOF: the relay is the final hop and decides alone), `probe` asks no one.
 */
import type { CapabilityCache } from '../capabilities/cache.ts';
import { CONNEG_PARAM, queryAnswers, queryFailed } from '../capabilities/conneg-client.ts';
import type { CapabilityAnswer } from '../model/capability.ts';
import type { DeliveryResult, MaildirHop, NextHop } from '../model/delivery.ts';
import type { Reply } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import { status } from '../smtp/status.ts';
import { RelayClient, type ClientFailure, type ProbeReplies, type TransactionReplies, type Verdicts } from './client.ts';
import { failureReply, hopFeatures, queryFailure, remoteMtaName, runTransaction, wireAddress, type DeliveryRequest } from './deliver.ts';
import { deliverToMaildir } from './maildir.ts';

export interface OutboundOptions {
  /** Our EHLO name. */
  hostname: string;
  connectionsPerHop: number;
  /** ms */
  connectTimeout: number;
  greetingTimeout: number;
  commandTimeout: number;
  /** ms an idle connection stays open for reuse. */
  idleReuse: number;
  tlsVerify: boolean;
  log: Logger;
  /** Where CONNEG answers and EHLO keywords are kept across processes (absent: this process's memory only, keywords only). */
  cache?: CapabilityCache;
  /** ms a hop's EHLO keywords are trusted without reconnecting (default: the cache's ehloTtl, else 1 hour). */
  ehloTtl?: number;
  /** ms a CONNEG probe may take, from MAIL to the last RCPT reply (default 30 s). */
  probeTimeout?: number;
}

/**
 * What one delivery returned: the model's DeliveryResult plus what the extensions
 * add (candidates for model/delivery.ts; until then the worker reads them here).
 */
export interface DeliveryOutcome extends DeliveryResult {
  /** Answers to the CONNEG queries the request asked (`perRecipient[r].conneg`), by RecipientState.address. */
  readonly capabilities?: ReadonlyMap<string, CapabilityAnswer>;
  /** Recipients whose RCPT carried DRUCOF (asked, and the hop advertises DRUCOF). */
  readonly drucofPassedOn?: ReadonlySet<string>;
  /** How per-recipient verdicts were asked after the data, if they were (A4 / A4b). */
  readonly verdicts?: Verdicts;
}

export interface ProbeOptions {
  /** Ask even when the cache has an answer (default false). */
  readonly fresh?: boolean;
  /** `srv` when the hop is a capability server found by SRV (A3); default `conneg`. */
  readonly source?: 'conneg' | 'srv';
}

/**
 * No host of the hop gave a session to read its EHLO keywords from; `reply` is the
 * one a delivery would have given every recipient (451 4.4.1 when unreachable, or
 * the host's own greeting refusal).
 */
export class HopUnavailableError extends Error {
  constructor(
    readonly hop: string,
    readonly reply: Reply,
  ) {
    super(`next hop ${hop} unavailable: ${reply.code} ${reply.lines.join(' ')}`);
    this.name = 'HopUnavailableError';
  }
}

const DEFAULT_EHLO_TTL = 3_600_000;
const DEFAULT_PROBE_TIMEOUT = 30_000;

/** EHLO keywords as the decision logic reads them: upper-case first words. */
function keywordsOf(client: RelayClient): ReadonlySet<string> {
  return new Set(hopFeatures(client.ehloLines).keywords);
}

type HostPort = NextHop['hosts'][number];

/** One open connection and its bookkeeping. */
interface Conn {
  readonly client: RelayClient;
  readonly host: HostPort;
  readonly remoteMta: string;
  /** Resolves true when the RSET after the last transaction left a clean session. */
  ready: Promise<boolean>;
  idleTimer?: NodeJS.Timeout;
  /** Its slot in the hop's limit has been given back. */
  slotFreed: boolean;
  transactions: number;
}

type Opened =
  | { readonly conn: Conn }
  | { readonly failure: Reply; readonly host?: HostPort; readonly remoteMta?: string };

type Acquired = { readonly conn: Conn; readonly reused: boolean } | Extract<Opened, { failure: Reply }>;

async function openConnection(hop: NextHop, opts: OutboundOptions): Promise<Opened> {
  let last: Opened | undefined;
  for (const host of hop.hosts) {
    for (const tls of ['opportunistic', 'off'] as const) {
      const client = new RelayClient({
        host: host.host,
        port: host.port,
        name: opts.hostname,
        connectTimeout: opts.connectTimeout,
        greetingTimeout: opts.greetingTimeout,
        commandTimeout: opts.commandTimeout,
        tls,
        tlsVerify: opts.tlsVerify,
        ...(hop.transport === 'lmtp' && { lmtp: true }),
      });
      try {
        await client.open();
        return {
          conn: { client, host, remoteMta: remoteMtaName(host.host, client.serverName), ready: Promise.resolve(true), slotFreed: false, transactions: 0 },
        };
      } catch (err) {
        const f = err as ClientFailure;
        // A greeting or EHLO refusal came from the host itself: it is the Remote-MTA.
        last = { failure: failureReply(f, host), host, ...(f.response !== undefined && { remoteMta: host.host }) };
        const tlsTrouble = f.duringTls === true || f.code === 'ETLS' || f.timeoutType === 'UPGRADE_TIMEOUT';
        if (tls === 'opportunistic' && tlsTrouble) {
          opts.log.info({ hop: hop.key, host: `${host.host}:${host.port}`, err: f.message, code: f.originalCode ?? f.code }, 'STARTTLS failed; trying again in plaintext');
          continue;
        }
        break;
      }
    }
  }
  return last ?? { failure: status.routingFailed(`next hop ${hop.key} has no hosts`) };
}

/** The connections of one hop: a counting limit, a LIFO of idle ones, FIFO waiters. */
class HopConnections {
  private readonly idle: Conn[] = [];
  private slots = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(
    private readonly opts: OutboundOptions,
    private readonly onEmpty: () => void,
    /** Called with each new connection once its session is ready (EHLO read). */
    private readonly onOpened: (conn: Conn) => void = () => {},
  ) {}

  get empty(): boolean {
    return this.slots === 0 && this.idle.length === 0 && this.waiters.length === 0;
  }

  async acquire(hop: NextHop): Promise<Acquired> {
    for (;;) {
      const parked = this.idle.pop();
      if (parked) {
        clearTimeout(parked.idleTimer);
        if ((await parked.ready) && parked.client.usable) return { conn: parked, reused: true };
        this.drop(parked);
        continue;
      }
      if (this.slots < this.opts.connectionsPerHop) {
        this.slots++;
        const opened = await openConnection(hop, this.opts);
        if (!('conn' in opened)) {
          this.slots--;
          this.wake();
          return opened;
        }
        const conn = opened.conn;
        conn.client.on('end', () => this.onConnectionEnd(conn));
        this.onOpened(conn);
        return { conn, reused: false };
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** After a transaction: RSET (unless nothing was started) and park when the session is still good, else close. */
  release(conn: Conn, sessionGood: boolean, needsReset = true): void {
    if (!sessionGood || !conn.client.usable) return this.drop(conn);
    if (needsReset) conn.ready = conn.client.resetSession();
    conn.idleTimer = setTimeout(() => this.expire(conn), this.opts.idleReuse);
    conn.idleTimer.unref();
    this.idle.push(conn);
    this.wake();
  }

  /** Closes the connection (no QUIT: it is broken or in an unknown state) and frees its slot. */
  drop(conn: Conn): void {
    this.freeSlot(conn);
    if (!conn.client.destroyed) conn.client.close();
  }

  /** QUITs every idle connection. */
  async closeIdle(): Promise<void> {
    const all = this.idle.splice(0);
    await Promise.all(
      all.map((conn) => {
        clearTimeout(conn.idleTimer);
        this.freeSlot(conn);
        return conn.client.quitSession();
      }),
    );
  }

  private expire(conn: Conn): void {
    const i = this.idle.indexOf(conn);
    if (i < 0) return;
    this.idle.splice(i, 1);
    this.freeSlot(conn);
    void conn.client.quitSession();
  }

  private onConnectionEnd(conn: Conn): void {
    clearTimeout(conn.idleTimer);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    // A busy connection's slot is freed by release(); an idle one's here.
    if (i >= 0) this.freeSlot(conn);
  }

  private freeSlot(conn: Conn): void {
    if (conn.slotFreed) return;
    conn.slotFreed = true;
    this.slots--;
    this.wake();
  }

  private wake(): void {
    const next = this.waiters.shift();
    if (next) next();
    else if (this.empty) this.onEmpty();
  }
}

/** A reused connection that failed before any RCPT reply: nothing was delivered, try a fresh one. */
function lostBeforeAnyReply(replies: TransactionReplies | ProbeReplies | undefined): boolean {
  const f = replies?.failure;
  if (!f || !replies || replies.rcpt.size > 0 || ('mail' in replies && replies.mail !== undefined)) return false;
  if (f.response !== undefined) return /^421[ -]/.test(f.response);
  return f.stage === 'session' && (f.code === 'ECONNECTION' || f.code === 'ESOCKET');
}

export class OutboundPool {
  private readonly hops = new Map<string, HopConnections>();
  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;
  /** Hop key → EHLO keywords and when they were read (this process's copy of the cache). */
  private readonly keywords = new Map<string, { readonly keywords: ReadonlySet<string>; readonly at: number }>();
  private readonly keywordLookups = new Map<string, Promise<ReadonlySet<string>>>();
  private readonly ehloTtl: number;

  constructor(private readonly opts: OutboundOptions) {
    this.ehloTtl = opts.ehloTtl ?? opts.cache?.ehloTtl ?? DEFAULT_EHLO_TTL;
  }

  /** One transaction for the request's recipients. Never rejects for SMTP or network trouble. */
  deliver(req: DeliveryRequest): Promise<DeliveryOutcome> {
    const hop = req.hop;
    if (hop.transport === 'maildir') return this.track(() => this.deliverLocally(req, hop));
    return this.track(() => this.attempt(req));
  }

  /**
   * The hop's EHLO keywords (upper-case first words: `CONNEG`, `DRUCOF`, `DSN` …)
   * for the decision logic: from this process's copy or the cache while younger
   * than the TTL, else read by connecting (the connection is kept for reuse).
   * Rejects with HopUnavailableError when no host of the hop can be reached.
   */
  hopKeywords(hop: NextHop): Promise<ReadonlySet<string>> {
    const mine = this.keywords.get(hop.key);
    if (mine && Date.now() - mine.at < this.ehloTtl) return Promise.resolve(mine.keywords);
    if (hop.transport === 'maildir') {
      // Kept like any hop's (also in the cache), so the inbound's fail-fast can read them too.
      const none: ReadonlySet<string> = new Set();
      if (this.closed) return Promise.reject(new Error('OutboundPool is closed'));
      this.rememberKeywords(hop.key, none);
      return Promise.resolve(none);
    }
    let lookup = this.keywordLookups.get(hop.key);
    if (!lookup) {
      lookup = this.track(() => this.lookupKeywords(hop));
      this.keywordLookups.set(hop.key, lookup);
      const done = (): void => void this.keywordLookups.delete(hop.key);
      lookup.then(done, done);
    }
    return lookup;
  }

  /**
   * CONNEG probe (A3): asks the hop for each recipient's capabilities with
   * `MAIL FROM:<>`, `RCPT TO:<r> CONNEG` …, then RSET (the connection is reused),
   * never DATA. An answer per recipient: known (a parsable expression), or
   * query-failed with the reason (refused, not known, unparsable, timeout, hop
   * without CONNEG, unreachable). Cached answers are used unless `fresh`; new ones
   * are cached (known 1 h, failed 5 min). Never rejects for SMTP or network trouble.
   */
  probe(hop: NextHop, recipients: readonly string[], opts: ProbeOptions = {}): Promise<Map<string, CapabilityAnswer>> {
    if (hop.transport === 'maildir') {
      const none = queryFailed('the next hop is a local Maildir: there is no server to ask', opts.source ?? 'conneg');
      return Promise.resolve(new Map(recipients.map((r) => [r, none] as const)));
    }
    return this.track(() => this.runProbe(hop, [...new Set(recipients)], opts));
  }

  /** Stops taking deliveries, waits for those in flight, then QUITs the idle connections. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    await Promise.all([...this.hops.values()].map((h) => h.closeIdle()));
  }

  /** Runs `work` unless closed, and lets close() wait for it. */
  private track<T>(work: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('OutboundPool is closed'));
    const p = work();
    this.inflight.add(p);
    const forget = (): void => void this.inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  private hopConnections(key: string): HopConnections {
    let h = this.hops.get(key);
    if (!h) {
      const created = new HopConnections(
        this.opts,
        () => {
          if (this.hops.get(key) === created) this.hops.delete(key);
        },
        (conn) => this.rememberKeywords(key, keywordsOf(conn.client)),
      );
      this.hops.set(key, (h = created));
    }
    return h;
  }

  /** Keeps a hop's keywords as just read from a new connection (here and in the cache). */
  private rememberKeywords(hopKey: string, keywords: ReadonlySet<string>): void {
    const at = Date.now();
    this.keywords.set(hopKey, { keywords, at });
    if (this.opts.cache) void this.opts.cache.setHopKeywords(hopKey, keywords, at);
  }

  private async lookupKeywords(hop: NextHop): Promise<ReadonlySet<string>> {
    const cached = await this.opts.cache?.hopKeywords(hop.key);
    if (cached && Date.now() - cached.at < this.ehloTtl) {
      this.keywords.set(hop.key, cached);
      return cached.keywords;
    }
    const h = this.hopConnections(hop.key);
    const got = await h.acquire(hop);
    if (!('conn' in got)) throw new HopUnavailableError(hop.key, got.failure);
    // A reused connection's keywords were read when it was opened (and remembered then).
    if (got.reused) this.rememberKeywords(hop.key, keywordsOf(got.conn.client));
    h.release(got.conn, true, false);
    return this.keywords.get(hop.key)?.keywords ?? keywordsOf(got.conn.client);
  }

  private async runProbe(hop: NextHop, recipients: string[], opts: ProbeOptions): Promise<Map<string, CapabilityAnswer>> {
    const source = opts.source ?? 'conneg';
    const cache = this.opts.cache;
    const out = new Map<string, CapabilityAnswer>();
    if (cache && !opts.fresh) {
      for (const [r, a] of await cache.getMany(recipients)) out.set(r, a.kind === 'known' ? { ...a, source: 'cache' } : a);
    }
    const ask = recipients.filter((r) => !out.has(r));
    if (ask.length === 0) return out;
    const fresh = await this.askHop(hop, ask, source);
    for (const [r, a] of fresh.answers) {
      out.set(r, a);
      if (cache && fresh.cacheable) await cache.set(r, a);
    }
    return out;
  }

  /** One probe session for `recipients` (none of them cached); answers by the caller's addresses. */
  private async askHop(
    hop: NextHop,
    recipients: readonly string[],
    source: 'conneg' | 'srv',
  ): Promise<{ answers: Map<string, CapabilityAnswer>; cacheable: boolean }> {
    const all = (a: CapabilityAnswer) => new Map(recipients.map((r) => [r, a] as const));
    const h = this.hopConnections(hop.key);
    for (let retry = 0; ; retry++) {
      const got = await h.acquire(hop);
      if (!('conn' in got)) {
        // Unreachable is a failed query too (A3), but it says nothing about the recipients, and
        // it is not remembered: cached, it would keep their decision deferred for the failure TTL
        // after the server is back (a delivery to a hop that is down is retried on the schedule anyway).
        return { answers: all(queryFailed(`could not reach the server: ${got.failure.lines.join(' ')}`, source, got.failure)), cacheable: false };
      }
      const { conn, reused } = got;
      const features = hopFeatures(conn.client.ehloLines);
      if (!features.conneg) {
        // Not a query at all: nothing to cache (the keywords say it already).
        h.release(conn, true, false);
        return { answers: all(queryFailed('the server does not advertise CONNEG', source)), cacheable: false };
      }
      const answers = new Map<string, CapabilityAnswer>();
      const wire = new Map<string, string[]>();
      for (const r of recipients) {
        const w = wireAddress(r, features.smtpUtf8, 'recipient');
        if (typeof w === 'string') wire.set(w, [...(wire.get(w) ?? []), r]);
        else answers.set(r, queryFailed(`the address cannot be sent to this server: ${w.lines.join(' ')}`, source, w));
      }
      const utf8 = features.smtpUtf8 && [...wire.keys()].some((w) => /[^\x00-\x7f]/.test(w));
      const replies = await conn.client.probe(
        { mailParams: utf8 ? ['SMTPUTF8'] : [], recipients: [...wire.keys()].map((address) => ({ address, params: [CONNEG_PARAM] })) },
        this.opts.probeTimeout ?? DEFAULT_PROBE_TIMEOUT,
      );
      if (reused && lostBeforeAnyReply(replies) && retry < this.opts.connectionsPerHop) {
        h.drop(conn);
        continue;
      }
      h.release(conn, replies.failure === undefined);
      const host = { host: conn.client.opts.host, port: conn.client.opts.port };
      const f = replies.failure;
      const byWire = queryAnswers([...wire.keys()], {
        rcpt: replies.rcpt,
        ...(replies.mail !== undefined && { mail: replies.mail }),
        ...(f && { failure: queryFailure(f, host) }),
      }, source);
      for (const [w, rs] of wire) for (const r of rs) answers.set(r, byWire.get(w)!);
      this.opts.log.info(
        { hop: hop.key, host: `${host.host}:${host.port}`, answers: [...answers].map(([to, a]) => ({ to, kind: a.kind, ...(a.kind === 'query-failed' && { reason: a.reason }) })) },
        'capability probe',
      );
      return { answers, cacheable: true };
    }
  }

  /** A Maildir hop: the relay writes the files itself (the final hop). */
  private async deliverLocally(req: DeliveryRequest, hop: MaildirHop): Promise<DeliveryOutcome> {
    const started = Date.now();
    const result = await deliverToMaildir(req, hop, { hostname: this.opts.hostname });
    this.logAttempt(req, started, result.perRecipient, { maildir: hop.dir });
    for (const [to, file] of result.files) this.opts.log.debug({ queueId: req.envelope.id, to, file }, 'delivered into a Maildir');
    const asked = req.recipients.filter((r) => req.perRecipient?.get(r.address)?.conneg);
    const none = queryFailed('the next hop is a local Maildir: there is no server to ask', 'conneg');
    return {
      hop: result.hop,
      ehlo: result.ehlo,
      perRecipient: result.perRecipient,
      dsnPassedOn: false,
      ...(asked.length > 0 && { capabilities: new Map(asked.map((r) => [r.address, none] as const)) }),
    };
  }

  private async attempt(req: DeliveryRequest): Promise<DeliveryOutcome> {
    const started = Date.now();
    const key = req.hop.key;
    if (req.recipients.length === 0) return { hop: key, ehlo: [], perRecipient: new Map(), dsnPassedOn: false };
    for (let retry = 0; ; retry++) {
      const hop = this.hopConnections(key);
      const got = await hop.acquire(req.hop);
      if (!('conn' in got)) {
        const perRecipient = new Map(req.recipients.map((r) => [r.address, got.failure] as const));
        this.logAttempt(req, started, perRecipient, { ...(got.host && { host: got.host }), ...(got.remoteMta && { remoteMta: got.remoteMta }) });
        const asked = req.recipients.filter((r) => req.perRecipient?.get(r.address)?.conneg);
        const failed = queryFailed(`could not reach the next hop: ${got.failure.lines.join(' ')}`, 'conneg', got.failure);
        return {
          hop: key,
          ...(got.remoteMta !== undefined && { remoteMta: got.remoteMta }),
          ehlo: [],
          perRecipient,
          dsnPassedOn: false,
          ...(asked.length > 0 && { capabilities: new Map(asked.map((r) => [r.address, failed] as const)) }),
        };
      }
      const { conn, reused } = got;
      const outcome = await runTransaction(conn.client, req);
      const failure = outcome.replies?.failure;
      if (outcome.replies?.drift) this.opts.log.error({ hop: key, queueId: req.envelope.id }, outcome.replies.drift);
      if (reused && lostBeforeAnyReply(outcome.replies) && retry < this.opts.connectionsPerHop) {
        this.opts.log.debug({ hop: key, err: failure?.message }, 'reused connection was lost; trying a new one');
        hop.drop(conn);
        continue;
      }
      conn.transactions++;
      // A transaction that ran to its final reply after the data leaves the session clean
      // (RFC 5321 §4.1.1.4), as Postfix and nodemailer's own pool assume: no RSET then —
      // one round trip less per message. Any transaction that stopped short gets its RSET.
      const complete = failure === undefined && outcome.replies?.data !== undefined;
      hop.release(conn, failure === undefined || failure.stage !== 'session', !complete);
      if (outcome.capabilities && this.opts.cache) {
        for (const [r, a] of outcome.capabilities) if (outcome.queried.has(r)) await this.opts.cache.set(r, a);
      }
      this.logAttempt(req, started, outcome.perRecipient, {
        host: conn.host,
        remoteMta: conn.remoteMta,
        reused,
        tls: conn.client.secure,
        ...(outcome.verdicts && { verdicts: outcome.verdicts }),
        ...(outcome.replies?.afterData?.malformed !== undefined && { malformed: outcome.replies.afterData.malformed }),
      });
      return {
        hop: key,
        remoteMta: conn.remoteMta,
        ehlo: outcome.features.keywords,
        perRecipient: outcome.perRecipient,
        dsnPassedOn: outcome.features.dsn,
        ...(outcome.capabilities && { capabilities: outcome.capabilities }),
        ...(outcome.drucofPassedOn.size > 0 && { drucofPassedOn: outcome.drucofPassedOn }),
        ...(outcome.verdicts && { verdicts: outcome.verdicts }),
      };
    }
  }

  /** The one log line per delivery attempt. */
  private logAttempt(
    req: DeliveryRequest,
    started: number,
    perRecipient: ReadonlyMap<string, Reply>,
    where: { host?: HostPort; remoteMta?: string; reused?: boolean; tls?: boolean; verdicts?: Verdicts; malformed?: string; maildir?: string },
  ): void {
    const rcpts = [...perRecipient].map(([to, r]) => ({ to, code: r.code, ...(r.enhanced && { enhanced: r.enhanced }) }));
    const ok = rcpts.every((r) => r.code < 400);
    this.opts.log[ok ? 'info' : 'warn'](
      {
        queueId: req.envelope.id,
        hop: req.hop.key,
        ...(req.hop.transport === 'lmtp' && { protocol: 'lmtp' }),
        ...(where.maildir && { maildir: where.maildir }),
        ...(where.host && { host: `${where.host.host}:${where.host.port}` }),
        ...(where.remoteMta && { remoteMta: where.remoteMta }),
        ...(where.reused !== undefined && { reused: where.reused }),
        ...(where.tls !== undefined && { tls: where.tls }),
        ...(where.verdicts && { verdicts: where.verdicts }),
        ...(where.malformed && { malformedSequence: where.malformed }),
        recipients: rcpts,
        ms: Date.now() - started,
      },
      'delivery attempt',
    );
  }
}
