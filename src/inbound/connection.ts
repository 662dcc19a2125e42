/**
 * RelaySMTPConnection — the one extension of smtp-server (layout.md §5, style
 * rule 6). We subclass smtp-server 3.21.6's SMTPConnection because, as shipped:
 *
 *  1. its EHLO keyword list is a fixed array with no option to add keywords
 *     (go-smtp PR #303 asked for the same hook and was declined); we add
 *     CONNEG, DRUCOF, INLINE-DSN and PRDR (protocols.md A1), never CHUNKING;
 *  2. it guesses the enhanced status code from the basic code (550 → 5.1.1,
 *     the 250 after DATA → 2.6.0) and prepends the guess to every reply, so a
 *     reply carrying our own code would get a wrong or a second one. Here every
 *     reply we choose is a `Reply` printed by `smtp/reply-format.ts`, verbatim —
 *     multi-line RCPT replies with CONNEG capability lines (A3) included;
 *  3. it writes only while the socket is fully open, so a client that pipelines
 *     QUIT after the final dot and half-closes (Exim always does) loses the 250
 *     and the 221 whenever onData is asynchronous (any Redis write), and Exim
 *     defers a message we have already queued (libraries.md §1). Here replies
 *     are written while the socket is `writeOnly` too (with the server's
 *     `allowHalfOpen: true`), and the session closes once the client's FIN has
 *     arrived and every command it sent has been answered;
 *  4. a RCPT hook can only answer 250 or an error, and on an error the library
 *     does not add the recipient: INLINE-DSN's `352` (A4) is sent as an "error"
 *     whose recipient we add to the library's list ourselves (libraries.md §1);
 *  5. after the data it sends one reply per element of onData's array but
 *     prints each with its own guessed code; here a `Reply[]` (the 353 sequence
 *     of INLINE-DSN or PRDR, A4/A4b) goes out verbatim, all of it before the
 *     library moves on to a pipelined QUIT — also to a client that half-closed
 *     (point 3).
 *
 * Also ours rather than the library's: MAIL/RCPT parameters parsed from the raw
 * line (smtp/params.ts; smtp-server decodes xtext byte-wise and lets unknown
 * parameters through; it is handed the address alone), the maxConnections reply
 * and the per-client connection limit, the request deadline against clients that
 * trickle bytes (slow-loris), the AUTH brute-force gate, reply lines cut to 512
 * octets, and draining at shutdown.
 *
 * These overrides touch underscore internals (`send`, `_createParser`,
 * `_onCommand`, `_setListeners`, `_socket`, the `handler_*` methods), which is
 * why smtp-server is pinned to an exact version and why the medium tests
 * (test/medium/inbound-*.test.ts) drive each override over a real socket.
 */
import type { SMTPServerAddress, SMTPServerDataResult, SMTPServerError, SMTPServerSession } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { reply, type Reply } from '../model/reply.ts';
import { parseMailParams, parseRcptParams, withoutParams, type MailParams, type ParamPolicy, type RcptParams } from '../smtp/params.ts';
import { formatTextLines } from '../smtp/reply-format.ts';
import { status } from '../smtp/status.ts';

/** The keywords every session advertises first, in this order; then SIZE, STARTTLS, AUTH and the extras. */
export const STANDARD_EHLO_KEYWORDS = ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'DSN', 'ENHANCEDSTATUSCODES'] as const;

