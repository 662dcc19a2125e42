/**
 * Renders one RFC 3464 delivery status notification (RFC 6522 multipart/report)
 * for several recipients of one message that share an action (Postfix's bounce
 * daemon, for `failed`, `delayed`, `delivered` and `relayed`; the action of an
 * item is `actionOf` it: a success report for a recipient the relay delivered
 * itself, as the final hop, says `delivered`). Parts: a plain-English account,
 * the machine-readable `message/delivery-status` (rfc-digest.md §2, exact fields),
 * then the returned message (`RET=FULL`, failures only) or its header block.
 * The result is queued by the caller like any other mail, from `<>` with
 * NOTIFY=NEVER (RFC 3461 §6.1).
 *
 * Built with nodemailer's MimeNode: `message/*` bodies pass through it untouched
 * (no transfer encoding), so the 7bit delivery-status fields and a returned
 * message come out byte-exact; only the text parts get QP where MIME needs it.
 */
import { randomBytes } from 'node:crypto';
import MimeNode from 'nodemailer/lib/mime-node';
import type { Envelope } from '../model/envelope.ts';
import type { Reply } from '../model/reply.ts';
import type { Orcpt } from '../smtp/params.ts';
import { formatReply } from '../smtp/reply-format.ts';
import { actionOf, type DsnAction, type ReportItem } from './notify.ts';

export interface ReportInput {
  /** Our hostname: `Reporting-MTA`, the `MAILER-DAEMON@` domain, the Message-ID domain. */
  readonly reportingMta: string;
  /** The original message's envelope; `mailFrom` receives the report. */
  readonly envelope: Envelope;
  /** One or more recipients of that message, all with the same action. */
  readonly items: readonly ReportItem[];
  /** The stored message bytes, as queued. */
  readonly originalMessage: Buffer;
  readonly now: Date;
  /** For `delayed` reports: when the relay gives up (`Will-Retry-Until`). */
  readonly willRetryUntil?: Date;
  /**
   * Largest original (in bytes) returned whole under RET=FULL; a larger one is
   * returned as headers only and the text says so (Postfix's bounce_size_limit).
   * Absent: no limit.
   */
  readonly fullReturnLimit?: number;
}

export interface RenderedReport {
  /** Reports go out from the null sender (RFC 3461 §6.1, RFC 5321 §4.5.5). */
  readonly from: '';
  /** The original envelope sender. */
  readonly to: string;
  /** The whole report message, CRLF line ends, ready for DATA. */
  readonly raw: Buffer;
  /** The report's Message-ID, with angle brackets. */
  readonly messageId: string;
  /** `8BITMIME` when a returned message/rfc822 carries 8-bit bytes; else `7BIT`. */
  readonly body: '7BIT' | '8BITMIME';
  /** Whether the report's recipient address (and so its To header) is non-ASCII. */
  readonly smtpUtf8: boolean;
}

const SUBJECT: Record<DsnAction, string> = {
  failed: 'Delivery Status Notification (Failure)',
  delayed: 'Delivery Status Notification (Delay)',
  delivered: 'Delivery Status Notification (Success)',
  relayed: 'Delivery Status Notification (Relayed)',
};

/**
 * Renders the report. Throws (a programming error, not a delivery problem) when
 * the envelope sender is `<>` (never a report about a report), when `items` is
 * empty, or when the items do not share one action.
 */
