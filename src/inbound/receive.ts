/**
 * DATA → verdicts → trace header → durable store (Postfix cleanup + the 250
 * promise of architecture.md, "Durability rule"). Reads the message as
 * smtp-server hands it over (dot-unstuffed, otherwise byte for byte), refuses it
 * with `552 5.3.4` when it went over the size limit, measures what the verdict
 * sources need (size; with @zone-eu/mailsplit, the media types of all parts and
 * the decoded text of text/* parts), asks the verdict engine for one verdict per
 * recipient (verdicts.ts) and lays them out in the transaction's wire form
 * (data-replies.ts). What is accepted is stored in one `store.enqueue` under one
 * RFC 5321 §4.4 `Received:` header; the replies (`250 2.0.0 [QUEUEID id] …`, or
 * the 353 sequence) are resolved only after it resolved; `451 4.3.0 [RETRY-AFTER
 * 60]` when the store is unavailable. Logs one line per transaction.
 */
import type { Readable, Transform } from 'node:stream';
import { domainToASCII } from 'node:url';
import { Splitter, type MimeNode } from '@zone-eu/mailsplit';
import iconv from 'iconv-lite';
import { reportsDue } from '../dsn/index.ts';
import type { ClientIdentity } from '../model/envelope.ts';
import type { RecipientState } from '../model/recipient.ts';
import type { Reply } from '../model/reply.ts';
import { replyText } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import type { Metrics } from '../ops/metrics.ts';
import { StoreUnavailableError, type MessageStore } from '../queue/store.ts';
import { newQueueId } from '../queue/queue-id.ts';
import { status } from '../smtp/status.ts';
import { planData } from './data-replies.ts';
import { buildEnvelope, dependsOnContent, recipientStates, type Transaction } from './session.ts';
import type { MessageFacts, VerdictEngine } from './verdicts.ts';

export interface ReceiveDeps {
  readonly store: Pick<MessageStore, 'enqueue'>;
  readonly log: Logger;
  /** Our name, for the `by` clause. */
  readonly hostname: string;
  /** Bytes of message data accepted (0 = no limit). */
  readonly maxMessageSize: number;
  /** Per-recipient verdicts after the data (no sources: everyone accepts). */
  readonly verdicts?: VerdictEngine;
  /** Messages accepted/refused by reply class, recipients failed at once by a verdict; default: nothing. */
  readonly metrics?: Pick<Metrics, 'messageReceived' | 'recipientFinal'>;
  /**
   * Told the queue id of each message stored, after it is stored (the dashboard's
   * list of recent messages). Not awaited: the reply never waits for it, and a
   * failure is the port's to report.
   */
  readonly noteStored?: (id: string) => Promise<void>;
}

export interface ReceiveInput {
  /** smtp-server's DATA stream (sets `sizeExceeded` once over the limit). */
  readonly stream: Readable & { sizeExceeded?: boolean };
  readonly tx: Transaction;
  readonly client: ClientIdentity;
  /** The session's protocol details for the `with` clause. */
  readonly esmtp: boolean;
  readonly secure: boolean;
}

export type ReadResult = { readonly kind: 'ok'; readonly data: Buffer } | { readonly kind: 'too-big'; readonly bytes: number };

/**
 * Reads the whole DATA stream. Keeps at most `limit` bytes in memory: past it the
 * rest is read and dropped (the client must be allowed to finish before it gets
 * its 552, RFC 1870 §6.2). Rejects when the stream fails (client went away).
 */
export function readMessage(stream: ReceiveInput['stream'], limit: number): Promise<ReadResult> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let over = false;
    stream.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (over) return;
      if (limit > 0 && bytes > limit) {
        over = true;
        chunks.length = 0;
        return;
      }
      chunks.push(chunk);
    });
    stream.once('error', reject);
    stream.once('end', () => {
      if (over || stream.sizeExceeded) resolve({ kind: 'too-big', bytes });
      else resolve({ kind: 'ok', data: Buffer.concat(chunks, bytes) });
    });
  });
}

/** RFC 5322 date-time in UTC: `Mon, 23 Nov 2026 10:52:37 +0000`. */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/**
 * The `with` protocol (RFC 3848 / RFC 6531 registry): ESMTP, plus S for TLS and
 * A for an authenticated client; UTF8SMTP… for an SMTPUTF8 transaction; SMTP after HELO.
 */
export function protocolName(opts: { esmtp: boolean; secure: boolean; authenticated: boolean; smtpUtf8: boolean }): string {
  if (!opts.esmtp) return 'SMTP';
  return (opts.smtpUtf8 ? 'UTF8SMTP' : 'ESMTP') + (opts.secure ? 'S' : '') + (opts.authenticated ? 'A' : '');
}

/**
 * What may not appear in a `Received:` clause taken from the client: whitespace and
 * controls (C0, C1, DEL, U+2028/2029: each could end the line or be read as one
 * ending), and `;` `(` `)` `<` `>` `"` `\` (they would move the date, open a comment
 * or end the `for` path, so a client could forge trace structure).
 */