/** What a connection needs to know about the relay's configuration. */
export interface ConnectionSettings {
  /** Bytes; advertised as `SIZE n` (0 = no fixed maximum, RFC 1870). */
  readonly maxMessageSize: number;
  /** Simultaneous sessions; the next one is answered `421 4.4.5` and closed. */
  readonly maxConnections: number;
  /**
   * Simultaneous sessions from one client address (anvil's connection count
   * limit); the next one is answered `421 4.7.0` and closed. 0 = no limit.
   */
  readonly maxConnectionsPerClient: number;
  /**
   * Time a client has to send a whole command line once it began it (Postfix's
   * smtpd_per_request_deadline), and for the message data from its first byte,
   * plus one second per `minDataRate` bytes received; `421 4.4.2` after it.
   * Without it a client trickling a byte just inside the idle timeout holds the
   * session forever. 0 = no deadline (the idle timeout alone).
   */
  readonly requestDeadlineMs: number;
  /** Bytes per second the deadline of the message data grows by (Postfix's smtpd_min_data_rate). */
  readonly minDataRate: number;
  /**
   * Asked before each AUTH (the brute-force limits, auth-limit.ts): a Reply
   * refuses it (`454 4.7.0`, or `421 4.7.0` that ends the session), undefined lets it run.
   */
  readonly authGate?: (connection: RelaySMTPConnection) => Reply | undefined;
  /** STARTTLS is offered (a key and certificate are configured). */
  readonly tls: boolean;
  /** AUTH PLAIN LOGIN is offered; `allowInsecure` lets it run before STARTTLS. */
  readonly auth: false | { readonly allowInsecure: boolean };
  /** Extension keywords advertised after the standard ones (CONNEG, DRUCOF, INLINE-DSN, PRDR: those switched on). */
  readonly extraEhloKeywords: readonly string[];
  /** Which MAIL/RCPT parameters are accepted (those advertised). */
  readonly paramPolicy: ParamPolicy;
  /** True once the listener is shutting down: sessions end at their next idle moment. */
  readonly isDraining: () => boolean;
}

const ENHANCED_PREFIX = /^([245])\.\d{1,3}\.\d{1,3}(?=\s|$)/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\x00-\x1f\x7f-\x9f]/g;
/** RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF; `ddd-` takes 4. */
const MAX_REPLY_TEXT_OCTETS = 512 - 4 - 2;

/** Cuts a reply line's text to fit 512 octets on the wire (on a character boundary, marked `...`). */
export function clipReplyText(text: string): string {
  if (Buffer.byteLength(text, 'utf8') <= MAX_REPLY_TEXT_OCTETS) return text;
  let out = '';
  let octets = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (octets + n > MAX_REPLY_TEXT_OCTETS - 3) break;
    out += ch;
    octets += n;
  }
  return `${out}...`;
}

const bySession = new WeakMap<SMTPServerSession, RelaySMTPConnection>();

/** The connection a session object belongs to (the server hooks get only the session). */
export function connectionOf(session: SMTPServerSession): RelaySMTPConnection {
  const c = bySession.get(session);
  if (!c) throw new Error(`no connection for session ${session.id}`);
  return c;
}

/** An Error for smtp-server's callbacks that carries the code and, as fallback, our text. */
export function replyError(r: Reply): SMTPServerError {
  return Object.assign(new Error(formatTextLines(r).join(' ')), { responseCode: r.code });
}

export class RelaySMTPConnection extends SMTPConnection {
  settings!: ConnectionSettings;
  /** The replies to print, verbatim, for the library's next replies with the same codes, in order. */
  private pendingReplies: Reply[] = [];
  /** Parameters of the MAIL / RCPT command in flight, parsed from the raw line. */
  private pendingMail: MailParams | undefined;
  private pendingRcpt: RcptParams | undefined;
  /** Set while handler_EHLO runs, so its 250 gets our keyword list. */
  private inEhlo = false;
  /** AUTH attempts in this session that failed or were refused (the brute-force limit). */
  authFailures = 0;
  /** The client's request in progress (a command line, or the message data) is due by then (epoch ms). */
  private requestDeadline: number | undefined;
  /** The request in progress is message data (bytes arrived while the parser was in data mode). */
  private requestIsData = false;
  private requestTimer: NodeJS.Timeout | undefined;

  /** Attaches the settings; called by the server right after construction. */
  attach(settings: ConnectionSettings): this {
    this.settings = settings;
    bySession.set(this.session, this);
    return this;
  }

  // ---- replies -----------------------------------------------------------

  /** Writes a Reply now, exactly as reply-format prints it. A 421 closes the session. */
  sendReply(r: Reply): void {
    this.pendingReplies = [];
    this.writeReply(r.code, formatTextLines(r));
    if (r.code === 421) this.close();
  }

  /**
   * Makes the library's next reply (sent from inside smtp-server once a hook
   * calls back) come out as `r`, verbatim, when its code is `r.code`. Any other
   * reply in between cancels it, so it can never leak onto a later command.
   */
  respondNext(r: Reply): void {
    this.pendingReplies = [r];
  }

