/**
 * CONNEG as a client (protocols.md A3, RFC 4141 §5): turning the replies to
 * `RCPT TO:<r> CONNEG` into answers. A query **succeeds** only when a positive
 * reply carries a parsable RFC 2533 expression (RFC 4141 `CONNEG` lines, with or
 * without enhanced codes, or the older `[CONNEG]` tag); a 4xx/5xx reply, a
 * positive reply without capability lines ("not known"), a timeout, a lost
 * connection or an unparsable expression is a **failed** query — never "no
 * capabilities". A 501/504/555 refuses the parameter, not the recipient (the
 * delivery sends the RCPT again without it; outbound/client.ts does that).
 * Pure: the sessions themselves (probe, or a query inside a delivery) are run by
 * outbound/pool.ts over outbound/client.ts.
 */
import type { CapabilityAnswer } from '../model/capability.ts';
import type { Reply } from '../model/reply.ts';
import { connegExpression } from '../smtp/conneg.ts';
import { parseReply } from '../smtp/reply-format.ts';
import { parseFeatureSet } from './feature-set/index.ts';

/** Where the queried server stands: the next hop itself, or a capability server found by SRV. */
export type QuerySource = 'conneg' | 'srv';

/** The RCPT parameter of a query: the bare RFC 4141 form, which is what we send (A3). */
export const CONNEG_PARAM = 'CONNEG';

/** Reply codes that refuse the CONNEG parameter rather than the recipient (A3; RFC 4141 asks for 504). */
export function refusesConneg(code: number): boolean {
  return code === 501 || code === 504 || code === 555;
}

export function queryFailed(reason: string, source: QuerySource, reply?: Reply): CapabilityAnswer {
  return { kind: 'query-failed', reason, source, ...(reply && { reply }) };
}

const oneLine = (raw: string): string => raw.replace(/\s+/g, ' ').trim().slice(0, 200);

/** The answer carried by the raw reply to one `RCPT … CONNEG`. */
export function answerFromRcpt(raw: string, source: QuerySource = 'conneg'): CapabilityAnswer {
  const r = parseReply(raw);
  if (!r) return queryFailed(`malformed reply to the query: ${oneLine(raw)}`, source);
  if (r.code < 200 || r.code >= 300) {
    if (refusesConneg(r.code)) return queryFailed(`the server refused the CONNEG parameter (${r.code})`, source, r);
    return queryFailed(`the server answered ${r.code} to the query`, source, r);
  }
  const expression = connegExpression(r);
  if (expression === undefined) return queryFailed('capabilities not known to the server (no CONNEG lines in its reply)', source, r);
  let parsed: ReturnType<typeof parseFeatureSet>;
  try {
    parsed = parseFeatureSet(expression);
  } catch (err) {
    // A parser bug must not turn a peer's text into a crash: the query failed.
    return queryFailed(`unparsable capability expression: ${(err as Error).message}`, source, r);
  }
  if (!parsed.ok) return queryFailed(`unparsable capability expression: ${parsed.error} (at ${parsed.position})`, source, r);
  return { kind: 'known', expression, source };
}

/** What one session gave for the queried recipients (wire addresses). */
export interface QueryReplies {
  /** The reply to MAIL FROM, when it was read. */
  readonly mail?: string;
  /** The reply to each RCPT that carried CONNEG, by wire address. */
  readonly rcpt: ReadonlyMap<string, string>;
  /** Why the session ended before every reply was read (timeout, lost connection …). */
  readonly failure?: { readonly reason: string; readonly reply?: Reply };
}

/**
 * An answer for every queried recipient (wire addresses): from its RCPT reply,
 * or a failed query saying why there was none (MAIL refused, timeout, lost connection).
 */
export function queryAnswers(recipients: readonly string[], got: QueryReplies, source: QuerySource = 'conneg'): Map<string, CapabilityAnswer> {
  const out = new Map<string, CapabilityAnswer>();
  const mail = got.mail !== undefined ? parseReply(got.mail) : undefined;
  const mailRefused = got.mail !== undefined && (!mail || mail.code >= 300);
  for (const r of recipients) {
    const raw = got.rcpt.get(r);
    if (mailRefused) out.set(r, queryFailed(`MAIL FROM refused: ${oneLine(got.mail!)}`, source, mail));
    else if (raw !== undefined) out.set(r, answerFromRcpt(raw, source));
    else if (got.failure) out.set(r, queryFailed(got.failure.reason, source, got.failure.reply));
    else out.set(r, queryFailed('no reply to the query', source));
  }
  return out;
}
