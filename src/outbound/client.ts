/**
 * The one extension of nodemailer's SMTPConnection (style rule 6). Why a subclass:
 * nodemailer sends DSN parameters envelope-wide — `_getDsnRcptToArgs()` gives
 * every RCPT the same NOTIFY/ORCPT, and RET/ENVID are re-encoded with
 * `encodeXText` — and nodemailer#1251 says that API is frozen. A relay must pass
 * each recipient's own NOTIFY/ORCPT and the sender's RET/ENVID on VERBATIM
 * (RFC 3461 §4, rfc-digest §1); it must also speak CONNEG, INLINE-DSN and PRDR
 * (protocols.md A3, A4, A4b), which nodemailer cannot express at all (a 352 at
 * RCPT is a refusal to it, a 353 after the dot a failure, and the lines after
 * it "Unexpected Response"). So this class owns the MAIL and RCPT parameters and
 * the replies around them:
 *
 *   - `_sendCommand` (override): appends our MAIL parameters to the `MAIL FROM:` line
 *     nodemailer builds (we give nodemailer no `dsn`, `size` or `use8BitMime`).
 *   - `_sendRcpt` (override): `RCPT TO:<r>` plus that recipient's own parameters;
 *     records the raw RCPT reply per recipient (nodemailer keeps only refusals);
 *     takes `352` as an acceptance under INLINE-DSN; answers a 501/504/555 to a
 *     RCPT carrying `CONNEG` by sending the RCPT again without it (A3). Such a
 *     resend must come before DATA, so a transaction with a CONNEG query hides
 *     PIPELINING from `_setEnvelope` (read from `_supportedExtensions`) and sends
 *     its RCPTs in one write itself (draining `_envelope.rcptQueue`), DATA after
 *     their replies.
 *   - `_actionDATA` (override): only `354` lets the data go (RFC 5321 §4.1.1.4).
 *     nodemailer also streams after a 2xx or another 3xx (for a broken server,
 *     emailjs#24); a hop that answers so is not reading data, reads the message's
 *     lines as commands, and answers one of them where the verdict is awaited — a
 *     `500 command not recognized` would fail every recipient. We close instead:
 *     each recipient not refused at RCPT is a temporary failure (451 4.5.0).
 *   - `_createSendStream` (override): replaces the one reply action nodemailer
 *     queues after the dot with a reader of the 353 sequence (one line per
 *     itemised recipient, by position, then the final reply) when INLINE-DSN or
 *     PRDR was asked; modelled on nodemailer's own `_actionLMTPStream` queue.
 *     Over LMTP (`lmtp: true`: nodemailer says LHLO and queues one
 *     `_actionLMTPStream` per recipient of `_envelope.accepted`, RFC 2033 §4.2)
 *     it leaves those actions in place and wraps each to record its raw reply
 *     by recipient: nodemailer keeps only the refusals (as `rejectedErrors`)
 *     and hands the send callback the LAST recipient's reply alone, which must
 *     not stand for everyone. INLINE-DSN and PRDR are never asked over LMTP
 *     (deliver.ts), so the two uses of this override do not meet.
 *   - reads `_responseActions`, `_recipientQueue`, `_actionRCPT` (what the stock
 *     `_sendRcpt` uses), `_envelope`, `_supportedExtensions`, `_socket` and
 *     `_ehloLines` (the raw EHLO keyword lines); `probe()` drives a MAIL/RCPT
 *     exchange through `_sendCommand` and `_responseActions` directly (no DATA).
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
import { CONNEG_PARAM, refusesConneg } from '../capabilities/conneg-client.ts';
import type { Reply } from '../model/reply.ts';
import { parseReply } from '../smtp/reply-format.ts';
import { speedUpDataStream } from './dot-stuff.ts';

/** The callback nodemailer threads through `_setEnvelope` → `_sendRcpt` → `_actionRCPT`. */
type EnvelopeCallback = (err: NodemailerError | null, info?: unknown) => void;
/** The callback of `_createSendStream`: the reply to the final dot, or the error it became. */
type StreamCallback = (err: NodemailerError | null, str?: string) => void;
/** One entry of nodemailer's `_responseActions`: called with the next complete reply. */
type ResponseAction = (str: string) => void;