export async function renderReport(input: ReportInput): Promise<RenderedReport> {
  const { envelope, items, reportingMta } = input;
  if (envelope.mailFrom === '') throw new Error('renderReport: no report is ever sent to the null sender');
  const first = items[0];
  if (!first) throw new Error('renderReport: no recipients to report');
  const action = actionOf(first);
  if (items.some((i) => actionOf(i) !== action)) throw new Error('renderReport: all items of one report must share an action');

  const returned = returnedContent(input, action);
  const messageId = `<${input.now.getTime().toString(36)}.${randomBytes(8).toString('hex')}.dsn@${reportingMta}>`;

  const root = new MimeNode('multipart/report; report-type=delivery-status', { hostname: reportingMta });
  root.setHeader('From', { name: 'Mail Delivery System', address: `MAILER-DAEMON@${reportingMta}` });
  root.setHeader('To', { name: '', address: envelope.mailFrom });
  root.setHeader('Subject', SUBJECT[action]);
  root.setHeader('Date', input.now);
  root.setHeader('Message-ID', messageId);
  // RFC 3834 §5: a DSN is an automatic response to a message.
  root.setHeader('Auto-Submitted', 'auto-replied');

  root
    .createChild('text/plain; charset=utf-8')
    .setHeader('Content-Description', 'Notification')
    .setContent(humanText(input, action, returned));

  root
    .createChild('message/delivery-status')
    .setHeader('Content-Description', 'Delivery report')
    // RFC 3464 §2.1: the delivery-status body is 7bit; every field value below is
    // made 7-bit printable, and MimeNode passes message/* content through as is.
    .setHeader('Content-Transfer-Encoding', '7bit')
    .setContent(deliveryStatus(input, action));

  let body: RenderedReport['body'] = '7BIT';
  if (returned.kind === 'full') {
    // RFC 2046 §5.2.1: message/rfc822 may only be 7bit, 8bit or binary, never
    // QP/base64, so an 8-bit original makes the whole report 8BITMIME.
    const eightBit = hasEightBit(returned.bytes);
    if (eightBit) body = '8BITMIME';
    root
      .createChild('message/rfc822')
      .setHeader('Content-Description', 'Undelivered Message')
      .setHeader('Content-Transfer-Encoding', eightBit ? '8bit' : '7bit')
      .setContent(returned.bytes);
  } else if (returned.kind === 'headers') {
    const part = root
      .createChild('text/rfc822-headers')
      .setHeader('Content-Description', action === 'failed' ? 'Undelivered Message Headers' : 'Message Headers');
    if (isShort7bit(returned.bytes)) {
      // Plain ASCII with lines of at most 76 characters: MimeNode picks 7bit itself.
      part.setContent(returned.bytes.toString('latin1'));
    } else {
      // 8-bit bytes or long lines: MimeNode would QP-encode a text part anyway;
      // handing it the Buffer keeps the encoding byte-exact (no charset guessing)
      // and the report 7-bit clean.
      part.setHeader('Content-Transfer-Encoding', 'quoted-printable').setContent(returned.bytes);
    }
  }

  const raw = await root.build();
  return {
    from: '',
    to: envelope.mailFrom,
    raw,
    messageId,
    body,
    smtpUtf8: /[^\x00-\x7f]/.test(envelope.mailFrom),
  };
}

// ---------------------------------------------------------------------------
// What goes back to the sender

type Returned =
  | { readonly kind: 'full'; readonly bytes: Buffer }
  | { readonly kind: 'headers'; readonly bytes: Buffer; readonly truncated: boolean }
  | { readonly kind: 'none' };

/**
 * RET governs failure reports only (RFC 3461 §4.3); delayed, delivered and
 * relayed reports carry the headers at most. For a failure, RET=FULL returns the whole message;
 * RET=HDRS returns the headers. Without RET, RFC 3461 §4.3 lets the MTA return
 * either; we return the headers. Postfix returns the whole message (up to
 * bounce_size_limit); we choose the headers because a sender who wanted the
 * content back can say RET=FULL, and a smarthost relay should not mail a full
 * copy of possibly large or confidential content to an envelope address it has
 * not verified (the backscatter and privacy argument). The headers are enough
 * for the sender to identify the message.
 */
function returnedContent(input: ReportInput, action: DsnAction): Returned {
  const message = toCrlf(input.originalMessage);
  if (message.length === 0) return { kind: 'none' };
  const tooBig = input.fullReturnLimit !== undefined && message.length > input.fullReturnLimit;
  if (action === 'failed' && input.envelope.ret === 'FULL' && !tooBig) return { kind: 'full', bytes: message };
  const headers = headerBlock(message);
  if (headers.length === 0) return { kind: 'none' };
  return { kind: 'headers', bytes: headers, truncated: action === 'failed' && input.envelope.ret === 'FULL' };
}

/** The header block of a CRLF message: every header line with its CRLF, without the empty line. */
function headerBlock(message: Buffer): Buffer {
  if (message.subarray(0, 2).toString('latin1') === '\r\n') return Buffer.alloc(0); // no headers at all
  const end = message.indexOf('\r\n\r\n');
  if (end < 0) return message; // no body: the whole message is header (RFC 5322 §2.1)
  return message.subarray(0, end + 2);
}

/**
 * Bare LF and bare CR become CRLF, so every line of the report ends in CRLF;
 * a message that is already CRLF (what SMTP DATA gives us) comes back byte-identical.
 */
function toCrlf(b: Buffer): Buffer {
  if (!b.includes(0x0a) && !b.includes(0x0d)) return b;
  const s = b.toString('latin1'); // latin1 maps bytes 1:1, so the round trip keeps every other byte
  const fixed = s.replace(/\r\n|\r|\n/g, '\r\n');
  return fixed === s ? b : Buffer.from(fixed, 'latin1');
}

function hasEightBit(b: Buffer): boolean {
  return b.some((x) => x >= 0x80);
}

function isShort7bit(b: Buffer): boolean {
  const s = b.toString('latin1');
  return !/[^\x09\x0a\x0d\x20-\x7e]/.test(s) && s.split('\r\n').every((l) => l.length <= 76);
}

