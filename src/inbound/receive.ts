/**
 * DATA → trace header → durable store (Postfix cleanup + the 250 promise of
 * architecture.md, "Durability rule"). Reads the message as smtp-server hands it
 * over (dot-unstuffed, otherwise byte for byte), refuses it with `552 5.3.4` when
 * it went over the size limit, prepends one RFC 5321 §4.4 `Received:` header and
 * resolves with `250 2.0.0 [QUEUEID id] queued` only after `store.enqueue`
 * resolved; `451 4.3.0 [RETRY-AFTER 60]` when the store is unavailable. Logs one
 * line per transaction.
 */
import type { Readable } from 'node:stream';
import { domainToASCII } from 'node:url';
import type { ClientIdentity } from '../model/envelope.ts';
import type { Reply } from '../model/reply.ts';
import { replyText } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import { StoreUnavailableError, type MessageStore } from '../queue/store.ts';
import { newQueueId } from '../queue/queue-id.ts';
import { status } from '../smtp/status.ts';
import { buildEnvelope, recipientStates, type Transaction } from './session.ts';

export interface ReceiveDeps {
  readonly store: Pick<MessageStore, 'enqueue'>;
  readonly log: Logger;
  /** Our name, for the `by` clause. */
  readonly hostname: string;
  /** Bytes of message data accepted (0 = no limit). */
  readonly maxMessageSize: number;
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

/** An address as it may appear in a header of this message: A-label domain unless SMTPUTF8. */
function headerAddress(address: string, smtpUtf8: boolean): string | undefined {
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
  const helo = client.helo.replace(/[^\x21-\x7e]/g, '?') || 'unknown';
  const remote = [client.hostname, addressLiteral(client.address)].filter(Boolean).join(' ');
  const lines = [`Received: from ${helo} (${remote})`, `\tby ${opts.hostname} with ${opts.protocol} id ${opts.id}`];
  const only = opts.recipients.length === 1 ? headerAddress(opts.recipients[0]!, opts.smtpUtf8) : undefined;
  if (only !== undefined) lines.push(`\tfor <${only}>;`);
  else lines[lines.length - 1] += ';';
  lines.push(`\t${rfc5322Date(opts.date)}`);
  return lines.join('\r\n') + '\r\n';
}

/**
 * The DATA phase after the 354: read, check size, trace, store. Resolves with
 * the reply to send after the final dot (never rejects for a store failure;
 * rejects only when the message could not be read at all).
 */
export async function receive(input: ReceiveInput, deps: ReceiveDeps): Promise<Reply> {
  const { tx, client } = input;
  const started = Date.now();
  const recipients = recipientStates(tx);
  const logBase = {
    from: tx.mailFrom,
    rcpts: recipients.length,
    client: client.address,
    helo: client.helo,
    ...(client.user && { user: client.user }),
  };
  const read = await readMessage(input.stream, deps.maxMessageSize);
  if (read.kind === 'too-big') {
    const r = status.messageTooBig();
    deps.log.info({ ...logBase, size: read.bytes, result: replyText(r) }, 'message refused: too big');
    return r;
  }

  const id = newQueueId();
  const now = new Date();
  const header = receivedHeader({
    client,
    hostname: deps.hostname,
    protocol: protocolName({ esmtp: input.esmtp, secure: input.secure, authenticated: client.user !== undefined, smtpUtf8: tx.params.smtpUtf8 }),
    id,
    recipients: recipients.map((r) => r.address),
    smtpUtf8: tx.params.smtpUtf8,
    date: now,
  });
  const body = Buffer.concat([Buffer.from(header, 'utf8'), read.data]);
  const envelope = buildEnvelope(tx, id, client, now, body.length);
  let r: Reply;
  try {
    await deps.store.enqueue(envelope, recipients, body);
    r = status.queued(id);
  } catch (err) {
    r = err instanceof StoreUnavailableError ? status.storageUnavailable() : status.localError();
    deps.log.warn({ queueId: id, err: (err as Error).message }, 'message not stored');
  }
  deps.log.info({ queueId: id, ...logBase, size: body.length, ms: Date.now() - started, result: replyText(r) }, r.code === 250 ? 'message queued' : 'message refused');
  return r;
}