/** The nodemailer internals this file overrides or calls (see the file comment). */
interface Internals {
  _sendCommand(this: SMTPConnection, str: string, logStr?: string): void;
  _sendRcpt(this: SMTPConnection, recipient: string, callback: EnvelopeCallback): void;
  _actionRCPT(this: SMTPConnection, str: string, callback: EnvelopeCallback): void;
  _actionDATA(this: SMTPConnection, str: string, callback: EnvelopeCallback): void;
  _createSendStream(this: SMTPConnection, callback: StreamCallback): unknown;
}

/** The fields of nodemailer's per-transaction `_envelope` this file reads. */
interface NodemailerEnvelope {
  /** Recipients whose RCPT is still to be sent (non-pipelined mode sends them one per reply). */
  rcptQueue: string[];
  /** Whether MAIL, every RCPT and DATA went out in one batch. */
  pipelined: boolean;
  /** Recipients accepted at RCPT, in reply order (LMTP: one reply each after the data, in this order). */
  accepted: string[];
}

const base = SMTPConnection.prototype as unknown as Partial<Internals>;
const PROTOTYPE_INTERNALS = ['_sendCommand', '_sendRcpt', '_actionRCPT', '_actionDATA', '_setEnvelope', '_getDsnRcptToArgs', '_createSendStream', '_actionSMTPStream', '_actionLMTPStream', '_actionLHLO'] as const;
const INSTANCE_INTERNALS = ['_responseActions', '_recipientQueue', '_supportedExtensions'] as const;

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
  /** Speak LMTP (RFC 2033): LHLO instead of EHLO, one reply per accepted recipient after the data. */
  readonly lmtp?: boolean;
}

/** How the hop gives per-recipient verdicts after the data (the MAIL parameter that asked for them). */
export type Verdicts = 'INLINE-DSN' | 'PRDR';

