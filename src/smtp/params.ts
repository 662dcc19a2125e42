/**
 * MAIL and RCPT parameters (RFC 5321 §4.1.2 esmtp-param, RFC 3461 DSN, RFC 1870
 * SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, and protocols.md A1/A2: MAIL
 * `INLINE-DSN` and `PRDR`, RCPT `DRUCOF` and `CONNEG` / `CONNEG=OPTIONAL`),
 * parsed from the raw command line. We parse the raw text ourselves because
 * smtp-server decodes xtext before a hook sees it (byte-wise, as latin1) and
 * neither checks xtext syntax nor lengths.
 * Pure: returns parsed values or the exact Reply to send (501 syntax, 552 size,
 * 504 for CONNEG/CONPERM when not advertised (RFC 4141 asks for 504), 555 for
 * any other parameter of an extension not advertised or not known).
 */
import type { Reply } from '../model/reply.ts';
import { status } from './status.ts';

export type NotifyKind = 'SUCCESS' | 'FAILURE' | 'DELAY';
export type Notify = 'NEVER' | readonly NotifyKind[];

/** An xtext value kept exactly as received (for passing on verbatim) and decoded. */
export interface Xtext {
  readonly xtext: string;
  readonly value: string;
}

export interface MailParams {
  readonly size?: number;
  readonly body?: '7BIT' | '8BITMIME';
  readonly smtpUtf8: boolean;
  readonly ret?: 'FULL' | 'HDRS';
  readonly envid?: Xtext;
  /** `INLINE-DSN` (A4): the client takes 352 at RCPT and the 353 sequence. Present only when given. */
  readonly inlineDsn?: true;
  /** `PRDR` (A4b): the client takes the 353 sequence. Present only when given. */
  readonly prdr?: true;
}

export interface Orcpt {
  readonly addrType: string;
  readonly address: Xtext;
}

export interface RcptParams {
  readonly notify?: Notify;
  readonly orcpt?: Orcpt;
  /** `DRUCOF` (A2): deliver recipient-usable content or fail. Present only when given. */
  readonly drucof?: true;
  /**
   * `CONNEG` (RFC 4141) or `CONNEG=OPTIONAL` (the outline): return this
   * recipient's capabilities if known (A3). Both forms mean the same. Present only when given.
   */
  readonly conneg?: true;
}

/**
 * Which optional extensions' parameters are accepted: exactly those advertised
 * in EHLO. An extension left out (or false) is "not advertised".
 */
export interface ParamPolicy {
  readonly dsn: boolean;
  readonly maxSize?: number;
  readonly conneg?: boolean;
  readonly drucof?: boolean;
  readonly inlineDsn?: boolean;
  readonly prdr?: boolean;
}

export type Parsed<T> = { readonly ok: true; readonly params: T } | { readonly ok: false; readonly reply: Reply };

const ENVID_MAX = 100;
const ORCPT_MAX = 500;
const NOTIFY_MAX = 28;

/** What a reply may echo of a client's token: at most 40 characters (a reply line is at most 512 octets). */
export function echo(text: string, max = 40): string {
  return text.length <= max ? text : `${text.slice(0, max)}...`;
}

/** Splits `FROM:<a> K=V K2` into its parameters; the address part is smtp-server's job. */
export function splitParams(commandLine: string): { key: string; value: string | true }[] | Reply {
  const afterColon = commandLine.slice(commandLine.indexOf(':') + 1).trimStart();
  let rest: string;
  if (afterColon.startsWith('<')) {
    const close = findAddressEnd(afterColon);
    if (close < 0) return status.badSyntax('syntax error in address');
    rest = afterColon.slice(close + 1);
  } else {
    const sp = afterColon.search(/\s/);
    rest = sp < 0 ? '' : afterColon.slice(sp);
  }
  const out: { key: string; value: string | true }[] = [];
  for (const token of rest.trim().split(/\s+/).filter(Boolean)) {
    const eq = token.indexOf('=');
    const key = (eq < 0 ? token : token.slice(0, eq)).toUpperCase();
    if (!/^[A-Z0-9][A-Z0-9-]*$/.test(key)) return status.badSyntax(`syntax error in parameter "${echo(token)}"`);
    const value = eq < 0 ? true : token.slice(eq + 1);
    if (value !== true && !/^[\x21-\x3c\x3e-\x7e\u0080-\uffff]+$/.test(value)) {
      return status.badSyntax(`syntax error in value of ${echo(key)}`);
    }
    if (out.some((p) => p.key === key)) return status.badSyntax(`duplicate parameter ${echo(key)}`);
    out.push({ key, value });
  }
  return out;
}

