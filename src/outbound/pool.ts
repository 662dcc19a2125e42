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
 */
import type { DeliveryResult, NextHop } from '../model/delivery.ts';
import type { Reply } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import { status } from '../smtp/status.ts';
import { RelayClient, type ClientFailure, type TransactionReplies } from './client.ts';
import { failureReply, remoteMtaName, runTransaction, type DeliveryRequest } from './deliver.ts';

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
        return { conn, reused: false };
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** After a transaction: RSET and park when the session is still good, else close. */
  release(conn: Conn, sessionGood: boolean): void {
    if (!sessionGood || !conn.client.usable) return this.drop(conn);
    conn.ready = conn.client.resetSession();
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
function lostBeforeAnyReply(replies: TransactionReplies | undefined): boolean {
  const f = replies?.failure;
  if (!f || !replies || replies.rcpt.size > 0) return false;
  if (f.response !== undefined) return /^421[ -]/.test(f.response);
  return f.stage === 'session' && (f.code === 'ECONNECTION' || f.code === 'ESOCKET');
}

export class OutboundPool {
  private readonly hops = new Map<string, HopConnections>();
  private readonly inflight = new Set<Promise<DeliveryResult>>();
  private closed = false;

  constructor(private readonly opts: OutboundOptions) {}

  /** One transaction for the request's recipients. Never rejects for SMTP or network trouble. */
  deliver(req: DeliveryRequest): Promise<DeliveryResult> {
    if (this.closed) return Promise.reject(new Error('OutboundPool is closed'));
    const p = this.attempt(req);
    this.inflight.add(p);
    const forget = (): void => void this.inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Stops taking deliveries, waits for those in flight, then QUITs the idle connections. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    await Promise.all([...this.hops.values()].map((h) => h.closeIdle()));
  }

  private hopConnections(key: string): HopConnections {
    let h = this.hops.get(key);
    if (!h) {
      const created = new HopConnections(this.opts, () => {
        if (this.hops.get(key) === created) this.hops.delete(key);
      });
      this.hops.set(key, (h = created));
    }
    return h;
  }

  private async attempt(req: DeliveryRequest): Promise<DeliveryResult> {
    const started = Date.now();
    const key = req.hop.key;
    if (req.recipients.length === 0) return { hop: key, ehlo: [], perRecipient: new Map(), dsnPassedOn: false };
    for (let retry = 0; ; retry++) {
      const hop = this.hopConnections(key);
      const got = await hop.acquire(req.hop);
      if (!('conn' in got)) {
        const perRecipient = new Map(req.recipients.map((r) => [r.address, got.failure] as const));
        this.logAttempt(req, started, perRecipient, { ...(got.host && { host: got.host }), ...(got.remoteMta && { remoteMta: got.remoteMta }) });
        return { hop: key, ...(got.remoteMta !== undefined && { remoteMta: got.remoteMta }), ehlo: [], perRecipient, dsnPassedOn: false };
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
      hop.release(conn, failure === undefined || failure.stage !== 'session');
      this.logAttempt(req, started, outcome.perRecipient, { host: conn.host, remoteMta: conn.remoteMta, reused, tls: conn.client.secure });
      return {
        hop: key,
        remoteMta: conn.remoteMta,
        ehlo: outcome.features.keywords,
        perRecipient: outcome.perRecipient,
        dsnPassedOn: outcome.features.dsn,
      };
    }
  }

  /** The one log line per delivery attempt. */
  private logAttempt(
    req: DeliveryRequest,
    started: number,
    perRecipient: ReadonlyMap<string, Reply>,
    where: { host?: HostPort; remoteMta?: string; reused?: boolean; tls?: boolean },
  ): void {
    const rcpts = [...perRecipient].map(([to, r]) => ({ to, code: r.code, ...(r.enhanced && { enhanced: r.enhanced }) }));
    const ok = rcpts.every((r) => r.code < 400);
    this.opts.log[ok ? 'info' : 'warn'](
      {
        queueId: req.envelope.id,
        hop: req.hop.key,
        ...(where.host && { host: `${where.host.host}:${where.host.port}` }),
        ...(where.remoteMta && { remoteMta: where.remoteMta }),
        ...(where.reused !== undefined && { reused: where.reused }),
        ...(where.tls !== undefined && { tls: where.tls }),
        recipients: rcpts,
        ms: Date.now() - started,
      },
      'delivery attempt',
    );
  }
}