/** One transaction as it goes on the wire: addresses already in wire form. */
export interface Transaction {
  /** '' for `<>`. */
  readonly from: string;
  /** Includes `INLINE-DSN` or `PRDR` when `verdicts` is set. */
  readonly mailParams: readonly string[];
  /** Unique wire addresses, each with its own RCPT parameters (`CONNEG` among them for a query). */
  readonly recipients: readonly { readonly address: string; readonly params: readonly string[] }[];
  readonly body: Buffer;
  /** Read per-recipient verdicts after the dot (A4 / A4b); the MAIL parameter must be in `mailParams`. */
  readonly verdicts?: Verdicts;
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

/** What was read after the final dot of a transaction that asked for per-recipient verdicts. */
export interface AfterData {
  readonly mode: Verdicts;
  /** Wire addresses answered 352 at RCPT (INLINE-DSN only), in reply order. */
  readonly deferred: readonly string[];
  /** True when the reply to the dot was 353 (a sequence followed); false when one reply stood for all. */
  readonly sequence: boolean;
  /** The recipients the sequence itemises, by position: the 352 ones (INLINE-DSN) or every one accepted at RCPT (PRDR). */
  readonly itemised: readonly string[];
  /** The per-recipient line read for each itemised recipient (raw). */
  readonly lines: ReadonlyMap<string, string>;
  /** The final reply of the sequence, when it was read. */
  readonly final?: string;
  /** Why the sequence was abandoned (a line for the wrong recipient, an extra line, a non-reply); the connection was closed. */
  readonly malformed?: string;
}

/** Raw peer replies of one transaction (multi-line replies joined with `\n`, as nodemailer gives them). */
export interface TransactionReplies {
  /** The RCPT reply per wire address, for every RCPT whose reply arrived (after a resend without CONNEG, that one's). */
  readonly rcpt: ReadonlyMap<string, string>;
  /** The reply to each RCPT that carried CONNEG (before any resend without it). */
  readonly query?: ReadonlyMap<string, string>;
  /** The final reply after the dot, when the transaction completed. */
  readonly data?: string;
  /** Present when verdicts were asked (`Transaction.verdicts`). */
  readonly afterData?: AfterData;
  /**
   * LMTP: the reply after the data of each recipient accepted at RCPT (wire
   * address → raw reply), as far as they were read; present once the data was
   * sent. A recipient missing here got no reply (the connection ended first).
   */
  readonly lmtp?: ReadonlyMap<string, string>;
  readonly failure?: ClientFailure;
  /** Set when nodemailer did not behave as the overrides expect (its internals moved): log it loudly. */
  readonly drift?: string;
}

/** A CONNEG probe (A3): `MAIL FROM:<>`, RCPTs with CONNEG, never DATA. */
export interface ProbeRequest {
  readonly mailParams: readonly string[];
  readonly recipients: readonly { readonly address: string; readonly params: readonly string[] }[];
}

export interface ProbeReplies {
  /** The reply to MAIL FROM:<>, when it arrived. */
  readonly mail?: string;
  /** The reply to each RCPT, by wire address. */
  readonly rcpt: ReadonlyMap<string, string>;
  /** Why the probe ended before every reply was read. */
  readonly failure?: ClientFailure;
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

/** The basic code of a raw reply (0 when there is none). */
const replyCode = (str: string): number => Number(str.slice(0, 3)) || 0;

const keyword = (param: string): string => param.split('=')[0]!.toUpperCase();
const isConneg = (param: string): boolean => keyword(param) === CONNEG_PARAM;

const oneLine = (raw: string): string => raw.replace(/\s+/g, ' ').trim().slice(0, 200);

/** The recipient a per-recipient reply names: `<addr>` first in its text (A4), or Exim's `R=<addr>` (A4b). */
function namedAddress(r: Reply): string | undefined {
  const text = r.lines[0] ?? '';
  return (/^<([^<>]*)>/.exec(text) ?? /\bR=<([^<>]*)>/.exec(text))?.[1];
}

/** Why a line of the 353 sequence cannot be recipient `rcpt`'s verdict (undefined when it can). */
function lineProblem(line: string, rcpt: string, position: number): string | undefined {
  const r = parseReply(line);
  const where = `line ${position + 1} after 353`;
  if (!r) return `${where} is not a reply: ${oneLine(line)}`;
  if (r.code >= 300 && r.code < 400) return `${where} has code ${r.code}`;
  const named = namedAddress(r);
  if (named !== undefined && named.toLowerCase() !== rcpt.toLowerCase()) return `${where} names <${named}>, expected <${rcpt}>`;
  return undefined;
}

/** Appends params to a `MAIL FROM:<…> …` line, skipping keywords already on it. */
export function appendMailParams(line: string, params: readonly string[]): string {
  const close = line.indexOf('>');
  const present = new Set(
    line
      .slice(close + 1)
      .split(' ')
      .filter(Boolean)
      .map(keyword),
  );
  const extra = params.filter((p) => !present.has(keyword(p)));
  return extra.length > 0 ? `${line} ${extra.join(' ')}` : line;
}

interface MutableAfterData {
  readonly mode: Verdicts;
  readonly deferred: string[];
  sequence: boolean;
  itemised: readonly string[];
  readonly lines: Map<string, string>;
  final?: string;
  malformed?: string;
}

/** The transaction in progress: what the overrides need and what they record. */
interface InFlight {
  readonly params: ReadonlyMap<string, readonly string[]>;
  readonly rcpt: Map<string, string>;
  readonly query: Map<string, string>;
  /** Recipients accepted at RCPT (2xx, or 352 under INLINE-DSN), in reply order = the server's order. */
  readonly accepted: string[];
  readonly afterData?: MutableAfterData;
  /** We send the RCPTs in one write ourselves (PIPELINING hidden from nodemailer so DATA waits for their replies). */
  batch: boolean;
  /** An override found nodemailer not as expected (see TransactionReplies.drift). */
  drift?: string;
  /** LMTP: the per-recipient replies after the data, once the data was sent. */
  lmtp?: Map<string, string>;
}

export class RelayClient extends SMTPConnection {
  // Inherited runtime fields nodemailer sets in its constructor; `declare` types them without re-defining them.
  declare _responseActions: ResponseAction[];
  declare _recipientQueue: string[];
  declare _ehloLines: string[] | undefined;
  declare _supportedExtensions: string[];
  declare _envelope: NodemailerEnvelope | false;

