/**
 * One transaction for one group of recipients → a Reply for every recipient
 * (Postfix smtp_proto.c + smtp_trouble.c, made values). Pure parts first: what
 * the hop advertised, the MAIL/RCPT parameters we send (RFC 3461 verbatim
 * pass-on, RFC 6152 BODY, RFC 1870 SIZE, RFC 6531 SMTPUTF8 or A-labels; DRUCOF,
 * CONNEG, INLINE-DSN and PRDR per protocols.md A2–A4b), local refusals, and how
 * raw peer replies — the 353 sequence included — and connection failures become
 * Replies: a recipient whose verdict was not read is never a success. Over
 * LMTP (RFC 2033) each accepted recipient's outcome is its own reply after the
 * data; INLINE-DSN and PRDR are not asked there.
 * `runTransaction` is the only I/O here: it drives one RelayClient.
 */
import net from 'node:net';
import { domainToASCII } from 'node:url';
import { CONNEG_PARAM, queryAnswers, queryFailed } from '../capabilities/conneg-client.ts';
import type { CapabilityAnswer } from '../model/capability.ts';
import type { Envelope } from '../model/envelope.ts';
import type { NextHop } from '../model/delivery.ts';
import type { RecipientState } from '../model/recipient.ts';
import { reply, type Reply } from '../model/reply.ts';
import { encodeXtext } from '../smtp/params.ts';
import { parseReply } from '../smtp/reply-format.ts';
import { status } from '../smtp/status.ts';
import type { AfterData, ClientFailure, RelayClient, Transaction, TransactionReplies, Verdicts } from './client.ts';

/** What the caller asks for one recipient beyond relaying it (the DRUCOF decision's output). */
export interface RecipientOptions {
  /** Pass `DRUCOF` on (relay-with-drucof). Sent only to a hop that advertises DRUCOF; to one that does not, the recipient is deferred (451 4.3.3) so the decision is made again. */
  readonly drucof?: boolean;
  /** Ask the hop for this recipient's capabilities (`CONNEG` on its RCPT, A3); answered in `capabilities`. */
  readonly conneg?: boolean;
}

export interface DeliveryRequest {
  readonly hop: NextHop;
  /** mailFrom '' = `<>`; ret, envid (raw xtext + decoded), body, smtpUtf8. */
  readonly envelope: Envelope;
  /** address, notify, orcpt (raw xtext). */
  readonly recipients: readonly RecipientState[];
  /** The stored message, exact bytes (CRLF). */
  readonly body: Buffer;
  /** Per recipient (by RecipientState.address): DRUCOF to pass on, CONNEG to ask. Absent: neither. */
  readonly perRecipient?: ReadonlyMap<string, RecipientOptions>;
}

/** What the hop's EHLO reply offered, as far as the transaction cares. */
export interface HopFeatures {
  /** Upper-cased first word of every EHLO keyword line. */
  readonly keywords: readonly string[];
  readonly dsn: boolean;
  readonly eightBitMime: boolean;
  readonly smtpUtf8: boolean;
  /** Present when SIZE was advertised; 0 = no fixed limit. */
  readonly size?: number;
  /** protocols.md A1. */
  readonly conneg: boolean;
  readonly drucof: boolean;
  readonly inlineDsn: boolean;
  readonly prdr: boolean;
  /** The session is LMTP (the keywords are the LHLO reply's): one reply per recipient after the data. */
  readonly lmtp?: true;
}

export function hopFeatures(ehloLines: readonly string[]): HopFeatures {
  const words = ehloLines.map((l) => l.trim().split(/[\s=]+/));
  const keywords = words.map((w) => (w[0] ?? '').toUpperCase()).filter(Boolean);
  const has = (k: string) => keywords.includes(k);
  const sizeLine = words.find((w) => (w[0] ?? '').toUpperCase() === 'SIZE');
  const size = sizeLine ? Number(sizeLine[1] ?? 0) || 0 : undefined;
  return {
    keywords,
    dsn: has('DSN'),
    eightBitMime: has('8BITMIME'),
    smtpUtf8: has('SMTPUTF8'),
    ...(size !== undefined && { size }),
    conneg: has('CONNEG'),
    drucof: has('DRUCOF'),
    inlineDsn: has('INLINE-DSN'),
    prdr: has('PRDR'),
  };
}