// ---------------------------------------------------------------------------
// message/delivery-status (RFC 3464 §2.2, §2.3; rfc-digest.md §2)

function deliveryStatus(input: ReportInput, action: DsnAction): string {
  const { envelope } = input;
  const perMessage = [`Reporting-MTA: dns; ${printable(input.reportingMta)}`];
  if (envelope.envid) perMessage.push(`Original-Envelope-Id: ${envelopeId(envelope.envid)}`);
  const arrival = dateField(envelope.receivedAt);
  if (arrival) perMessage.push(`Arrival-Date: ${arrival}`);

  const blocks = input.items.map(({ recipient: r }) => {
    const f: string[] = [];
    if (r.orcpt) f.push(`Original-Recipient: ${originalRecipient(r.orcpt)}`);
    f.push(`Final-Recipient: ${addressField('rfc822', r.address)}`);
    f.push(`Action: ${action}`);
    f.push(`Status: ${statusCode(action, r.lastReply)}`);
    if (r.remoteMta) f.push(`Remote-MTA: dns; ${printable(r.remoteMta)}`);
    if (r.lastReply) f.push(...diagnosticCode(r.lastReply));
    const last = r.lastAttemptAt ? dateField(r.lastAttemptAt) : undefined;
    if (last) f.push(`Last-Attempt-Date: ${last}`);
    if (action === 'delayed' && input.willRetryUntil) f.push(`Will-Retry-Until: ${rfc5322Date(input.willRetryUntil)}`);
    return f;
  });
  // delivery-status-content = per-message-fields 1*( CRLF per-recipient-fields )
  return [perMessage, ...blocks].map((lines) => lines.map((l) => `${l}\r\n`).join('')).join('\r\n');
}

/**
 * The Status field: the last reply's enhanced code when its class fits the
 * action (a failure may be 4.x.x — a persistent transient failure such as
 * 4.4.7 expiry — or 5.x.x; a delay 4.x.x; a delivery or relay 2.x.x), else X.0.0 from the
 * basic code's class, else the action's own class (RFC 3464 §2.3.4; RFC 3463).
 */
export function statusCode(action: DsnAction, r: Reply | undefined): string {
  const allowed: readonly number[] = action === 'failed' ? [4, 5] : action === 'delayed' ? [4] : [2];
  const fallback = action === 'failed' ? '5.0.0' : action === 'delayed' ? '4.0.0' : '2.0.0';
  if (!r) return fallback;
  if (r.enhanced && allowed.includes(Number(r.enhanced.charAt(0)))) return r.enhanced;
  const cls = Math.floor(r.code / 100);
  return allowed.includes(cls) ? `${cls}.0.0` : fallback;
}

/**
 * `Diagnostic-Code: smtp; 550 5.1.1 text` — the reply exactly as it was on the
 * wire (reply-format.ts prints it), one line per reply line; the second and
 * further lines are continuation lines beginning with a space (RFC 3464 §2.3.6,
 * RFC 5322 folding), so `550-5.1.1 first` / ` 550 5.1.1 second` reads back with
 * parseReply.
 */
function diagnosticCode(r: Reply): string[] {
  const lines = formatReply(r)
    .split('\r\n')
    .filter((l) => l !== '')
    .map(printable);
  return lines.map((l, i) => (i === 0 ? `Diagnostic-Code: smtp; ${l}` : ` ${l}`));
}

/**
 * RFC 3464 §2.2.1 wants the ENVID decoded from xtext; a decoded value that is
 * not printable US-ASCII (RFC 3461 §4.4 allows only that) would break the 7-bit
 * part or inject lines, so then the value goes out as it arrived, in xtext.
 */
function envelopeId(envid: { readonly xtext: string; readonly value: string }): string {
  return /^[\x20-\x7e]*$/.test(envid.value) ? envid.value : envid.xtext;
}

/** `Original-Recipient: <addr-type>;<decoded address>` (RFC 3464 §2.3.1), exactly when ORCPT arrived. */
function originalRecipient(orcpt: Orcpt): string {
  const type = orcpt.addrType;
  if (/^(rfc822|utf-8)$/i.test(type)) return addressField(type, orcpt.address.value);
  // Another address type: decoded when printable, else as the xtext that arrived.
  return `${type};${/^[\x21-\x7e]+$/.test(orcpt.address.value) ? orcpt.address.value : orcpt.address.xtext}`;
}

/**
 * `type;address` for an Internet address. Printable ASCII goes out as is; a
 * non-ASCII (SMTPUTF8) address takes RFC 6533's `utf-8` address type with
 * `\x{HEX}` escapes (utf-8-addr-xtext), the form a 7-bit message/delivery-status may carry.
 */
