/**
 * The one extension of nodemailer's SMTPConnection (style rule 6). Why a subclass:
 * nodemailer sends DSN parameters envelope-wide — `_getDsnRcptToArgs()` gives
 * every RCPT the same NOTIFY/ORCPT, and RET/ENVID are re-encoded with
 * `encodeXText` — and nodemailer#1251 says that API is frozen. A relay must pass
 * each recipient's own NOTIFY/ORCPT and the sender's RET/ENVID on VERBATIM
 * (RFC 3461 §4, rfc-digest §1), so this class owns the MAIL and RCPT parameters:
 *
 *   - `_sendCommand` (override): appends our MAIL parameters to the `MAIL FROM:` line
 *     nodemailer builds (we give nodemailer no `dsn`, `size` or `use8BitMime`).
 *   - `_sendRcpt` (override): `RCPT TO:<r>` plus that recipient's own parameters, and
 *     records the raw RCPT reply per recipient (nodemailer keeps only refusals).
 *   - reads `_responseActions`, `_recipientQueue`, `_actionRCPT` (what the stock
 *     `_sendRcpt` uses) and `_ehloLines` (the raw EHLO keyword lines).
 *
 * These are underscore internals of nodemailer 10.6.0, pinned exactly in
 * package.json; `missingInternals()` checks them at import and
 * test/medium/outbound-internals.test.ts fails loudly if they move.
 * Everything else (connect, STARTTLS, PIPELINING, dot-stuffing, RSET, QUIT) is
 * nodemailer's own, wrapped here in promises that never hang: each wait also
 * ends when the connection does.
 */
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { NodemailerError } from 'nodemailer/lib/errors';

/** The callback nodemailer threads through `_setEnvelope` → `_sendRcpt` → `_actionRCPT`. */
type EnvelopeCallback = (err: NodemailerError | null, info?: unknown) => void;

/** The nodemailer internals this file overrides or calls (see the file comment). */
interface Internals {
  _sendCommand(this: SMTPConnection, str: string, logStr?: string): void;
  _sendRcpt(this: SMTPConnection, recipient: string, callback: EnvelopeCallback): void;
  _actionRCPT(this: SMTPConnection, str: string, callback: EnvelopeCallback): void;
}

const base = SMTPConnection.prototype as unknown as Partial<Internals>;
const PROTOTYPE_INTERNALS = ['_sendCommand', '_sendRcpt', '_actionRCPT', '_setEnvelope', '_getDsnRcptToArgs'] as const;
const INSTANCE_INTERNALS = ['_responseActions', '_recipientQueue'] as const;

/**
 * Names of the nodemailer internals this subclass relies on that are missing
 * (empty when all is well). Checked at import and by the medium tests.
 */
export function missingInternals(): string[] {
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
  const missing: string[] = PROTOTYPE_INTERNALS.filter((m) => typeof proto[m] !== 'function');
  const probe = new SMTPConnection({ logger: false }) as unknown as Record<string, unknown>;
  for (const f of INSTANCE_INTERNALS) if (!Array.isArray(probe[f])) missing.push(f);
  return missing;
}

{
  const missing = missingInternals();
  if (missing.length > 0) {
    throw new Error(`outbound/client: nodemailer internals moved (missing ${missing.join(', ')}); pin nodemailer 10.6.0 or update src/outbound/client.ts`);
  }
}

export interface ClientOptions {
  readonly host: string;
  readonly port: number;
  /** Our EHLO name. */
  readonly name: string;
  /** ms */
  readonly connectTimeout: number;
  readonly greetingTimeout: number;
  /** ms of silence allowed while waiting for any reply (nodemailer's socketTimeout). */
  readonly commandTimeout: number;
  /** `opportunistic`: STARTTLS when offered, plaintext if the peer refuses it; `off`: never. */
  readonly tls: 'opportunistic' | 'off';
  readonly tlsVerify: boolean;
}

/** One transaction as it goes on the wire: addresses already in wire form. */
export interface Transaction {
  /** '' for `<>`. */
  readonly from: string;
  readonly mailParams: readonly string[];
  /** Unique wire addresses, each with its own RCPT parameters. */
  readonly recipients: readonly { readonly address: string; readonly params: readonly string[] }[];
  readonly body: Buffer;
}

/** Why a connection or transaction ended early; `response` is the peer reply that caused it, if any. */
export interface ClientFailure {
  /** `connect`: before the session was ready; `mail`/`rcpt`/`data`: that command was refused; `session`: the connection failed mid-transaction. */
  readonly stage: 'connect' | 'mail' | 'rcpt' | 'data' | 'session';
  /** nodemailer's code: ECONNECTION, ETIMEDOUT, ESOCKET, EDNS, ETLS, EPROTOCOL, EENVELOPE, EMESSAGE … */
  readonly code?: string;
  /** The system code under it, e.g. ECONNREFUSED. */
  readonly originalCode?: string;
  readonly timeoutType?: string;
  /** Whether TCP was connected when it failed. */
  readonly tcpConnected: boolean;
  /** Whether it failed during the STARTTLS handshake (certificate refused, handshake error). */
  readonly duringTls?: boolean;
  readonly response?: string;
  readonly message: string;
}