/**
 * How to ask this hop for per-recipient verdicts after the data (A4, A4b):
 * INLINE-DSN whenever offered (preferred), else PRDR for two or more recipients
 * (with one, the single reply is the verdict; Exim does the same), else none.
 */
export function verdictMode(hop: HopFeatures, recipients: number): Verdicts | undefined {
  if (hop.inlineDsn) return 'INLINE-DSN';
  if (hop.prdr && recipients >= 2) return 'PRDR';
  return undefined;
}

const NON_ASCII = /[^\x00-\x7f]/;
const BAD_ADDRESS = /[\r\n<>]/;

/**
 * The address as it goes on the wire to this hop: unchanged to an SMTPUTF8 hop;
 * otherwise with the domain A-labelled (UTS-46), or a Reply when that cannot be
 * done (a non-ASCII local part → 553 5.6.7, "non-ASCII addresses not permitted",
 * registered by RFC 6531).
 */
export function wireAddress(address: string, hopSmtpUtf8: boolean, role: 'sender' | 'recipient'): string | Reply {
  if (BAD_ADDRESS.test(address)) return status.badAddress(`bad ${role} address syntax`);
  if (hopSmtpUtf8 || !NON_ASCII.test(address)) return address;
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  const domain = at < 0 ? '' : address.slice(at + 1);
  if (NON_ASCII.test(local)) {
    return reply(553, 6, 7, `non-ASCII ${role} local part, and the next hop does not support SMTPUTF8`);
  }
  const ascii = domainToASCII(domain);
  if (!ascii) return reply(553, 1, role === 'sender' ? 7 : 2, `${role} domain ${domain} cannot be converted to an A-label`);
  return `${local}@${ascii}`;
}

/** MAIL parameters for this hop: BODY, SMTPUTF8, SIZE, then RET and ENVID verbatim (DSN hops only). */
export function mailParams(envelope: Envelope, hop: HopFeatures, size: number, utf8OnWire: boolean): string[] {
  const out: string[] = [];
  if (envelope.body === '8BITMIME' && hop.eightBitMime) out.push('BODY=8BITMIME');
  if (hop.smtpUtf8 && (envelope.smtpUtf8 || utf8OnWire)) out.push('SMTPUTF8');
  if (hop.size !== undefined) out.push(`SIZE=${size}`);
  if (hop.dsn) {
    if (envelope.ret) out.push(`RET=${envelope.ret}`);
    if (envelope.envid) out.push(`ENVID=${envelope.envid.xtext}`);
  }
  return out;
}

/**
 * RCPT parameters for this hop: the recipient's own NOTIFY (list joined by commas)
 * and ORCPT (raw xtext as received), or ORCPT=rfc822;<xtext of the address> when
 * none arrived (RFC 3461 §4.2) — none of these to a hop without DSN; then `DRUCOF`
 * when asked and the hop advertises DRUCOF, and the bare `CONNEG` (RFC 4141) when
 * asked and the hop advertises CONNEG.
 */
export function rcptParams(r: RecipientState, hop: HopFeatures, opts: RecipientOptions = {}): string[] {
  const out: string[] = [];
  if (hop.dsn) {
    if (r.notify === 'NEVER') out.push('NOTIFY=NEVER');
    else if (r.notify && r.notify.length > 0) out.push(`NOTIFY=${r.notify.join(',')}`);
    out.push(r.orcpt ? `ORCPT=${r.orcpt.addrType};${r.orcpt.address.xtext}` : `ORCPT=rfc822;${encodeXtext(r.address)}`);
  }
  if (opts.drucof && hop.drucof) out.push('DRUCOF');
  if (opts.conneg && hop.conneg) out.push(CONNEG_PARAM);
  return out;
}