function addressField(type: string, address: string): string {
  if (/^[\x21-\x7e]+$/.test(address)) return `${type};${address}`;
  let out = '';
  for (const ch of address) {
    const c = ch.codePointAt(0)!;
    // QCHAR (RFC 6533 §3): printable ASCII except "+", "=" and "\".
    out += c >= 0x21 && c <= 0x7e && ch !== '+' && ch !== '=' && ch !== '\\' ? ch : `\\x{${hex(c)}}`;
  }
  return `utf-8;${out}`;
}

/**
 * Free text in a 7-bit field (a remote reply, a host name): printable ASCII kept;
 * anything else (non-ASCII, controls, so no line can be injected) as RFC 6533's
 * `\x{HEX}` escape, so nothing the remote said is silently lost.
 */
function printable(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    out += c >= 0x20 && c <= 0x7e ? ch : `\\x{${hex(c)}}`;
  }
  return out;
}

function hex(c: number): string {
  return c.toString(16).toUpperCase().padStart(2, '0');
}

/** An ISO 8601 timestamp as an RFC 5322 date-time with numeric zone, or undefined if unparsable. */
function dateField(iso: string): string | undefined {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? rfc5322Date(new Date(t)) : undefined;
}

/** `Mon, 23 Nov 2026 10:52:37 +0000` (RFC 5322 §3.3, numeric zone as RFC 3464 asks). */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

// ---------------------------------------------------------------------------
// The human-readable part (first part, RFC 6522 §3)

function humanText(input: ReportInput, action: DsnAction, returned: Returned): string {
  const { envelope, reportingMta } = input;
  const out: string[] = [`This is the mail system at ${reportingMta}.`, ''];
  switch (action) {
    case 'failed':
      out.push(
        'Your message could not be delivered to the recipient(s) listed below.',
        'This is a permanent error: the mail system has given up and will not',
        'try again. The reason given for each recipient is shown below it.',
        '',
        'If you need help, forward this report to your postmaster or mail',
        'administrator.',
      );
      break;
    case 'delayed':
      out.push(
        'Your message has not yet been delivered to the recipient(s) listed',
        'below. This is only a warning: you do not need to send the message',
        'again. The mail system will keep trying'
          + (input.willRetryUntil ? ` until ${rfc5322Date(input.willRetryUntil)}` : '') + ',',
        'and will tell you if delivery finally fails.',
      );
      break;
    case 'delivered':
      out.push(
        'Your message was delivered to the mailbox of the recipient(s) listed',
        'below, as you asked to be told. This mail system is the last one on',
        'their way: the message has reached its destination.',
      );
      break;
    case 'relayed':
      out.push(
        'Your message was passed on to the next mail system for the recipient(s)',
        'listed below, as you asked to be told. That system does not report',
        'delivery status, so this is the last notice you will get about these',
        'recipients; it does not confirm that the message reached the mailbox.',
      );
      break;
    default: {
      const _exhaustive: never = action;
      throw new Error(`unknown action ${String(_exhaustive)}`);
    }
  }
  out.push('', `Queue ID: ${envelope.id}`, `Arrival date: ${dateField(envelope.receivedAt) ?? envelope.receivedAt}`);
  if (envelope.envid) out.push(`Envelope ID: ${envelopeId(envelope.envid)}`);
  out.push('');

  for (const { recipient: r } of input.items) {
    const who = r.orcpt && r.orcpt.address.value !== r.address ? `<${r.address}> (originally <${r.orcpt.address.value}>)` : `<${r.address}>`;
    out.push(`${plain(who)}:`);
    if (r.lastReply) {
      out.push(`    ${r.remoteMta ? `${plain(r.remoteMta)} said:` : 'the mail system said:'}`);
      for (const line of formatReply(r.lastReply).split('\r\n').filter((l) => l !== '')) out.push(`        ${plain(line)}`);
    } else if (action === 'relayed') {
      out.push(`    handed on${r.remoteMta ? ` to ${plain(r.remoteMta)}` : ''}`);
    } else if (action === 'delivered') {
      out.push(`    delivered${r.remoteMta ? ` by ${plain(r.remoteMta)}` : ''}`);
    } else {
      out.push('    no reason was recorded');
    }
    out.push('');
  }

  if (returned.kind === 'full') out.push('A copy of your message is attached.');
  else if (returned.kind === 'headers') {
    out.push(
      returned.truncated
        ? 'Your message was too large to return whole; its headers are attached.'
        : 'The headers of your message are attached.',
    );
  }
  return out.join('\r\n') + '\r\n';
}

/** Text from outside (addresses, remote replies) in the human part: Unicode is fine there, control characters are not. */
function plain(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]/g, '?');
}