  /** Answers a hook: `r` goes out verbatim; an error reply is also passed as the callback's error. */
  answer(r: Reply, cb: (err?: SMTPServerError | null) => void): void {
    this.respondNext(r);
    if (r.code >= 400) cb(replyError(r));
    else cb();
  }

  /**
   * Answers RCPT with a 3xx (INLINE-DSN's `352`, A4): the recipient has joined
   * the transaction, its verdict comes after the data. The library takes any
   * non-250 answer as a refusal and leaves the recipient out of its list (DATA
   * would then say 503), so it is added here (libraries.md §1, the 352 caveat).
   */
  answerIntermediate(r: Reply, address: SMTPServerAddress, cb: (err?: SMTPServerError | null) => void): void {
    this.session.envelope.rcptTo.push(address);
    this.respondNext(r);
    cb(replyError(r));
  }

  /**
   * Answers the data with one reply or a sequence (353, one line per recipient,
   * the final reply: A4, A4b). The library writes one reply per element of an
   * array, synchronously, before it resets the transaction and reads the next
   * (pipelined) command; each element comes out as our Reply, verbatim.
   */
  answerData(replies: readonly Reply[], cb: (err?: Error | null, message?: string | SMTPServerDataResult[]) => void): void {
    if (replies.length === 1) return this.answer(replies[0]!, cb);
    this.pendingReplies = [...replies];
    cb(null, replies.map(replyError));
  }