/** A4/A2: DRUCOF asked for a hop that does not (or no longer) advertise it: decide again later, never relay it plain. */
export const drucofNotOffered = (): Reply =>
  reply(451, 3, 3, 'the next hop does not advertise DRUCOF (any more); the DRUCOF decision will be made again');

/** A prepared transaction: what to send, and the recipients already answered locally. */
export interface Prepared {
  /** Undefined when nothing is to be sent (everyone answered locally). */
  readonly tx?: Transaction;
  /** Wire address → the request's recipients it stands for (two may share one after A-labelling). */
  readonly wire: ReadonlyMap<string, readonly RecipientState[]>;
  /** Replies decided before talking (by RecipientState.address). */
  readonly local: ReadonlyMap<string, Reply>;
  /** Wire addresses whose RCPT carries DRUCOF. */
  readonly drucof: ReadonlySet<string>;
  /** Wire addresses whose RCPT carries CONNEG (a query). */
  readonly conneg: ReadonlySet<string>;
  /** LMTP: each recipient's outcome is its own reply after the data. */
  readonly lmtp?: true;
}

export function prepare(req: DeliveryRequest, hop: HopFeatures): Prepared {
  const local = new Map<string, Reply>();
  const none: ReadonlySet<string> = new Set();
  const everyone = (r: Reply): Prepared => {
    for (const rcpt of req.recipients) local.set(rcpt.address, r);
    return { wire: new Map(), local, drucof: none, conneg: none };
  };
  if (hop.size !== undefined && hop.size > 0 && req.body.length > hop.size) {
    return everyone(status.messageTooBig(`message size ${req.body.length} exceeds size limit ${hop.size} of the next hop`));
  }
  const from = req.envelope.mailFrom === '' ? '' : wireAddress(req.envelope.mailFrom, hop.smtpUtf8, 'sender');
  if (typeof from !== 'string') return everyone(from);

  const wire = new Map<string, RecipientState[]>();
  for (const r of req.recipients) {
    const w = wireAddress(r.address, hop.smtpUtf8, 'recipient');
    if (typeof w !== 'string') local.set(r.address, w);
    else if (req.perRecipient?.get(r.address)?.drucof && !hop.drucof) local.set(r.address, drucofNotOffered());
    else wire.set(w, [...(wire.get(w) ?? []), r]);
  }
  if (wire.size === 0) return { wire, local, drucof: none, conneg: none };
  const drucof = new Set<string>();
  const conneg = new Set<string>();
  const recipients = [...wire].map(([address, states]) => {
    // Two recipients that share a wire address share one RCPT: it asks what either asks.
    const asked = states.map((s) => req.perRecipient?.get(s.address) ?? {});
    const opts: RecipientOptions = { drucof: asked.some((o) => o.drucof), conneg: asked.some((o) => o.conneg) };
    const params = rcptParams(states[0]!, hop, opts);
    if (params.includes('DRUCOF')) drucof.add(address);
    if (params.includes(CONNEG_PARAM)) conneg.add(address);
    return { address, params };
  });
  const utf8OnWire = NON_ASCII.test(from) || recipients.some((r) => NON_ASCII.test(r.address));
  // LMTP has per-recipient replies of its own (RFC 2033 §4.2): no INLINE-DSN or PRDR on top.
  const verdicts = hop.lmtp ? undefined : verdictMode(hop, recipients.length);
  const params = mailParams(req.envelope, hop, req.body.length, utf8OnWire);
  if (verdicts) params.push(verdicts);
  return {
    tx: { from, mailParams: params, recipients, body: req.body, ...(verdicts && { verdicts }) },
    wire,
    local,
    drucof,
    conneg,
    ...(hop.lmtp && { lmtp: true as const }),
  };
}

