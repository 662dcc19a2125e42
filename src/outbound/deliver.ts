/**
 * One transaction for one group of recipients → a Reply for every recipient
 * (Postfix smtp_proto.c + smtp_trouble.c, made values). Pure parts first: what
 * the hop advertised, the MAIL/RCPT parameters we send (RFC 3461 verbatim
 * pass-on, RFC 6152 BODY, RFC 1870 SIZE, RFC 6531 SMTPUTF8 or A-labels), local
 * refusals, and how raw peer replies and connection failures become Replies.
 * `runTransaction` is the only I/O here: it drives one RelayClient.
 */
import net from 'node:net';
import { domainToASCII } from 'node:url';
import type { Envelope } from '../model/envelope.ts';
import type { NextHop } from '../model/delivery.ts';
import type { RecipientState } from '../model/recipient.ts';
import { reply, type Reply } from '../model/reply.ts';
import { encodeXtext } from '../smtp/params.ts';
import { parseReply } from '../smtp/reply-format.ts';
import { status } from '../smtp/status.ts';
import type { ClientFailure, RelayClient, Transaction, TransactionReplies } from './client.ts';

export interface DeliveryRequest {
  readonly hop: NextHop;
  /** mailFrom '' = `<>`; ret, envid (raw xtext + decoded), body, smtpUtf8. */
  readonly envelope: Envelope;
  /** address, notify, orcpt (raw xtext). */
  readonly recipients: readonly RecipientState[];
  /** The stored message, exact bytes (CRLF). */
  readonly body: Buffer;
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
  };
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
 * none arrived (RFC 3461 §4.2). None at all to a hop without DSN.
 */
export function rcptParams(r: RecipientState, hop: HopFeatures): string[] {
  if (!hop.dsn) return [];
  const out: string[] = [];
  if (r.notify === 'NEVER') out.push('NOTIFY=NEVER');
  else if (r.notify && r.notify.length > 0) out.push(`NOTIFY=${r.notify.join(',')}`);
  out.push(r.orcpt ? `ORCPT=${r.orcpt.addrType};${r.orcpt.address.xtext}` : `ORCPT=rfc822;${encodeXtext(r.address)}`);
  return out;
}

/** A prepared transaction: what to send, and the recipients already answered locally. */
export interface Prepared {
  /** Undefined when nothing is to be sent (everyone answered locally). */
  readonly tx?: Transaction;
  /** Wire address → the request's recipients it stands for (two may share one after A-labelling). */
  readonly wire: ReadonlyMap<string, readonly RecipientState[]>;
  /** Replies decided before talking (by RecipientState.address). */
  readonly local: ReadonlyMap<string, Reply>;
}

export function prepare(req: DeliveryRequest, hop: HopFeatures): Prepared {
  const local = new Map<string, Reply>();
  const everyone = (r: Reply): Prepared => {
    for (const rcpt of req.recipients) local.set(rcpt.address, r);
    return { wire: new Map(), local };
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
    else wire.set(w, [...(wire.get(w) ?? []), r]);
  }
  if (wire.size === 0) return { wire, local };
  const recipients = [...wire].map(([address, states]) => ({ address, params: rcptParams(states[0]!, hop) }));
  const utf8OnWire = NON_ASCII.test(from) || recipients.some((r) => NON_ASCII.test(r.address));
  return {
    tx: { from, mailParams: mailParams(req.envelope, hop, req.body.length, utf8OnWire), recipients, body: req.body },
    wire,
    local,
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
  const mailRefused = f?.stage === 'mail' && f.response !== undefined ? peerReply(f.response) : undefined;
  const afterRcpt =
    f === undefined
      ? replies?.data !== undefined
        ? peerReply(replies.data)
        : status.localError('no reply to the end of data')
      : f.stage === 'data' && f.response !== undefined
        ? peerReply(f.response)
        : failureReply(f, host);
  for (const [address, states] of prep.wire) {
    let r: Reply;
    const rcptRaw = replies?.rcpt.get(address);
    if (mailRefused) r = mailRefused;
    else if (rcptRaw !== undefined && !rcptRaw.startsWith('2')) r = peerReply(rcptRaw);
    else r = afterRcpt;
    for (const s of states) out.set(s.address, r);
  }
  for (const [address, r] of prep.local) out.set(address, r);
  for (const s of req.recipients) if (!out.has(s.address)) out.set(s.address, status.localError('recipient not attempted'));
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
}

/** Prepares and runs one transaction on an open client; never rejects. */
export async function runTransaction(client: RelayClient, req: DeliveryRequest): Promise<TransactionOutcome> {
  const features = hopFeatures(client.ehloLines);
  const prep = prepare(req, features);
  const host = { host: client.opts.host, port: client.opts.port };
  if (!prep.tx) return { perRecipient: assemble(req, prep, undefined, host), features };
  const replies = await client.transaction(prep.tx);
  return { perRecipient: assemble(req, prep, replies, host), features, replies };
}