  /**
   * The library's single write site, replaced. Our pending Reply wins; text that
   * already starts with an enhanced code gets no second one; anything else keeps
   * smtp-server's default code. Writes also while the client has half-closed
   * (`writeOnly`): it only stopped sending, it still reads.
   */
  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const pending = this.pendingReplies.shift();
    if (pending && pending.code === code) {
      this.writeReply(code, formatTextLines(pending));
    } else {
      this.pendingReplies = [];
      let lines = Array.isArray(data) ? data.map(String) : data === undefined || data === null || data === '' ? [] : [String(data)];
      if (this.inEhlo && code === 250 && Array.isArray(data)) lines = [lines[0] ?? this.name, ...this.ehloKeywords()];
      const cls = String(Math.floor(code / 100));
      const own = lines.length === 1 && ENHANCED_PREFIX.exec(lines[0]!)?.[1] === cls;
      // smtp-server gives replies in the context of HELO/EHLO/LHLO no enhanced code
      // (RFC 2034 §3 exempts HELO/EHLO); we are no LMTP server, so LHLO is just an
      // unknown command and its 500 gets one.
      const enhanced = own ? '' : this._getEnhancedStatusCode(code, context === 'LHLO' ? undefined : context);
      const texts = lines.length === 0 ? [enhanced] : lines.map((l) => (enhanced ? `${enhanced} ${l}` : l));
      this.writeReply(code, texts);
    }
    // smtp-server's send closes on 421 even when the write was suppressed.
    if (code === 421) this.close();
  }

  private writeReply(code: number, texts: readonly string[]): void {
    const clean = texts.map((t) => clipReplyText(t.replace(CONTROL_CHARS, ' ')));
    let payload = clean.map((t, i) => `${code}${i < clean.length - 1 ? '-' : ' '}${t}`.trimEnd()).join('\r\n');
    if (code === 334 && payload === '334') payload = '334 '; // RFC 4954 §4: "334" SP [base64]
    if (code >= 400) this.session.error = payload;
    const socket = this._socket;
    // Never while a TLS handshake runs on the raw socket (it would corrupt it);
    // 'writeOnly' is a client that half-closed after pipelining its last commands.
    if (!this._upgrading && !socket.destroyed && (socket.readyState === 'open' || socket.readyState === 'writeOnly')) {
      socket.write(payload + '\r\n');
    }
  }

  // ---- EHLO ----------------------------------------------------------------

  /** The EHLO keyword lines after the greeting line. */
  ehloKeywords(): string[] {
    const s = this.settings;
    const kw: string[] = [...STANDARD_EHLO_KEYWORDS, `SIZE ${s.maxMessageSize}`];
    if (s.tls && !this.secure) kw.push('STARTTLS');
    if (s.auth && !this.session.user && (this.secure || s.auth.allowInsecure)) kw.push('AUTH PLAIN LOGIN');
    kw.push(...s.extraEhloKeywords);
    return kw;
  }

  override handler_EHLO(command: Buffer, callback: () => void): void {
    this.inEhlo = true;
    try {
      super.handler_EHLO(command, callback);
    } finally {
      this.inEhlo = false;
    }
  }

  // ---- AUTH ----------------------------------------------------------------

  override handler_AUTH(command: Buffer, callback: () => void): void {
    const auth = this.settings.auth;
    if (auth && !this.secure && !auth.allowInsecure) {
      // RFC 4954 §6 / RFC 3207: 538 5.7.11 encryption required.
      this.sendReply(reply(538, 7, 11, 'encryption required: issue STARTTLS first'));
      return callback();
    }
    if (auth && !this.session.user) {
      const refused = this.settings.authGate?.(this);
      if (refused) {
        this.sendReply(refused);
        return callback();
      }
    }
    super.handler_AUTH(command, callback);
  }

  // ---- MAIL / RCPT parameters ----------------------------------------------

  /**
   * Parses the parameters from the raw line (smtp-server decodes xtext as latin1
   * and accepts unknown parameters); a failure is answered here with its exact
   * Reply, success is stashed for onMailFrom and the library parses the address.
   */
  override handler_MAIL(command: Buffer, callback: () => void): void {
    this.pendingMail = undefined;
    const line = command.toString();
    const parsed = parseMailParams(line, this.settings.paramPolicy);
    if (!parsed.ok) {
      this.sendReply(parsed.reply);
      return callback();
    }
    this.pendingMail = parsed.params;
    // The library parses the address only: the parameters are ours (smtp/params.ts).
    super.handler_MAIL(Buffer.from(withoutParams(line)), callback);
  }

  override handler_RCPT(command: Buffer, callback: () => void): void {
    this.pendingRcpt = undefined;
    const line = command.toString();
    const parsed = parseRcptParams(line, this.settings.paramPolicy);
    if (!parsed.ok) {
      this.sendReply(parsed.reply);
      return callback();
    }
    this.pendingRcpt = parsed.params;
    super.handler_RCPT(Buffer.from(withoutParams(line)), callback);
  }

  /** The parameters of the MAIL command being handled (once). */
  takeMailParams(): MailParams {
    const p = this.pendingMail ?? { smtpUtf8: false };
    this.pendingMail = undefined;
    return p;
  }

  /** The parameters of the RCPT command being handled (once). */
  takeRcptParams(): RcptParams {
    const p = this.pendingRcpt ?? {};
    this.pendingRcpt = undefined;
    return p;
  }

  // ---- limits, shutdown, half-close ---------------------------------------

  /** maxConnections, with our reply (the library's is `421 4.4.2 … Too many connected clients`). */
  override init(): void {
    const max = this.settings.maxConnections;
    if (max > 0 && this._server.connections.size > max) {
      this._setListeners(() => this.sendReply(status.tooManyConnections()));
      return;
    }
    // One client (a flood from one address) never takes every session: the others still get in.
    const perClient = this.settings.maxConnectionsPerClient;
    if (perClient > 0) {
      let fromHere = 0;
      for (const c of this._server.connections) if (c.remoteAddress === this.remoteAddress) fromHere++;
      if (fromHere > perClient) {
        this._setListeners(() => this.sendReply(status.tooManyConnectionsFromClient()));
        return;
      }
    }
    super.init();
  }

  /** A mail transaction is under way: MAIL accepted, a message being received or decided on. */
  inTransaction(): boolean {
    return Boolean(this.session.envelope?.mailFrom) || Boolean(this._dataStream) || this._handlerPending;
  }

  /** Ends the session now with `421 4.4.2` (shutdown). */
  shutDown(): void {
    if (!this._closing && !this._closed) this.sendReply(status.shuttingDown());
  }

  /** While draining, a session between transactions is ended at its next command (QUIT still gets 221). */
  override _onCommand(command: Buffer, callback?: () => void): void {
    // A whole command line arrived: the client's request is complete.
    this.endRequest();
    if (this.settings.isDraining() && this._ready && !this._nextHandler && !this.inTransaction()) {
      const verb = command.toString().trim().split(/\s+/)[0]?.toUpperCase();
      if (verb !== 'QUIT') return this.shutDown();
    }
    super._onCommand(command, callback);
  }

  /**
   * The parser ends when the client's FIN arrived and every command it sent has
   * been answered (a pending write holds 'finish' back). Then the session is over:
   * close our side too, so a client that leaves without QUIT does not hold the
   * socket until the idle timeout (with allowHalfOpen nothing else would).
   * Called from the base constructor: only uses `this` inside the listener.
   */
  override _createParser(): ReturnType<SMTPConnection['_createParser']> {
    const parser = super._createParser();
    parser.once('finish', () => this.onClientFinished(parser));
    // Every byte from the client (plain, or after STARTTLS, which gets a new parser)
    // is written into the parser by the socket's pipe: the request deadline sees it
    // arrive, before the parser queues or parses it.
    const write = parser.write.bind(parser) as (...args: unknown[]) => boolean;
    (parser as unknown as { write: (...args: unknown[]) => boolean }).write = (...args: unknown[]) => {
      const chunk = args[0];
      if (this._parser === parser) this.onClientBytes(typeof chunk === 'string' || Buffer.isBuffer(chunk) ? chunk.length : 0);
      return write(...args);
    };
    return parser;
  }

  /** The socket is gone: tell the server (it tracks live sockets for a bounded shutdown). */
  override _onClose(): void {
    this.endRequest();
    super._onClose();
    this.emit('socket-closed');
  }

  // ---- request deadline (slow clients) --------------------------------------

  /**
   * Bytes arrived: the first ones of a request start its deadline; message data
   * extends it by its size at `minDataRate`.
   */
  private onClientBytes(bytes: number): void {
    const s = this.settings as ConnectionSettings | undefined;
    if (!s || s.requestDeadlineMs <= 0 || this._closing || this._closed) return;
    const now = Date.now();
    const inData = this.parserInData();
    if (this.requestDeadline === undefined) {
      this.requestDeadline = now + s.requestDeadlineMs;
      this.requestIsData = inData;
    }
    if (inData) {
      this.requestIsData = true;
      if (s.minDataRate > 0) this.requestDeadline += (bytes * 1000) / s.minDataRate;
    }
    this.armRequestTimer(now);
  }

  private parserInData(): boolean {
    return Boolean(this._parser && this._parser._dataMode);
  }

  private armRequestTimer(now: number): void {
    if (this.requestTimer !== undefined || this.requestDeadline === undefined) return;
    this.requestTimer = setTimeout(() => this.onRequestTimer(), Math.max(0, this.requestDeadline - now));
    this.requestTimer.unref();
  }

  private onRequestTimer(): void {
    this.requestTimer = undefined;
    if (this.requestDeadline === undefined || this._closing || this._closed) return;
    const inData = this.parserInData();
    // Our turn, not the client's: a handler runs (pipelined lines wait for it), or
    // the final dot came and the message is being decided on or was answered.
    if (this._handlerPending || (this.requestIsData && !inData) || (!inData && this._dataStream)) {
      this.endRequest();
      return;
    }
    const now = Date.now();
    if (now < this.requestDeadline) {
      this.armRequestTimer(now);
      return;
    }
    this.endRequest();
    this.emit('request-timeout', { data: inData });
    this.sendReply(status.requestTimeout(inData));
  }

  private endRequest(): void {
    if (this.requestTimer !== undefined) clearTimeout(this.requestTimer);
    this.requestTimer = undefined;
    this.requestDeadline = undefined;
    this.requestIsData = false;
  }

  private onClientFinished(parser: unknown): void {
    if (this._parser !== parser || this._closing || this._closed) return;
    // A last command without CRLF is dispatched at 'finish' and may still be running.
    if (this._handlerPending) {
      setTimeout(() => this.onClientFinished(parser), 20).unref();
      return;
    }
    this.close();
  }
}