const SYSTEM_ERRORS: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by peer',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network is unreachable',
  EADDRNOTAVAIL: 'address not available',
  EPIPE: 'broken pipe',
};

const TIMEOUTS: Readonly<Record<string, string>> = {
  GREETING_TIMEOUT: 'while receiving the initial server greeting',
  UPGRADE_TIMEOUT: 'during the TLS handshake',
  SOCKET_TIMEOUT: 'while waiting for a reply',
};

/** A peer reply as a Reply; an unparsable one is kept as text under a local 451 4.5.0. */
export function peerReply(raw: string): Reply {
  return parseReply(raw) ?? reply(451, 5, 0, `malformed reply from the next hop: ${raw.replace(/\s+/g, ' ').slice(0, 200)}`);
}

/**
 * A peer reply that is to be a recipient's outcome: 2xx, 4xx or 5xx. A 3xx there
 * (a 352 without INLINE-DSN, a 353 nobody asked for) is a protocol error: 451 4.5.0.
 */
export function outcomeReply(raw: string): Reply {
  const r = peerReply(raw);
  if (r.code >= 300 && r.code < 400) return reply(451, 5, 0, `unexpected reply from the next hop: ${raw.replace(/\s+/g, ' ').slice(0, 200)}`);
  return r;
}

/** The same reply as a temporary failure (for a verdict that was not read: never success, never final). */
function temporary(r: Reply): Reply {
  return r.code >= 400 && r.code < 500 ? r : reply(451, 5, 0, ...r.lines);
}

/**
 * The Reply for a failure that hit every recipient not yet answered: the peer's
 * own 4xx/5xx when one caused it, else a local reply — connect refused /
 * unreachable / timed out → 451 4.4.1 (RFC 3463 "no answer from host"); dropped
 * or timed out after connecting → 451 4.4.2 ("bad connection"); DNS → 451 4.4.4.
 */
export function failureReply(f: ClientFailure, host: { readonly host: string; readonly port: number }): Reply {
  const parsed = f.response !== undefined ? parseReply(f.response) : undefined;
  if (parsed && parsed.code >= 400) return parsed;
  const where = `${host.host}:${host.port}`;
  const sys = (f.originalCode && SYSTEM_ERRORS[f.originalCode]) || undefined;
  switch (f.code) {
    case 'ETIMEDOUT':
      if (f.timeoutType === 'CONNECT_TIMEOUT') return status.connectionFailed(`connect to ${where}: timed out`);
      return reply(451, 4, 2, `conversation with ${where} timed out ${TIMEOUTS[f.timeoutType ?? ''] ?? ''}`.trim());
    case 'EDNS':
      return status.routingFailed(`host ${host.host} not found (${f.originalCode ?? 'DNS error'})`);
    case 'ESOCKET':
    case 'ECONNECTION':
      if (!f.tcpConnected) return status.connectionFailed(`connect to ${where}: ${sys ?? f.message}`);
      return reply(451, 4, 2, `lost connection with ${where}${sys ? `: ${sys}` : ''}`);
    case 'ETLS':
      return reply(451, 4, 2, `TLS with ${where} failed: ${f.message}`);
    case 'EPROTOCOL':
      return reply(451, 5, 0, `protocol error with ${where}: ${f.message}`);
    default:
      return status.localError(`delivery to ${where} failed: ${f.message}`);
  }
}

/**
 * A Reply for every recipient of the request, from the local refusals, the RCPT
 * replies, and the DATA reply (or the failure that ended the transaction).
 */
