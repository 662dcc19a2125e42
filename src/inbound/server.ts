/**
 * Builds the listener (Postfix smtpd): an smtp-server instance whose sessions are
 * RelaySMTPConnections, wired to access control (access.ts), per-transaction
 * state (session.ts), per-recipient verdicts (verdicts.ts: 352 at RCPT, the 353
 * sequence after the data), CONNEG answers (protocols.md A3, from a
 * CapabilityLookup) and the DATA → store path (receive.ts). Owns the I/O of the
 * inbound stage: reading the TLS files, the listening socket, graceful shutdown.
 */
import { readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import type { RelayConfig } from '../config/schema.ts';
import { registryLookup } from '../capabilities/registry.ts';
import type { CapabilityLookup } from '../model/capability.ts';
import { reply, type Reply } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import { noMetrics, type Metrics } from '../ops/metrics.ts';
import type { MessageStore } from '../queue/store.ts';
import { connegLines } from '../smtp/conneg.ts';
import { status } from '../smtp/status.ts';
import { checkConnect, checkRecipient, compilePolicy } from './access.ts';
import { AuthFailures, DEFAULT_AUTH_LIMITS, type AuthLimits } from './auth-limit.ts';
import { connectionOf, RelaySMTPConnection, replyError, type ConnectionSettings } from './connection.ts';
import { receive } from './receive.ts';
import { addRecipient, beginTransaction, clientIdentity, currentTransaction, noteAccepted, recipientState, userName } from './session.ts';
import { policySource, VerdictEngine, WAIT_FOR_CONFIRMATION, type VerdictSource } from './verdicts.ts';

/** Which of our extensions are advertised (protocols.md A1); each defaults to on. */
export interface InboundExtensions {
  readonly conneg?: boolean;
  readonly drucof?: boolean;
  readonly inlineDsn?: boolean;
  readonly prdr?: boolean;
}

export interface InboundOptions {
  readonly config: RelayConfig;
  readonly store: MessageStore;
  readonly log: Logger;
  /** Our name: banner, EHLO greeting, Received: `by`. */
  readonly hostname: string;
  /**
   * Extensions switched on or off (default: all on). Meant to come from the
   * config key `extensions: { conneg, drucof, inlineDsn, prdr }`.
   */
  readonly extensions?: InboundExtensions;
  /**
   * Where CONNEG answers come from (A3): the config registry and cached answers
   * of our own next hops, as the caller wires them. Default: the registry over
   * `config.capabilities`. A failed or unknown answer is answered as "not known".
   */
  readonly capabilities?: CapabilityLookup;
  /**
   * More verdict sources after the config `policies` (issue 6: DRUCOF fail-fast);
   * they decide under INLINE-DSN and PRDR exactly as the policies do.
   */
  readonly verdictSources?: readonly VerdictSource[];
  /** Longest wait for a CONNEG answer before answering "not known" (default 5 s). */
  readonly capabilityTimeoutMs?: number;
  /** Sessions (opened, open), messages by reply class, recipients failed after the data; default: nothing. */
  readonly metrics?: Pick<Metrics, 'sessionOpened' | 'sessionClosed' | 'messageReceived' | 'recipientFinal'>;
  /** Told the queue id of every message stored (the dashboard's recent messages); not awaited. */
  readonly noteStored?: (id: string) => Promise<void>;
  /** AUTH brute-force limits (default: 3 per session, 10 per address in 10 minutes; auth-limit.ts). */
  readonly authLimits?: Partial<AuthLimits>;
}

/** Message data must arrive at least this fast once it started (Postfix's smtpd_min_data_rate default). */
export const MIN_DATA_RATE = 500;

/** One client address may hold at most half the sessions, rounded up (Postfix: smtpd_client_connection_count_limit = half the process limit). */
export function connectionsPerClient(maxConnections: number): number {
  return Math.max(1, Math.ceil(maxConnections / 2));
}

/** EHLO keywords of our extensions, in A1's order. */
export function extensionKeywords(ext: InboundExtensions = {}): string[] {
  const on = (v: boolean | undefined) => v !== false;
  return [
    ...(on(ext.conneg) ? ['CONNEG'] : []),
    ...(on(ext.drucof) ? ['DRUCOF'] : []),
    ...(on(ext.inlineDsn) ? ['INLINE-DSN'] : []),
    ...(on(ext.prdr) ? ['PRDR'] : []),
  ];
}

/** The capability expression for a recipient, or undefined: not known, failed, or too slow. */
async function capabilityExpression(lookup: CapabilityLookup, address: string, timeoutMs: number, log: Logger): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const answer = await Promise.race([
      lookup(address),
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), timeoutMs);
      }),
    ]);
    return answer?.kind === 'known' ? answer.expression : undefined;
  } catch (err) {
    log.debug({ rcpt: address, err: (err as Error).message }, 'capability lookup failed');
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A positive RCPT reply (250 or 352) carrying CONNEG (A3, RFC 4141 §5 shape): the
 * first line names the recipient, then the capability lines when known; when not
 * known, only that first line (an ordinary positive reply).
 */
export function connegReply(base: Reply, address: string, expression: string | undefined): Reply {
  const first = `<${address}> ${base.lines[0] ?? ''}`.trimEnd();
  return { ...base, lines: expression ? connegLines(first, expression) : [first] };
}

export interface Inbound {
  /** Starts listening on `config.listen` (port 0: any free port) and returns the real address. */
  listen(): Promise<{ host: string; port: number }>;
  /** Whether the listening socket is open (false before `listen()` and once `close()` began): readiness. */
  listening(): boolean;
  /**
   * Stops accepting, ends idle sessions with `421 4.4.2`, lets transactions in
   * flight finish for up to `timeoutMs`, then ends the rest with 421 too.
   */
  close(timeoutMs: number): Promise<void>;
}

/** smtp-server whose `connect()` builds our connection subclass (libraries.md §1, approach b). */
export class RelaySMTPServer extends SMTPServer {
  /**
   * Every connection whose socket is still open. smtp-server's `connections`
   * forgets a session when it starts closing, but its socket may linger (a
   * client that never closes its side), so shutdown needs this to be bounded.
   */
  readonly live = new Set<RelaySMTPConnection>();
  /** Counts sessions: one per accepted connection, open until its socket closes. */
  metrics: Pick<Metrics, 'sessionOpened' | 'sessionClosed'> = noMetrics;

  constructor(
    options: SMTPServerOptions,
    readonly settings: ConnectionSettings,
  ) {
    super(options);
  }

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new RelaySMTPConnection(this, socket, socketOptions).attach(this.settings);
    this.connections.add(connection);
    this.live.add(connection);
    this.metrics.sessionOpened();
    connection.once('socket-closed', () => {
      this.live.delete(connection);
      this.metrics.sessionClosed();
    });
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data) => this._onClientConnect(data));
    connection.init();
  }
}