// eslint-disable-next-line no-control-regex
const UNSAFE_IN_TRACE = /[\s;()<>"\\\x00-\x1f\x7f-\x9f\u2028\u2029]/;

/**
 * An address as it may appear in the `for` clause of this message: A-label domain
 * unless SMTPUTF8; undefined (no `for` clause) when it cannot appear safely.
 */
function headerAddress(address: string, smtpUtf8: boolean): string | undefined {
  if (UNSAFE_IN_TRACE.test(address)) return undefined;
  if (smtpUtf8) return address;
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  const domain = at < 0 ? '' : address.slice(at + 1);
  const ascii = domain === '' || domain.startsWith('[') ? domain : domainToASCII(domain);
  const out = at < 0 ? local : `${local}@${ascii}`;
  return /^[\x21-\x7e]+$/.test(out) && (domain === '' || ascii !== '') ? out : undefined;
}

/** `[1.2.3.4]` or `[IPv6:…]` (RFC 5321 §4.1.3 address literal). */
function addressLiteral(ip: string): string {
  return ip.includes(':') ? `[IPv6:${ip}]` : `[${ip}]`;
}

/**
 * The trace header (RFC 5321 §4.4), folded, CRLF-terminated:
 * `Received: from helo (rdns [ip])\r\n\tby host with ESMTP id QID\r\n\tfor <r>; date\r\n`.
 * `for` is given only for a single recipient, so a message to many does not
 * disclose the list (RFC 5321 §7.2).
 */
export function receivedHeader(opts: {
  client: ClientIdentity;
  hostname: string;
  protocol: string;
  id: string;
  recipients: readonly string[];
  smtpUtf8: boolean;
  date: Date;
}): string {
  const { client } = opts;
  // The EHLO argument is anything without spaces or controls (smtp-server's check): only
  // what a domain or an address literal is made of goes in; anything else becomes '?'.
  const helo = client.helo.replace(/[^A-Za-z0-9.\-_:[\]]/g, '?') || 'unknown';
  const remote = [client.hostname, addressLiteral(client.address)].filter(Boolean).join(' ');
  const lines = [`Received: from ${helo} (${remote})`, `\tby ${opts.hostname} with ${opts.protocol} id ${opts.id}`];
  const only = opts.recipients.length === 1 ? headerAddress(opts.recipients[0]!, opts.smtpUtf8) : undefined;
  if (only !== undefined) lines.push(`\tfor <${only}>;`);
  else lines[lines.length - 1] += ';';
  lines.push(`\t${rfc5322Date(opts.date)}`);
  return lines.join('\r\n') + '\r\n';
}

/** Decodes a part's transfer encoding (base64, quoted-printable, or none) with mailsplit's own decoder. */
function decodeTransfer(node: MimeNode, raw: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const decoder = node.getDecoder();
    const chunks: Buffer[] = [];
    decoder.on('data', (c: Buffer) => chunks.push(c));
    decoder.once('end', () => resolve(Buffer.concat(chunks)));
    decoder.once('error', reject);
    decoder.end(raw);
  });
}

/** A text part's bytes as text, in its declared charset (UTF-8 when absent or unknown). */
function decodeCharset(bytes: Buffer, charset: string | false): string {
  const cs = charset ? charset.trim() : '';
  return cs && iconv.encodingExists(cs) ? iconv.decode(bytes, cs) : bytes.toString('utf8');
}

/**
 * The facts the verdict sources judge (verdicts.ts MessageFacts). `parts: false`
 * measures only the size (nobody has a content rule: no parse). A message
 * mailsplit cannot split is judged by its raw text with no media types, so a
 * word rule still sees the words.
 */
export async function measureMessage(data: Buffer, parts: boolean): Promise<MessageFacts> {
  if (!parts) return { raw: data, size: data.length, texts: [], types: [] };
  const types: string[] = [];
  const textParts: { node: MimeNode; chunks: Buffer[] }[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const splitter = new Splitter();
      let current: { node: MimeNode; chunks: Buffer[] } | undefined;
      splitter.on('data', (chunk) => {
        if (chunk.type === 'node') {
          // RFC 2045 §5.2: no Content-Type means text/plain.
          const type = chunk.contentType || 'text/plain';
          types.push(type);
          current = type.startsWith('text/') ? { node: chunk, chunks: [] } : undefined;
          if (current) textParts.push(current);
        } else if (chunk.type === 'body' && current?.node === chunk.node) {
          current.chunks.push(chunk.value);
        }
      });
      // Splitter's typings declare only 'data'; it is a Transform with the usual events.
      const stream = splitter as unknown as Transform;
      stream.once('end', () => resolve());
      stream.once('error', reject);
      stream.end(data);
    });
    const texts = await Promise.all(
      textParts.map(async (p) => decodeCharset(await decodeTransfer(p.node, Buffer.concat(p.chunks)), p.node.charset)),
    );
    return { raw: data, size: data.length, texts, types };
  } catch {
    return { raw: data, size: data.length, texts: [data.toString('utf8')], types: [] };
  }
}