/** Raw peer replies of one transaction (multi-line replies joined with `\n`, as nodemailer gives them). */
export interface TransactionReplies {
  /** The RCPT reply per wire address, for every RCPT whose reply arrived. */
  readonly rcpt: ReadonlyMap<string, string>;
  /** The final reply after the dot, when the transaction completed. */
  readonly data?: string;
  readonly failure?: ClientFailure;
  /** Set when nodemailer did not behave as the overrides expect (its internals moved): log it loudly. */
  readonly drift?: string;
}

function describe(err: NodemailerError | Error, stage: ClientFailure['stage'], tcpConnected: boolean): ClientFailure {
  const e = err as NodemailerError;
  return {
    stage,
    tcpConnected,
    message: e.message,
    ...(e.code !== undefined && { code: e.code }),
    ...(e.originalCode !== undefined && { originalCode: e.originalCode }),
    ...(e.timeoutType !== undefined && { timeoutType: e.timeoutType }),
    ...(e.response !== undefined && { response: e.response }),
  };
}

function stageOf(err: NodemailerError): ClientFailure['stage'] {
  if (err.response === undefined) return 'session';
  switch (err.command) {
    case 'MAIL FROM':
      return 'mail';
    case 'RCPT TO':
      return 'rcpt';
    case 'DATA':
      return 'data';
    default:
      return 'session';
  }
}

/** Appends params to a `MAIL FROM:<…> …` line, skipping keywords already on it. */
export function appendMailParams(line: string, params: readonly string[]): string {
  const close = line.indexOf('>');
  const present = new Set(
    line
      .slice(close + 1)
      .split(' ')
      .filter(Boolean)
      .map((p) => p.split('=')[0]!.toUpperCase()),
  );
  const extra = params.filter((p) => !present.has(p.split('=')[0]!.toUpperCase()));
  return extra.length > 0 ? `${line} ${extra.join(' ')}` : line;
}

export class RelayClient extends SMTPConnection {
  // Inherited runtime fields nodemailer sets in its constructor; `declare` types them without re-defining them.
  declare _responseActions: ((str: string) => void)[];
  declare _recipientQueue: string[];
  declare _ehloLines: string[] | undefined;

  /** MAIL parameters for the transaction in progress, consumed by the next `MAIL FROM:` line. */
  private pendingMailParams: readonly string[] | undefined;
  private mailLineSent = false;
  private rcptParams = new Map<string, readonly string[]>();
  private rcptReplies = new Map<string, string>();
  /** The peer's name from the first line of its EHLO/HELO reply. */
  serverName: string | undefined;
  lastError: NodemailerError | undefined;

  readonly opts: ClientOptions;

  constructor(opts: ClientOptions) {
    super({
      host: opts.host,
      port: opts.port,
      name: opts.name,
      secure: false,
      ignoreTLS: opts.tls === 'off',
      opportunisticTLS: true,
      tls: { rejectUnauthorized: opts.tlsVerify },
      connectionTimeout: opts.connectTimeout,
      greetingTimeout: opts.greetingTimeout,
      socketTimeout: opts.commandTimeout,
      logger: false,
    });
    this.opts = opts;
    // nodemailer emits 'error' besides failing the callback in flight; an unheard 'error' would crash the process.
    this.on('error', (err: NodemailerError) => {
      this.lastError = err;
    });
  }

  /** The raw EHLO keyword lines (greeting line removed); [] after HELO. */
  get ehloLines(): readonly string[] {
    return this._ehloLines ?? [];
  }

  /** Open and ready for a command. */
  get usable(): boolean {
    const s = this._socket;
    return !this.destroyed && !!s && !s.destroyed && s.writable;
  }