/**
 * The command line without its parameters: `MAIL FROM:<a>` (what smtp-server
 * still parses, for the address alone). The library decodes every parameter's
 * xtext byte-wise as latin1 and refuses the whole command as a bad address
 * (`501 5.1.7`) when a byte falls in \x80-\x9f (`caf+C3+80`, a UTF-8 `À`); the
 * parameters are ours (parsed above), so the library never sees them.
 */
export function withoutParams(commandLine: string): string {
  const colon = commandLine.indexOf(':');
  if (colon < 0) return commandLine;
  const head = commandLine.slice(0, colon + 1);
  const afterColon = commandLine.slice(colon + 1).trimStart();
  if (afterColon.startsWith('<')) {
    const close = findAddressEnd(afterColon);
    // `<a@b>SIZE=1` (no space): left whole, so the library refuses the address as before.
    if (close < 0 || /^\S/.test(afterColon.slice(close + 1))) return commandLine;
    return head + afterColon.slice(0, close + 1);
  }
  const sp = afterColon.search(/\s/);
  return head + (sp < 0 ? afterColon : afterColon.slice(0, sp));
}

/**
 * Characters a decoded ENVID or ORCPT may not contain: C0 and C1 controls, DEL,
 * and the Unicode line/paragraph separators. Each would end or split a line of
 * the `Original-Envelope-Id` / `Original-Recipient` fields of a DSN, a log line or
 * a terminal (RFC 3461 §4.4: ENVID is printable US-ASCII; §4.2: ORCPT an address).
 */
// eslint-disable-next-line no-control-regex
const UNSAFE_DECODED = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;

/** Index of the `>` closing an angle-bracketed path, respecting quoted local parts. */
function findAddressEnd(s: string): number {
  let quoted = false;
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (c === '>' && !quoted) return i;
  }
  return -1;
}