export function assemble(
  req: DeliveryRequest,
  prep: Prepared,
  replies: TransactionReplies | undefined,
  host: { readonly host: string; readonly port: number },
): Map<string, Reply> {
  const out = new Map<string, Reply>();
  const f = replies?.failure;
  const ad = replies?.afterData;
  const mailRefused = f?.stage === 'mail' && f.response !== undefined ? peerReply(f.response) : undefined;
  const afterRcpt =
    f === undefined
      ? replies?.data !== undefined
        ? outcomeReply(replies.data)
        : status.localError('no reply to the end of data')
      : f.stage === 'data' && f.response !== undefined
        ? outcomeReply(f.response)
        : failureReply(f, host);
  for (const [address, states] of prep.wire) {
    let r: Reply;
    const rcptRaw = replies?.rcpt.get(address);
    const accepted = rcptRaw === undefined || rcptRaw.startsWith('2') || (ad?.deferred.includes(address) ?? false);
    if (mailRefused) r = mailRefused;
    else if (!accepted) r = outcomeReply(rcptRaw);
    else if (ad?.sequence) r = verdictOf(address, ad, f, host);
    else if (prep.lmtp) r = lmtpOutcome(address, replies, f, host, afterRcpt);
    else r = afterRcpt;
    for (const s of states) out.set(s.address, r);
  }
  for (const [address, r] of prep.local) out.set(address, r);
  for (const s of req.recipients) if (!out.has(s.address)) out.set(s.address, status.localError('recipient not attempted'));
  return out;
}

/**
 * One recipient's outcome from a 353 sequence (A4, A4b). An itemised recipient:
 * its own 4xx/5xx line governs; a 2xx line counts only with a 2xx final reply (a
 * 4xx/5xx final reply is then its outcome). A recipient accepted with 250 at RCPT
 * under INLINE-DSN: the final reply. A line or final reply that was not read
 * (short sequence, timeout, lost connection, malformed sequence): temporary failure.
 */
export function verdictOf(address: string, ad: AfterData, f: ClientFailure | undefined, host: { readonly host: string; readonly port: number }): Reply {
  const unread = (): Reply => {
    if (ad.malformed !== undefined) return reply(451, 5, 0, `malformed reply sequence after DATA from ${host.host}:${host.port}: ${ad.malformed}`);
    if (f) return temporary(failureReply(f, host));
    return reply(451, 5, 0, `no verdict read from ${host.host}:${host.port} for this recipient`);
  };
  const final = ad.final !== undefined ? outcomeReply(ad.final) : undefined;
  if (ad.itemised.includes(address)) {
    const line = ad.lines.get(address);
    if (line === undefined) return unread();
    const own = outcomeReply(line);
    if (own.code >= 400) return own;
    if (!final) return unread();
    return final.code >= 400 ? final : own;
  }
  return final ?? unread();
}

/**
 * One recipient's outcome over LMTP (RFC 2033 §4.2): its own reply after the
 * data. Before the data was sent (DATA refused, connection lost) the reply that
 * ended the transaction stands for everyone, as over SMTP. A reply that was not
 * read (the connection ended first, or the client could not tell whose reply is
 * whose) is a temporary failure, never a delivery: the last recipient's reply,
 * which nodemailer hands back as "the" reply, stands for no one else.
 */
export function lmtpOutcome(
  address: string,
  replies: TransactionReplies | undefined,
  f: ClientFailure | undefined,
  host: { readonly host: string; readonly port: number },
  beforeData: Reply,
): Reply {
  const lines = replies?.lmtp;
  if (!lines) return f ? beforeData : reply(451, 5, 0, `no per-recipient reply read from ${host.host}:${host.port} after the data (LMTP)`);
  const line = lines.get(address);
  if (line !== undefined) return outcomeReply(line);
  if (f) return temporary(failureReply(f, host));
  return reply(451, 5, 0, `no reply from ${host.host}:${host.port} for this recipient after the data (LMTP)`);
}

/** Why a query got no reply, when a connection failure cut it short (A3: a failed query, with its reason). */
export function queryFailure(f: ClientFailure, host: { readonly host: string; readonly port: number }): { reason: string; reply: Reply } {
  const r = failureReply(f, host);
  const text = r.lines.join(' ');
  return { reason: f.code === 'ETIMEDOUT' ? `timed out: ${f.message}` : text, reply: r };
}