/**
 * The DATA phase after the 354: read, check size, judge, trace, store. Resolves
 * with the replies to send after the final dot — one, or the 353 sequence —
 * (never rejects for a store failure; rejects only when the message could not
 * be read at all). Counts the message by the class of its final reply.
 */
export async function receive(input: ReceiveInput, deps: ReceiveDeps): Promise<Reply[]> {
  const replies = await receiveData(input, deps);
  deps.metrics?.messageReceived(replies[replies.length - 1]!.code);
  return replies;
}

async function receiveData(input: ReceiveInput, deps: ReceiveDeps): Promise<Reply[]> {
  const { tx, client } = input;
  const started = Date.now();
  const recipients = recipientStates(tx);
  const logBase = {
    from: tx.mailFrom,
    rcpts: recipients.length,
    client: client.address,
    helo: client.helo,
    ...(tx.mode !== 'plain' && { mode: tx.mode }),
    ...(client.user && { user: client.user }),
  };
  const read = await readMessage(input.stream, deps.maxMessageSize);
  if (read.kind === 'too-big') {
    const r = status.messageTooBig();
    deps.log.info({ ...logBase, size: read.bytes, result: replyText(r) }, 'message refused: too big');
    return [r];
  }

  // One verdict per recipient, then the wire form decides what is stored.
  const facts = recipients.map((r) => ({ address: r.address, drucof: r.drucof, dependsOnContent: dependsOnContent(tx, r.address) }));
  const engine = deps.verdicts;
  let verdicts = new Map<string, Reply>();
  if (engine) {
    try {
      verdicts = await engine.afterData(facts, await measureMessage(read.data, engine.needsFacts(facts)));
    } catch (err) {
      // A source failed (they should not): nothing was said per recipient yet, one 451 for all.
      const r = status.localError();
      deps.log.warn({ ...logBase, size: read.data.length, err: (err as Error)?.message, result: replyText(r) }, 'message refused: verdicts failed');
      return [r];
    }
  }
  const plan = planData(tx.mode, tx.accepted, verdicts);
  const refused = [...verdicts.values()].filter((v) => v.code >= 400).map(replyText);
  const logVerdicts = refused.length > 0 ? { refused } : {};
  if (plan.store.size === 0) {
    const replies = plan.replies('');
    deps.log.info({ ...logBase, ...logVerdicts, size: read.data.length, ms: Date.now() - started, result: replyText(replies[replies.length - 1]!) }, 'message refused by every recipient');
    return replies;
  }

  const id = newQueueId();
  const now = new Date();
  const stored = recipients.filter((r) => plan.store.has(r.address.toLowerCase()));
  const queued = stored.filter((r) => plan.store.get(r.address.toLowerCase())?.kind === 'queue');
  const header = receivedHeader({
    client,
    hostname: deps.hostname,
    protocol: protocolName({ esmtp: input.esmtp, secure: input.secure, authenticated: client.user !== undefined, smtpUtf8: tx.params.smtpUtf8 }),
    id,
    recipients: queued.map((r) => r.address),
    smtpUtf8: tx.params.smtpUtf8,
    date: now,
  });
  const body = Buffer.concat([Buffer.from(header, 'utf8'), read.data]);
  const envelope = buildEnvelope(tx, id, client, now, body.length);
  // Refused after the data without a per-recipient form: stored already failed, with
  // the report it is owed (the worker queues it; the old way, issue 4 item 4).
  const states: RecipientState[] = stored.map((r) => {
    const as = plan.store.get(r.address.toLowerCase())!;
    if (as.kind === 'queue') return r;
    const failed: RecipientState = { ...r, status: 'failed', lastReply: as.reply, lastAttemptAt: now.toISOString() };
    const [due] = reportsDue(envelope, [], [failed], { delayWarningMs: 0, now: now.getTime() });
    return due ? { ...failed, reportOwed: due.action } : failed;
  });
  let replies: Reply[];
  try {
    await deps.store.enqueue(envelope, states, body);
    replies = plan.replies(id);
    for (const r of states) if (r.status === 'failed') deps.metrics?.recipientFinal('failed');
    if (deps.noteStored) {
      try {
        void deps.noteStored(id).catch(() => {});
      } catch {
        // Only the dashboard's list: never worth the reply.
      }
    }
  } catch (err) {
    // Nothing was said per recipient yet: one reply for the whole transaction.
    replies = [err instanceof StoreUnavailableError ? status.storageUnavailable() : status.localError()];
    deps.log.warn({ queueId: id, err: (err as Error).message }, 'message not stored');
  }
  const last = replies[replies.length - 1]!;
  deps.log.info(
    { queueId: id, ...logBase, ...logVerdicts, size: body.length, ms: Date.now() - started, result: replyText(last) },
    last.code === 250 ? 'message queued' : 'message refused',
  );
  return replies;
}
