/**
 * Reply — every SMTP answer, in and out, as a value (maddy's SMTPError, Postfix's
 * DSN struct). Created once by `reply()`, which derives the enhanced class from the
 * basic code, then carried unchanged to the wire, the queue and the DSN.
 * Only `smtp/reply-format.ts` turns a Reply into wire text or back.
 */

/** RFC 3463 enhanced status code: class.subject.detail, class always = code / 100. */
export type EnhancedCode = `${2 | 4 | 5}.${number}.${number}`;

/** IMAP-style bracketed tags after the enhanced code (protocols.md A9). */
export interface ReplyTags {
  readonly queueId?: string;
  readonly retryAfter?: number;
}

export interface Reply {
  /** Basic reply code: 250, 352, 353, 451, 550 … */
  readonly code: number;
  /** Absent for 3xx (RFC 2034 gives class 3 no enhanced code) and for peers that send none. */
  readonly enhanced?: EnhancedCode;
  /** Text only: no code, no enhanced code, no tags. At least one line. */
  readonly lines: readonly string[];
  readonly tags?: ReplyTags;
}

/**
 * Builds a Reply whose enhanced class is derived from the basic code, so the two
 * can never disagree (the inconsistency smtp-server's guess table and maddy's
 * SMTPEnchCode allow). 3xx replies carry no enhanced code.
 */
export function reply(code: number, subject: number, detail: number, ...lines: string[]): Reply {
  const cls = Math.floor(code / 100);
  if (cls < 2 || cls > 5) throw new RangeError(`reply code ${code} out of range`);
  const text = lines.length > 0 ? lines : [''];
  if (cls === 3) return { code, lines: text };
  return { code, enhanced: `${cls as 2 | 4 | 5}.${subject}.${detail}`, lines: text };
}

/** A reply with tags added (queue id on the 250 after DATA, retry hint on a 451). */
export function withTags(r: Reply, tags: ReplyTags): Reply {
  return { ...r, tags: { ...r.tags, ...tags } };
}

export const isPositive = (r: Reply): boolean => r.code >= 200 && r.code < 400;
export const isTransient = (r: Reply): boolean => r.code >= 400 && r.code < 500;
export const isPermanent = (r: Reply): boolean => r.code >= 500;

/** One-line human/log form, e.g. `550 5.1.1 no such user`. */
export function replyText(r: Reply): string {
  return [String(r.code), r.enhanced, r.lines.join(' / ')].filter(Boolean).join(' ');
}