/** Constant-time password check against the configured users. */
function checkPassword(users: Readonly<Record<string, string>>, user: string, password: string): boolean {
  if (!Object.hasOwn(users, user)) return false;
  const want = Buffer.from(users[user]!, 'utf8');
  const got = Buffer.from(password, 'utf8');
  return want.length === got.length && timingSafeEqual(want, got);
}

export function createInbound(opts: InboundOptions): Inbound {
  const { config, store, hostname } = opts;
  const log = opts.log;
  const limits = config.limits;
  const policy = compilePolicy(config.allowNetworks, config.auth !== undefined);
  const verdicts = new VerdictEngine([policySource(config.policies), ...(opts.verdictSources ?? [])]);
  const capabilities = opts.capabilities ?? registryLookup(config.capabilities);
  const capabilityTimeoutMs = opts.capabilityTimeoutMs ?? 5000;
  const authLimits: AuthLimits = { ...DEFAULT_AUTH_LIMITS, ...opts.authLimits };
  const authFailures = new AuthFailures(authLimits);
  let draining = false;

  const settings: ConnectionSettings = {
    maxMessageSize: limits.maxMessageSize,
    maxConnections: limits.maxConnections,
    maxConnectionsPerClient: connectionsPerClient(limits.maxConnections),
    requestDeadlineMs: limits.idleTimeout,
    minDataRate: MIN_DATA_RATE,
    authGate: (conn) => {
      // An address that failed too often gets no further tries for a while (anvil).
      const lock = authFailures.lockedOut(conn.remoteAddress, Date.now());
      if (!lock.locked) return undefined;
      conn.authFailures++;
      log.info({ client: conn.remoteAddress, failures: conn.authFailures }, 'authentication refused: too many failures from this address');
      return conn.authFailures >= authLimits.perSession ? status.tooManyAuthFailures() : status.authLockedOut(Math.ceil(lock.retryAfterMs / 1000));
    },
    tls: config.tls !== undefined,
    auth: config.auth ? { allowInsecure: config.auth.allowInsecure } : false,
    extraEhloKeywords: extensionKeywords(opts.extensions),
    paramPolicy: {
      dsn: true,
      maxSize: limits.maxMessageSize,
      conneg: opts.extensions?.conneg !== false,
      drucof: opts.extensions?.drucof !== false,
      inlineDsn: opts.extensions?.inlineDsn !== false,
      prdr: opts.extensions?.prdr !== false,
    },
    isDraining: () => draining,
  };
  if (config.auth && !config.auth.allowInsecure && !config.tls) {
    log.warn('auth is configured without tls and without allowInsecure: AUTH can never be used');
  }

  const server = new RelaySMTPServer(
    {
      name: hostname,
      logger: false,
      // Exim half-closes after a pipelined QUIT (connection.ts, point 3). The TLS socket
      // STARTTLS wraps around an accepted socket inherits the setting from it.
      allowHalfOpen: true,
      ...(config.tls && { key: readFileSync(config.tls.key), cert: readFileSync(config.tls.cert) }),
      ...(limits.maxMessageSize > 0 && { size: limits.maxMessageSize }),
      hideENHANCEDSTATUSCODES: false,
      hideDSN: false,
      hideREQUIRETLS: true,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true, // clients inside allowNetworks relay without AUTH
      allowInsecureAuth: config.auth?.allowInsecure ?? false,
      disabledCommands: [
        'WIZ',
        'SHELL',
        'KILL',
        'XCLIENT',
        'XFORWARD',
        ...(config.tls ? [] : ['STARTTLS']),
        ...(config.auth ? [] : ['AUTH']),
      ],
      socketTimeout: limits.idleTimeout,

      onConnect(session, cb) {
        const denied = checkConnect(policy, { address: session.remoteAddress });
        if (!denied) return cb();
        log.info({ client: session.remoteAddress, result: denied.code }, 'connection refused: not in allowNetworks');
        connectionOf(session).answer(denied, cb);
      },

      onAuth(auth, session, cb) {
        const conn = connectionOf(session);
        const user = auth.username ?? '';
        const ok = (auth.method === 'PLAIN' || auth.method === 'LOGIN') && checkPassword(config.auth?.users ?? {}, user, auth.password ?? '');
        if (!ok) {
          // Every failure is logged with the client's address (fail2ban and the like read these).
          conn.authFailures++;
          const fromAddress = authFailures.fail(session.remoteAddress, Date.now());
          log.info({ client: session.remoteAddress, user, method: auth.method, failures: conn.authFailures, addressFailures: fromAddress }, 'authentication failed');
          if (fromAddress === authLimits.perAddress) {
            log.warn({ client: session.remoteAddress, failures: fromAddress, windowMs: authLimits.windowMs }, 'authentication locked out for this address: too many failures');
          }
          // The session's last allowed failure ends it (Postfix's hard error limit).
          const r = conn.authFailures >= authLimits.perSession ? status.tooManyAuthFailures() : status.authFailed();
          conn.respondNext(r);
          return cb(replyError(r));
        }
        conn.respondNext(reply(235, 7, 0, 'authentication successful'));
        cb(null, { user });
      },

      onMailFrom(address, session, cb) {
        const conn = connectionOf(session);
        const tx = beginTransaction(session, address.address, conn.takeMailParams());
        // Say which per-recipient form this transaction will use (A4b: "ok, PRDR requested").
        conn.answer(status.senderOk(tx.mode === 'plain' ? undefined : `sender ok, ${tx.mode === 'prdr' ? 'PRDR' : 'INLINE-DSN'} requested`), cb);
      },

      onRcptTo(address, session, cb) {
        const conn = connectionOf(session);
        const params = conn.takeRcptParams();
        const tx = currentTransaction(session);
        if (!tx) return conn.answer(status.badSequence('need MAIL command'), cb);
        const denied = checkRecipient(policy, { address: session.remoteAddress, ...optionalUser(session) });
        if (denied) {
          log.info({ client: session.remoteAddress, rcpt: address.address, result: denied.code }, 'recipient refused: relay denied');
          return conn.answer(denied, cb);
        }
        // The verdict engine: refused now, or accepted (its verdict after the data
        // when it depends on the content). A repeat is judged as its first RCPT.
        // The sources may answer later (the fail-fast source reads the cache):
        // smtp-server reads no further (pipelined) command until `cb` is called, so
        // the transaction cannot change while they are asked.
        const facts = { address: address.address, drucof: recipientState(tx, address.address)?.drucof ?? params.drucof === true };
        verdicts.atRcpt(facts).then(
          (disposition) => {
            if (disposition.kind === 'refuse') {
              log.info({ client: session.remoteAddress, rcpt: address.address, result: disposition.reply.code }, 'recipient refused: policy');
              return conn.answer(disposition.reply, cb);
            }
            if (addRecipient(tx, address.address, params, limits.maxRecipients) === 'too-many') {
              return conn.answer(status.tooManyRecipients(), cb);
            }
            // 352 only to a client that asked for INLINE-DSN (A4); PRDR has none (A4b).
            const deferred = disposition.dependsOnContent && tx.mode === 'inline-dsn';
            const base = deferred ? WAIT_FOR_CONFIRMATION() : disposition.reply;
            const answer = (r: Reply) => {
              noteAccepted(tx, address.address, deferred, disposition.dependsOnContent);
              if (deferred) conn.answerIntermediate(r, address, cb);
              else conn.answer(r, cb);
            };
            if (!params.conneg) return answer(base);
            capabilityExpression(capabilities, address.address, capabilityTimeoutMs, log).then(
              (expression) => answer(connegReply(base, address.address, expression)),
              () => answer(connegReply(base, address.address, undefined)),
            );
          },
          (err: unknown) => {
            // A source failed (they should not): the recipient is not judged now, the client may retry.
            log.warn({ client: session.remoteAddress, rcpt: address.address, err: (err as Error)?.message }, 'recipient verdict failed');
            conn.answer(status.localError(), cb);
          },
        );
      },

      onData(stream, session, cb) {
        const conn = connectionOf(session);
        const tx = currentTransaction(session);
        if (!tx) {
          stream.resume();
          return conn.answer(status.badSequence('need MAIL command'), cb);
        }
        receive(
          { stream, tx, client: clientIdentity(session), esmtp: session.openingCommand === 'EHLO', secure: session.secure },
          {
            store,
            log,
            hostname,
            maxMessageSize: limits.maxMessageSize,
            verdicts,
            ...(opts.metrics && { metrics: opts.metrics }),
            ...(opts.noteStored && { noteStored: opts.noteStored }),
          },
        ).then(
          (replies) => conn.answerData(replies, cb),
          (err: unknown) => {
            // The client went away mid-message (or the stream failed): nothing stored.
            log.info({ client: session.remoteAddress, err: (err as Error).message }, 'message not received');
            conn.answer(status.localError(), cb);
          },
        );
      },
    },
    settings,
  );
  if (opts.metrics) server.metrics = opts.metrics;
  server.on('error', (err: Error & { code?: string }) => {
    log.debug({ err: err.message, code: err.code }, 'connection error');
  });

  return {
    listen() {
      return new Promise((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.server.once('error', onError);
        server.listen(config.listen.port, config.listen.host, undefined, () => {
          server.server.off('error', onError);
          const addr = server.server.address();
          if (addr && typeof addr === 'object') {
            log.info({ host: addr.address, port: addr.port }, 'listening');
            resolve({ host: addr.address, port: addr.port });
          } else reject(new Error('listener has no address'));
        });
      });
    },

    listening() {
      return !draining && server.server.listening;
    },

    async close(timeoutMs) {
      draining = true;
      const closed = new Promise<void>((resolve) => {
        if (!server.server.listening) return resolve();
        server.server.close(() => resolve());
      });
      const sessions = () => [...server.connections] as RelaySMTPConnection[];
      const endIdle = () => {
        for (const c of sessions()) if (!c.inTransaction()) c.shutDown();
      };
      endIdle();
      // Sessions finishing a transaction are ended at their next idle moment.
      const poll = setInterval(endIdle, 50);
      const deadline = (ms: number) => new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms).unref());
      try {
        if ((await Promise.race([closed.then(() => 'closed' as const), deadline(timeoutMs)])) === 'closed') return;
        for (const c of sessions()) c.shutDown();
        // Give the 421s a moment to leave, then drop whatever is still open.
        if ((await Promise.race([closed.then(() => 'closed' as const), deadline(1000)])) === 'closed') return;
        for (const c of server.live) c._socket.destroy();
        await Promise.race([closed, deadline(1000)]);
      } finally {
        clearInterval(poll);
      }
    },
  };
}

function optionalUser(session: SMTPServerSession): { user?: string } {
  const user = userName(session.user);
  return user ? { user } : {};
}