  /** MAIL parameters for the transaction in progress, consumed by the next `MAIL FROM:` line. */
  private pendingMailParams: readonly string[] | undefined;
  private mailLineSent = false;
  private current: InFlight | undefined;
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
      lmtp: opts.lmtp === true,
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
   * offers PIPELINING; with a CONNEG query, DATA waits for the RCPT replies), and
   * reads the 353 sequence when verdicts were asked. Never rejects: the outcome is
   * in the replies.
   */
  transaction(tx: Transaction): Promise<TransactionReplies> {
    return new Promise((resolve) => {
      const cur: InFlight = {
        params: new Map(tx.recipients.map((r) => [r.address, r.params])),
        rcpt: new Map(),
        query: new Map(),
        accepted: [],
        batch: false,
        ...(tx.verdicts && { afterData: { mode: tx.verdicts, deferred: [], sequence: false, itemised: [], lines: new Map() } }),
      };
      let settled = false;
      const finish = (r: { data?: string; failure?: ClientFailure; drift?: string }): void => {
        if (settled) return;
        settled = true;
        this.off('end', onEnd);
        this.pendingMailParams = undefined;
        if (this.current === cur) this.current = undefined;
        const ad = cur.afterData;
        resolve({
          rcpt: cur.rcpt,
          ...(cur.query.size > 0 && { query: cur.query }),
          ...(ad && {
            afterData: {
              mode: ad.mode,
              deferred: ad.deferred,
              sequence: ad.sequence,
              itemised: ad.itemised,
              lines: ad.lines,
              ...(ad.final !== undefined && { final: ad.final }),
              ...(ad.malformed !== undefined && { malformed: ad.malformed }),
            },
          }),
          ...(cur.drift !== undefined && { drift: cur.drift }),
          ...(cur.lmtp && { lmtp: cur.lmtp }),
          ...r,
        });
      };
      // nodemailer emits 'end' from close() just before it fails the send in flight
      // (with the 421 reply, say): let the callback's more precise outcome come first.
      const onEnd = (): void =>
        void setImmediate(() => {
          const err = this.lastError ?? Object.assign(new Error('connection closed'), { code: 'ECONNECTION' });
          finish({ failure: describe(err, stageOf(err), true) });
        });
      if (!this.usable) {
        finish({ failure: describe(Object.assign(new Error('connection is closed'), { code: 'ECONNECTION' }), 'session', true) });
        return;
      }
      this.once('end', onEnd);
      this.current = cur;
      this.pendingMailParams = tx.mailParams;
      this.mailLineSent = false;
      this.lastError = undefined;
      // A3: a refused CONNEG parameter means sending that RCPT again, before DATA. nodemailer
      // decides whether to pipeline DATA with the envelope from _supportedExtensions, read
      // synchronously in _setEnvelope: hide PIPELINING from it for this one call, and send the
      // RCPTs in one write ourselves (_sendRcpt), so only DATA waits for their replies.
      const ext = this._supportedExtensions;
      cur.batch = tx.recipients.some((r) => r.params.some(isConneg)) && ext.includes('PIPELINING');
      if (cur.batch) ext.splice(ext.indexOf('PIPELINING'), 1);
      try {
        this.send({ from: tx.from, to: tx.recipients.map((r) => r.address) }, tx.body, (err, info) => {
          if (err) return finish({ failure: describe(err, stageOf(err), true) });
          const missing = tx.recipients.filter((r) => !cur.rcpt.has(r.address)).map((r) => r.address);
          const drift = missing.length > 0 ? `nodemailer internals moved: no RCPT reply recorded for ${missing.join(', ')} (_sendRcpt bypassed?)` : undefined;
          finish({ data: info.response, ...(drift && { drift }) });
        });
      } finally {
        if (cur.batch) ext.push('PIPELINING');
      }
      // nodemailer writes the MAIL line synchronously inside send(); if it did not
      // pass through our _sendCommand, our parameters were not sent: stop loudly.
      let drift: string | undefined;
      if (!this.mailLineSent) drift = 'nodemailer internals moved: MAIL FROM did not pass through _sendCommand';
      else if (cur.batch && this._envelope && this._envelope.pipelined !== false) drift = 'nodemailer internals moved: hiding PIPELINING from _setEnvelope did not stop it pipelining DATA';
      if (!settled && drift) {
        const err = Object.assign(new Error(drift), { code: 'EINTERNAL' });
        this.close();
        finish({ failure: describe(err, 'session', true) });
      }
    });
  }