/** RFC 3461 §4: xtext = *( xchar / hexchar ), hexchar upper-case only. */
export function decodeXtext(xtext: string): string | undefined {
  if (!/^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/.test(xtext)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < xtext.length; i++) {
    if (xtext[i] === '+') {
      bytes.push(parseInt(xtext.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(xtext.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Encodes a value as xtext: `+`, `=`, controls, space and non-ASCII bytes as +HH. */
export function encodeXtext(value: string): string {
  let out = '';
  for (const b of Buffer.from(value, 'utf8')) {
    out += b < 0x21 || b > 0x7e || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  }
  return out;
}

function needValue(key: string, v: string | true): v is string {
  return v !== true;
}

export function parseMailParams(commandLine: string, policy: ParamPolicy): Parsed<MailParams> {
  const split = splitParams(commandLine);
  if (!Array.isArray(split)) return { ok: false, reply: split };
  let size: number | undefined;
  let body: MailParams['body'];
  let smtpUtf8 = false;
  let ret: MailParams['ret'];
  let envid: Xtext | undefined;
  let inlineDsn: true | undefined;
  let prdr: true | undefined;
  for (const { key, value } of split) {
    switch (key) {
      case 'SIZE':
        if (!needValue(key, value) || !/^\d{1,20}$/.test(value)) return fail(status.badSyntax('SIZE requires a decimal value'));
        size = Number(value);
        if (policy.maxSize !== undefined && policy.maxSize > 0 && size > policy.maxSize) return fail(status.messageTooBig());
        break;
      case 'BODY': {
        const v = needValue(key, value) ? value.toUpperCase() : '';
        if (v !== '7BIT' && v !== '8BITMIME') return fail(status.badSyntax('BODY must be 7BIT or 8BITMIME'));
        body = v;
        break;
      }
      case 'SMTPUTF8':
        if (value !== true) return fail(status.badSyntax('SMTPUTF8 takes no value'));
        smtpUtf8 = true;
        break;
      case 'RET': {
        if (!policy.dsn) return fail(status.unknownParameter('RET parameter not supported'));
        const v = needValue(key, value) ? value.toUpperCase() : '';
        if (v !== 'FULL' && v !== 'HDRS') return fail(status.badSyntax('RET must be FULL or HDRS'));
        ret = v;
        break;
      }
      case 'ENVID': {
        if (!policy.dsn) return fail(status.unknownParameter('ENVID parameter not supported'));
        if (!needValue(key, value)) return fail(status.badSyntax('ENVID requires a value'));
        if (value.length > ENVID_MAX) return fail(status.badSyntax(`ENVID longer than ${ENVID_MAX} characters`));
        const decoded = decodeXtext(value);
        if (decoded === undefined) return fail(status.badSyntax('ENVID is not valid xtext'));
        if (UNSAFE_DECODED.test(decoded)) return fail(status.badSyntax('ENVID contains control characters'));
        envid = { xtext: value, value: decoded };
        break;
      }
      case 'INLINE-DSN':
        if (!policy.inlineDsn) return fail(status.unknownParameter('INLINE-DSN parameter not supported'));
        if (value !== true) return fail(status.badSyntax('INLINE-DSN takes no value'));
        inlineDsn = true;
        break;
      case 'PRDR':
        if (!policy.prdr) return fail(status.unknownParameter('PRDR parameter not supported'));
        if (value !== true) return fail(status.badSyntax('PRDR takes no value'));
        prdr = true;
        break;
      // RFC 4141: CONPERM (MAIL) is never advertised (A1), and CONNEG is a RCPT
      // parameter; both get the 504 RFC 4141 asks for.
      case 'CONPERM':
      case 'CONNEG':
        return fail(status.parameterNotImplemented(`${key} parameter not offered here`));
      default:
        return fail(status.unknownParameter(`unsupported MAIL parameter ${echo(key)}`));
    }
  }
  return {
    ok: true,
    params: {
      smtpUtf8,
      ...(size !== undefined && { size }),
      ...(body && { body }),
      ...(ret && { ret }),
      ...(envid && { envid }),
      ...(inlineDsn && { inlineDsn }),
      ...(prdr && { prdr }),
    },
  };
}

export function parseRcptParams(commandLine: string, policy: ParamPolicy): Parsed<RcptParams> {
  const split = splitParams(commandLine);
  if (!Array.isArray(split)) return { ok: false, reply: split };
  let notify: Notify | undefined;
  let orcpt: Orcpt | undefined;
  let drucof: true | undefined;
  let conneg: true | undefined;
  for (const { key, value } of split) {
    switch (key) {
      case 'NOTIFY': {
        if (!policy.dsn) return fail(status.unknownParameter('NOTIFY parameter not supported'));
        if (!needValue(key, value) || value.length > NOTIFY_MAX) return fail(status.badSyntax('NOTIFY requires a value of at most 28 characters'));
        const items = value.toUpperCase().split(',');
        if (items.includes('NEVER')) {
          if (items.length > 1) return fail(status.badSyntax('NOTIFY=NEVER cannot be combined with other values'));
          notify = 'NEVER';
        } else {
          const kinds: NotifyKind[] = [];
          for (const item of items) {
            if (item !== 'SUCCESS' && item !== 'FAILURE' && item !== 'DELAY') return fail(status.badSyntax(`NOTIFY value "${echo(item)}" is not SUCCESS, FAILURE, DELAY or NEVER`));
            if (kinds.includes(item)) return fail(status.badSyntax(`NOTIFY value ${echo(item)} repeated`));
            kinds.push(item);
          }
          notify = kinds;
        }
        break;
      }
      case 'ORCPT': {
        if (!policy.dsn) return fail(status.unknownParameter('ORCPT parameter not supported'));
        if (!needValue(key, value)) return fail(status.badSyntax('ORCPT requires a value'));
        if (value.length > ORCPT_MAX) return fail(status.badSyntax(`ORCPT longer than ${ORCPT_MAX} characters`));
        const semi = value.indexOf(';');
        const addrType = semi < 0 ? '' : value.slice(0, semi);
        if (!/^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$/.test(addrType)) return fail(status.badSyntax('ORCPT must be addr-type;xtext'));
        const xtext = value.slice(semi + 1);
        const decoded = decodeXtext(xtext);
        if (decoded === undefined || decoded.length === 0) return fail(status.badSyntax('ORCPT address is not valid xtext'));
        if (UNSAFE_DECODED.test(decoded)) return fail(status.badSyntax('ORCPT address contains control characters'));
        orcpt = { addrType, address: { xtext, value: decoded } };
        break;
      }
      case 'DRUCOF':
        if (!policy.drucof) return fail(status.unknownParameter('DRUCOF parameter not supported'));
        if (value !== true) return fail(status.badSyntax('DRUCOF takes no value'));
        drucof = true;
        break;
      case 'CONNEG':
        // RFC 4141 §5: a server that does not do CONNEG answers 504 (A1).
        if (!policy.conneg) return fail(status.parameterNotImplemented('CONNEG parameter not offered here'));
        // Bare (RFC 4141) or =OPTIONAL (the outline's form, A2); the same request.
        if (value !== true && value.toUpperCase() !== 'OPTIONAL') return fail(status.badSyntax('CONNEG takes no value or OPTIONAL'));
        conneg = true;
        break;
      case 'CONPERM': // RFC 4141's MAIL parameter, never advertised (A1)
        return fail(status.parameterNotImplemented('CONPERM parameter not offered here'));
      default:
        return fail(status.unknownParameter(`unsupported RCPT parameter ${echo(key)}`));
    }
  }
  return {
    ok: true,
    params: { ...(notify && { notify }), ...(orcpt && { orcpt }), ...(drucof && { drucof }), ...(conneg && { conneg }) },
  };
}

function fail(reply: Reply): { ok: false; reply: Reply } {
  return { ok: false, reply };
}