/**
 * The answers to the CONNEG queries of a delivery, by RecipientState.address, for
 * every recipient that asked one: from the reply to its RCPT with CONNEG, or a
 * failed query saying why there was none (hop without CONNEG, answered locally,
 * MAIL refused, connection lost). Undefined when nobody asked.
 */
export function deliveryCapabilities(
  req: DeliveryRequest,
  prep: Prepared,
  hop: HopFeatures,
  replies: TransactionReplies | undefined,
  host: { readonly host: string; readonly port: number },
): Map<string, CapabilityAnswer> | undefined {
  const asked = req.recipients.filter((r) => req.perRecipient?.get(r.address)?.conneg);
  if (asked.length === 0) return undefined;
  const f = replies?.failure;
  const wireAnswers = queryAnswers([...prep.conneg], {
    rcpt: replies?.query ?? new Map(),
    ...(f?.stage === 'mail' && f.response !== undefined && { mail: f.response }),
    ...(f && { failure: queryFailure(f, host) }),
  });
  const wireOf = new Map<string, string>();
  for (const [address, states] of prep.wire) for (const s of states) wireOf.set(s.address, address);
  const out = new Map<string, CapabilityAnswer>();
  for (const r of asked) {
    const w = wireOf.get(r.address);
    const answer = w !== undefined ? wireAnswers.get(w) : undefined;
    if (answer) out.set(r.address, answer);
    else if (!hop.conneg) out.set(r.address, queryFailed('the next hop does not advertise CONNEG', 'conneg'));
    else {
      const local = prep.local.get(r.address);
      out.set(r.address, queryFailed(`not asked: the recipient was answered locally${local ? ` (${local.code} ${local.lines.join(' ')})` : ''}`, 'conneg', local));
    }
  }
  return out;
}

/** The RFC 3464 Remote-MTA name: the host as routed, or, for an IP literal, the name the peer gave. */
export function remoteMtaName(host: string, serverName: string | undefined): string {
  if (net.isIP(host) && serverName && /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$/.test(serverName)) {
    return serverName;
  }
  return host;
}

/** Outcome of one transaction on an open connection. */
export interface TransactionOutcome {
  readonly perRecipient: Map<string, Reply>;
  readonly features: HopFeatures;
  readonly replies?: TransactionReplies;
  /** Answers to the CONNEG queries asked (by RecipientState.address). */
  readonly capabilities?: Map<string, CapabilityAnswer>;
  /** Recipients (RecipientState.address) whose RCPT carried DRUCOF. */
  readonly drucofPassedOn: ReadonlySet<string>;
  /** Recipients (RecipientState.address) whose RCPT carried CONNEG: their answers are the hop's (worth caching). */
  readonly queried: ReadonlySet<string>;
  /** How per-recipient verdicts were asked, if they were. */
  readonly verdicts?: Verdicts;
}

/** Prepares and runs one transaction on an open client; never rejects. */
export async function runTransaction(client: RelayClient, req: DeliveryRequest): Promise<TransactionOutcome> {
  const features: HopFeatures = client.opts.lmtp ? { ...hopFeatures(client.ehloLines), lmtp: true } : hopFeatures(client.ehloLines);
  const prep = prepare(req, features);
  const host = { host: client.opts.host, port: client.opts.port };
  const byWire = (wire: ReadonlySet<string>): Set<string> => new Set([...wire].flatMap((w) => (prep.wire.get(w) ?? []).map((s) => s.address)));
  const drucofPassedOn = byWire(prep.drucof);
  const queried = byWire(prep.conneg);
  const replies = prep.tx ? await client.transaction(prep.tx) : undefined;
  const capabilities = deliveryCapabilities(req, prep, features, replies, host);
  return {
    perRecipient: assemble(req, prep, replies, host),
    features,
    drucofPassedOn,
    queried,
    ...(replies && { replies }),
    ...(capabilities && { capabilities }),
    ...(prep.tx?.verdicts && { verdicts: prep.tx.verdicts }),
  };
}