  /** Connects, reads the greeting, EHLO (STARTTLS and EHLO again when offered). Rejects with a ClientFailure. */
  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        this.off('end', onEnd);
        reject({ ...describe(err, 'connect', this.stage === 'connected'), ...(this.upgrading && { duringTls: true }) });
        this.close();
      };
      // nodemailer emits 'end' from close() just before it hands the error to the callback: let that come first.
      const onEnd = (): void =>
        void setImmediate(() => fail(this.lastError ?? Object.assign(new Error('connection closed before the session was ready'), { code: 'ECONNECTION' })));
      this.once('end', onEnd);
      this.connect((err) => {
        if (err) return fail(err);
        if (settled) return;
        settled = true;
        this.off('end', onEnd);
        const first = typeof this.lastServerResponse === 'string' ? this.lastServerResponse.split('\n')[0] : undefined;
        this.serverName = first?.replace(/^\d{3}[ -]/, '').split(' ')[0] || undefined;
        resolve();
      });
    });
  }

  /**
   * Runs MAIL, RCPT…, DATA and the body (nodemailer pipelines them when the peer
   * offers PIPELINING). Never rejects: the outcome is in the replies.
   */
  transaction(tx: Transaction): Promise<TransactionReplies> {
    return new Promise((resolve) => {
      const rcpt = new Map<string, string>();
      let settled = false;
      const finish = (r: TransactionReplies): void => {
        if (settled) return;
        settled = true;
        this.off('end', onEnd);
        this.pendingMailParams = undefined;
        resolve(r);
      };
      // nodemailer emits 'end' from close() just before it fails the send in flight
      // (with the 421 reply, say): let the callback's more precise outcome come first.
      const onEnd = (): void =>
        void setImmediate(() => {
          const err = this.lastError ?? Object.assign(new Error('connection closed'), { code: 'ECONNECTION' });
          finish({ rcpt, failure: describe(err, stageOf(err), true) });
        });
      if (!this.usable) {
        finish({ rcpt, failure: describe(Object.assign(new Error('connection is closed'), { code: 'ECONNECTION' }), 'session', true) });
        return;
      }
      this.once('end', onEnd);
      this.rcptReplies = rcpt;
      this.rcptParams = new Map(tx.recipients.map((r) => [r.address, r.params]));
      this.pendingMailParams = tx.mailParams;
      this.mailLineSent = false;
      this.lastError = undefined;
      this.send({ from: tx.from, to: tx.recipients.map((r) => r.address) }, tx.body, (err, info) => {
        if (err) return finish({ rcpt, failure: describe(err, stageOf(err), true) });
        const missing = tx.recipients.filter((r) => !rcpt.has(r.address)).map((r) => r.address);
        const drift = missing.length > 0 ? `nodemailer internals moved: no RCPT reply recorded for ${missing.join(', ')} (_sendRcpt bypassed?)` : undefined;
        finish({ rcpt, data: info.response, ...(drift && { drift }) });
      });
      // nodemailer writes the MAIL line synchronously inside send(); if it did not
      // pass through our _sendCommand, our parameters were not sent: stop loudly.
      if (!settled && !this.mailLineSent) {
        const err = Object.assign(new Error('nodemailer internals moved: MAIL FROM did not pass through _sendCommand'), { code: 'EINTERNAL' });
        this.close();
        finish({ rcpt, failure: describe(err, 'session', true) });
      }
    });
  }

  /** RSET; resolves true when the session is clean and reusable. */
  resetSession(): Promise<boolean> {
    return new Promise((resolve) => {
      if (!this.usable) return resolve(false);
      let settled = false;
      const done = (ok: boolean): void => {
        if (settled) return;
        settled = true;
        this.off('end', onEnd);
        resolve(ok);
      };
      const onEnd = (): void => done(false);
      this.once('end', onEnd);
      this.reset((err) => done(!err));
    });
  }

  /** QUIT and wait (at most `graceMs`) for the peer to close; then close anyway. */
  quitSession(graceMs = 1000): Promise<void> {
    return new Promise((resolve) => {
      if (!this.usable) {
        this.close();
        return resolve();
      }
      const timer = setTimeout(() => this.close(), graceMs);
      this.once('end', () => {
        clearTimeout(timer);
        resolve();
      });
      this.quit();
    });
  }

  // ---- overridden nodemailer internals (see the file comment) ----

  /** Appends our MAIL parameters to the MAIL FROM line; everything else passes unchanged. */
  _sendCommand(str: string, logStr?: string): void {
    if (this.pendingMailParams !== undefined && str.startsWith('MAIL FROM:')) {
      str = appendMailParams(str, this.pendingMailParams);
      this.pendingMailParams = undefined;
      this.mailLineSent = true;
    }
    base._sendCommand!.call(this, str, logStr);
  }

  /** Stock `_sendRcpt`, but with this recipient's own parameters, and its raw reply recorded. */
  _sendRcpt(recipient: string, callback: EnvelopeCallback): void {
    const replies = this.rcptReplies;
    this._recipientQueue.push(recipient);
    this._responseActions.push((str: string) => {
      replies.set(recipient, str);
      base._actionRCPT!.call(this, str, callback);
    });
    const params = this.rcptParams.get(recipient) ?? [];
    this._sendCommand(`RCPT TO:<${recipient}>${params.length > 0 ? ' ' + params.join(' ') : ''}`);
  }
}