  /**
   * A CONNEG probe (A3): `MAIL FROM:<>`, one RCPT per recipient (pipelined when
   * offered), and no DATA; the caller ends it with RSET or QUIT. A 501/504/555 to a
   * RCPT with CONNEG is answered as A3 says for any client: the RCPT again without
   * the parameter (its reply is not recorded: the query has failed either way).
   * Never rejects; after `timeoutMs` without every reply the connection is closed.
   */
  probe(req: ProbeRequest, timeoutMs: number): Promise<ProbeReplies> {
    return new Promise((resolve) => {
      const rcpt = new Map<string, string>();
      let mail: string | undefined;
      let settled = false;
      const finish = (failure?: ClientFailure): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.off('end', onEnd);
        resolve({ rcpt, ...(mail !== undefined && { mail }), ...(failure && { failure }) });
      };
      const onEnd = (): void =>
        void setImmediate(() => finish(describe(this.lastError ?? Object.assign(new Error('connection closed'), { code: 'ECONNECTION' }), 'session', true)));
      const timer = setTimeout(() => {
        this.lastError = Object.assign(new Error(`no reply to the CONNEG probe within ${timeoutMs} ms`), { code: 'ETIMEDOUT', timeoutType: 'SOCKET_TIMEOUT' as const });
        this.close();
      }, timeoutMs);
      if (!this.usable || req.recipients.length === 0) {
        finish(req.recipients.length === 0 ? undefined : describe(Object.assign(new Error('connection is closed'), { code: 'ECONNECTION' }), 'session', true));
        return;
      }
      this.once('end', onEnd);
      this.lastError = undefined;
      const pipelined = this._supportedExtensions.includes('PIPELINING');
      // Replies still to come; the probe is over when none is and every RCPT went out.
      let pending = 0;
      let next = 0;
      const settle = (): void => {
        if (pending === 0 && next === req.recipients.length) finish();
      };
      const command = (line: string, onReply: (str: string) => void): void => {
        pending++;
        this._responseActions.push((str: string) => {
          pending--;
          onReply(str);
          settle();
        });
        this._sendCommand(line);
      };
      const rcptLine = (address: string, params: readonly string[]): string => `RCPT TO:<${address}>${params.length > 0 ? ' ' + params.join(' ') : ''}`;
      const sendRcpt = (): void => {
        const r = req.recipients[next++]!;
        // Without PIPELINING, one command at a time: the next RCPT after this one's last reply.
        const onward = (): void => {
          if (!pipelined && next < req.recipients.length) sendRcpt();
        };
        command(rcptLine(r.address, r.params), (str) => {
          rcpt.set(r.address, str);
          if (r.params.some(isConneg) && refusesConneg(replyCode(str))) {
            command(rcptLine(r.address, r.params.filter((p) => !isConneg(p))), onward);
          } else onward();
        });
      };
      const socket = this._socket || undefined;
      if (pipelined) socket?.cork();
      command(`MAIL FROM:<>${req.mailParams.length > 0 ? ' ' + req.mailParams.join(' ') : ''}`, (str) => {
        mail = str;
        if (pipelined) return; // the RCPT replies (503s, if MAIL was refused) follow
        if (replyCode(str) >= 200 && replyCode(str) < 300) sendRcpt();
        else next = req.recipients.length; // nothing more to send: settle() ends the probe
      });
      if (pipelined) {
        while (next < req.recipients.length) sendRcpt();
        socket?.uncork();
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

  /**
   * Stock `_sendRcpt`, but with this recipient's own parameters and its raw reply
   * recorded; in batch mode (a CONNEG query) it also sends the RCPTs still queued,
   * in one write, so their replies come back together.
   */
  _sendRcpt(recipient: string, callback: EnvelopeCallback): void {
    const cur = this.current ?? { params: new Map(), rcpt: new Map(), query: new Map(), accepted: [], batch: false };
    const env = this._envelope;
    const socket = this._socket || undefined;
    if (cur.batch) socket?.cork();
    this.queueRcpt(cur, recipient, cur.params.get(recipient) ?? [], callback, false);
    if (cur.batch && env) {
      while (env.rcptQueue.length > 0) {
        const next = env.rcptQueue.shift()!;
        this.queueRcpt(cur, next, cur.params.get(next) ?? [], callback, false);
      }
    }
    if (cur.batch) socket?.uncork();
  }

  /** Stock `_actionDATA`, except that only 354 lets the data go (see the file comment). */
  _actionDATA(str: string, callback: EnvelopeCallback): void {
    const code = replyCode(str);
    if (code !== 354 && code >= 200 && code < 400) {
      this.lastError = Object.assign(new Error(`unexpected reply to DATA: ${oneLine(str)}`), { code: 'EPROTOCOL' });
      this.close();
      return;
    }
    base._actionDATA!.call(this, str, callback);
  }

  /**
   * `_createSendStream`, with the reply to the dot read as A4/A4b say when
   * verdicts were asked, and over LMTP each recipient's reply recorded.
   */
  _createSendStream(callback: StreamCallback): unknown {
    const before = this._responseActions.length;
    const accepted = this.opts.lmtp && this._envelope ? [...this._envelope.accepted] : [];
    const stream = base._createSendStream!.call(this, callback);
    speedUpDataStream(stream);
    const cur = this.current;
    if (this.opts.lmtp) {
      if (cur) this.recordLmtpReplies(cur, before, accepted);
      return stream;
    }
    if (!cur?.afterData) return stream;
    if (this._responseActions.length !== before + 1) {
      // nodemailer queued something else than one action for the reply to the dot: leave it
      // alone; a 353 then fails the whole transaction (a temporary failure for everyone).
      cur.drift = 'nodemailer internals moved: _createSendStream did not queue exactly one reply action; per-recipient verdicts cannot be read';
      return stream;
    }
    const stock = this._responseActions.pop()!;
    this._responseActions.push((str) => this.readReplyToDot(cur, str, stock));
    return stream;
  }

  // ---- helpers of the overrides ----

  /**
   * LMTP: nodemailer queued one action per accepted recipient (in RCPT reply
   * order); each is wrapped to record that recipient's reply, then run as is.
   */
  private recordLmtpReplies(cur: InFlight, before: number, accepted: readonly string[]): void {
    const queued = this._responseActions.length - before;
    if (queued !== accepted.length) {
      // Without one action per recipient nothing tells whose reply is whose: no LMTP map,
      // so deliver.ts treats every recipient as unanswered (temporary), never as delivered.
      cur.drift = `nodemailer internals moved: _createSendStream queued ${queued} reply actions for ${accepted.length} LMTP recipients`;
      return;
    }
    const lines = new Map<string, string>();
    cur.lmtp = lines;
    const stock = this._responseActions.splice(before, queued);
    stock.forEach((action, i) => {
      const recipient = accepted[i]!;
      this._responseActions.push((str) => {
        lines.set(recipient, str);
        action.call(this, str);
      });
    });
  }

  /** Sends one RCPT and queues the action for its reply (see the file comment for what it handles). */
  private queueRcpt(cur: InFlight, recipient: string, params: readonly string[], callback: EnvelopeCallback, resend: boolean): void {
    if (!resend) this._recipientQueue.push(recipient);
    const asks = params.some(isConneg);
    this._responseActions.push((str: string) => {
      const code = replyCode(str);
      if (asks) cur.query.set(recipient, str);
      if (asks && refusesConneg(code) && !(this._envelope && this._envelope.pipelined)) {
        // A3: the parameter was refused, not the recipient: the same RCPT again without it.
        // Its reply now comes after those already on the way: keep nodemailer's queue in step.
        const q = this._recipientQueue;
        const i = q.indexOf(recipient);
        if (i >= 0) q.push(...q.splice(i, 1));
        this.queueRcpt(cur, recipient, params.filter((p) => !isConneg(p)), callback, true);
        return;
      }
      cur.rcpt.set(recipient, str);
      if (code === 352 && cur.afterData?.mode === 'INLINE-DSN') {
        // A4: accepted, verdict after the data. To nodemailer that is an acceptance.
        cur.accepted.push(recipient);
        cur.afterData.deferred.push(recipient);
        base._actionRCPT!.call(this, `250${str.slice(3)}`, callback);
        return;
      }
      if (code >= 200 && code < 300) cur.accepted.push(recipient);
      base._actionRCPT!.call(this, str, callback);
    });
    this._sendCommand(`RCPT TO:<${recipient}>${params.length > 0 ? ' ' + params.join(' ') : ''}`);
  }

  /**
   * The reply to the final dot when verdicts were asked: anything but 353 is one
   * reply standing for every recipient (handed to nodemailer's own action); 353 is
   * followed by one line per itemised recipient, by position, then the final reply.
   */
  private readReplyToDot(cur: InFlight, str: string, stock: ResponseAction): void {
    const ad = cur.afterData!;
    if (replyCode(str) !== 353) return stock.call(this, str);
    ad.sequence = true;
    const itemised = ad.mode === 'INLINE-DSN' ? [...ad.deferred] : [...cur.accepted];
    ad.itemised = itemised;
    const ours = new Set(cur.accepted.map((a) => a.toLowerCase()));
    for (const [i, rcpt] of itemised.entries()) {
      this._responseActions.push((line: string) => {
        const problem = lineProblem(line, rcpt, i);
        if (problem) return this.abandon(ad, problem);
        ad.lines.set(rcpt, line);
      });
    }
    this._responseActions.push((final: string) => {
      const r = parseReply(final);
      if (!r || (r.code >= 300 && r.code < 400)) return this.abandon(ad, `the final reply after 353 is not a final reply: ${oneLine(final)}`);
      const named = namedAddress(r);
      if (named !== undefined && ours.has(named.toLowerCase())) {
        return this.abandon(ad, `more per-recipient lines than the ${itemised.length} expected (one more for <${named}>)`);
      }
      ad.final = final;
      stock.call(this, final);
    });
  }

  /** A malformed 353 sequence: nothing more on this connection can be trusted; close it. */
  private abandon(ad: MutableAfterData, reason: string): void {
    ad.malformed = reason;
    this.lastError = Object.assign(new Error(`malformed reply sequence after DATA: ${reason}`), { code: 'EPROTOCOL' });
    this.close();
  }
}
