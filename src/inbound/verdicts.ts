/**
 * Per-recipient verdicts (protocols.md A4, A4b, A10): one engine, whatever the
 * wire form (INLINE-DSN's 352/353, PRDR's 353, or the old way: a failure DSN).
 * The engine asks its verdict sources twice: at RCPT (refuse outright, accept,
 * or "depends on the content"), and after the data, with facts measured from the
 * message (size, decoded text of text/* parts, media types of all parts), for a
 * verdict per recipient. The sources are the config `policies` (`policySource`)
 * and whatever a later stage adds (issue 6: DRUCOF fail-fast) — pass more sources
 * to the engine, nothing else changes. A source may answer at once or with a
 * promise (the fail-fast source reads the capability cache and plans the
 * conversion); the engine itself does no I/O, the facts are measured by
 * receive.ts and what was said at RCPT is remembered by the transaction
 * (session.ts).
 */
import { reply, type Reply } from '../model/reply.ts';
import { RecipientTable } from '../capabilities/registry.ts';
import { parseReply } from '../smtp/reply-format.ts';

/** One entry of the config `policies` (A10). Structurally the schema's policy object. */
export interface ContentPolicy {
  /** Accept every message: no content rule applies (wins over the rules below). */
  readonly acceptAll?: boolean;
  /** Refuse at RCPT with this reply, e.g. `550 5.1.1 this recipient no longer exists` (wins over all). */
  readonly refuse?: string;
  /** Refuse a message whose text/* parts contain one of these words (whole words, any case). */
  readonly refuseWords?: readonly string[];
  /** Refuse a message larger than this many bytes. */
  readonly maxSize?: number;
  /** Refuse a message with a part of one of these media types (`type/subtype`, or `type/*`). */
  readonly refuseTypes?: readonly string[];
}

/** What the engine knows of a recipient (at RCPT and after the data). */
export interface RecipientFacts {
  readonly address: string;
  /** The client asked DRUCOF for this recipient (the fail-fast source of issue 6 reads it). */
  readonly drucof: boolean;
  /**
   * After the data: a source said at RCPT that its verdict depends on the content
   * (the transaction remembers the disposition, so the sources are not asked again).
   */
  readonly dependsOnContent?: boolean;
}

/** What receive.ts measured in the message. */
export interface MessageFacts {
  /** The message as the client sent it (dot-unstuffed, before our trace header). */
  readonly raw: Buffer;
  /** Bytes of the message as the client sent it (dot-unstuffed, before our trace header). */
  readonly size: number;
  /** The decoded text of every text/* part (empty when nobody needed it). */
  readonly texts: readonly string[];
  /** Media types of every part, multipart containers included, lower-case, no parameters. */
  readonly types: readonly string[];
}

/** A source's opinion at RCPT; undefined: none. */
export type RcptOpinion =
  | { readonly kind: 'refuse'; readonly reply: Reply }
  | { readonly kind: 'accept'; readonly text: string }
  | { readonly kind: 'content' };

/** A value now, or later. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * A source of verdicts. `afterData` is asked for every recipient accepted at
 * RCPT; it returns a 4xx/5xx refusal whose text does not name the recipient (the
 * engine adds `<address>`), or undefined for "no objection". Either may answer
 * with a promise; a source that can fail should answer "no opinion" rather than
 * reject (a rejection fails the RCPT or the whole message with a 451).
 */
export interface VerdictSource {
  readonly name: string;
  atRcpt(r: RecipientFacts): MaybePromise<RcptOpinion | undefined>;
  afterData(r: RecipientFacts, m: MessageFacts): MaybePromise<Reply | undefined>;
}

/** What the relay answers at RCPT. */
export type RcptDisposition =
  /** Refused now; the recipient never joins the transaction. */
  | { readonly kind: 'refuse'; readonly reply: Reply }
  /**
   * Accepted. `dependsOnContent`: a source can only decide after the data, so
   * an INLINE-DSN client gets 352 instead of `reply`.
   */
  | { readonly kind: 'accept'; readonly reply: Reply; readonly dependsOnContent: boolean };

// ---- the wire texts the seed dialog uses (A4) ------------------------------

/** 352 at RCPT (class 3: no enhanced code, RFC 2034). */
export const WAIT_FOR_CONFIRMATION = (): Reply => reply(352, 0, 0, 'recipient looks okay but wait for confirmation');
/** The line of a recipient that accepts the content, in a 353 sequence. */
export const acceptsContent = (address: string): Reply => reply(250, 1, 5, `<${address}> accepts the content`);

export class VerdictEngine {
  constructor(private readonly sources: readonly VerdictSource[]) {}

  /**
   * The answer at RCPT: the first source (in order) that refuses decides; else
   * accepted, depending on the content when any source says so; the text of the
   * 250 is the first source's accept text, or `recipient ok`. The sources are
   * asked in order, one after the other (a later one is not asked once an
   * earlier one refused).
   */
  async atRcpt(r: RecipientFacts): Promise<RcptDisposition> {
    let dependsOnContent = false;
    let text: string | undefined;
    for (const s of this.sources) {
      const o = await s.atRcpt(r);
      if (!o) continue;
      if (o.kind === 'refuse') return { kind: 'refuse', reply: o.reply };
      if (o.kind === 'content') dependsOnContent = true;
      else text ??= o.text;
    }
    return { kind: 'accept', reply: reply(250, 1, 5, text ?? 'recipient ok'), dependsOnContent };
  }

  /**
   * Whether any recipient's verdict needs the message's parts measured (parsing
   * costs time): one whose disposition at RCPT depended on the content.
   */
  needsFacts(recipients: readonly RecipientFacts[]): boolean {
    return recipients.some((r) => r.dependsOnContent === true);
  }

  /**
   * One verdict per recipient, keyed by its address as given: `250 2.1.5 <a>
   * accepts the content`, or the refusal with `<a>` in front of its text. When
   * several sources refuse, a permanent refusal beats a transient one (it is
   * final whatever the other says); between equals the first source wins. All
   * questions are asked at once (a source that plans per message shares the work
   * between recipients itself); the answers are weighed in source order.
   */
  async afterData(recipients: readonly RecipientFacts[], facts: MessageFacts): Promise<Map<string, Reply>> {
    const answers = await Promise.all(recipients.map((r) => Promise.all(this.sources.map((s) => s.afterData(r, facts)))));
    const out = new Map<string, Reply>();
    for (const [i, r] of recipients.entries()) {
      let worst: Reply | undefined;
      for (const v of answers[i]!) {
        if (!v || v.code < 400) continue;
        if (!worst || (v.code >= 500 && worst.code < 500)) worst = v;
      }
      out.set(r.address, worst ? naming(r.address, worst) : acceptsContent(r.address));
    }
    return out;
  }
}

/** The refusal with the recipient in angle brackets first (A4: "each starting with the recipient"). */
function naming(address: string, r: Reply): Reply {
  const [first = '', ...rest] = r.lines;
  return { ...r, lines: [`<${address}> ${first}`.trimEnd(), ...rest] };
}

// ---- the config policies as a source (A10) ---------------------------------

/**
 * Status codes, and why:
 * - `refuseWords`: `550 5.6.0` — the seed dialog's own verdict (A4). 550 is the
 *   per-recipient "not taken" code (as in LMTP's per-recipient replies); X.6.0
 *   "other media error": the content itself is what this recipient refuses.
 * - `maxSize`: `552 5.2.3` — 552 is RFC 5321/1870's "exceeded storage allocation";
 *   X.2.3 is RFC 3463's *per-mailbox* length limit, "used when the per-mailbox
 *   limit is less than the general system limit" — exactly this rule. (5.3.4 stays
 *   the relay-wide `limits.maxMessageSize` answer, which refuses every recipient.)
 * - `refuseTypes`: `550 5.6.1` — X.6.1 "media not supported": a part's media type
 *   is one this recipient does not take.
 * - `refuse`: the configured reply as written; a text without a code is `550 5.7.1`
 *   (refused by policy), a code without enhanced code gets X.7.1 too.
 */
export const policyVerdicts = {
  words: () => reply(550, 6, 0, 'refuses the content'),
  size: (max: number) => reply(552, 2, 3, `refuses messages over ${max} bytes`),
  type: (type: string) => reply(550, 6, 1, `refuses content of type ${type}`),
} as const;

/** The configured `refuse` text as a Reply (A10: "answers at RCPT with the configured reply"). */
export function refusalReply(text: string): Reply {
  const parsed = parseReply(text.trim());
  if (parsed && parsed.code >= 400 && parsed.code < 600) {
    if (parsed.enhanced) return { code: parsed.code, enhanced: parsed.enhanced, lines: parsed.lines };
    return reply(parsed.code, 7, 1, ...parsed.lines);
  }
  return reply(550, 7, 1, text.trim() || 'recipient refused');
}

function hasContentRule(p: ContentPolicy): boolean {
  return (p.refuseWords?.length ?? 0) > 0 || p.maxSize !== undefined || (p.refuseTypes?.length ?? 0) > 0;
}

/** Whole-word, case-insensitive, Unicode-aware: `fight` matches "Fight!" but not "fighter". */
export function containsWord(text: string, word: string): boolean {
  const w = word.trim();
  if (w === '') return false;
  const escaped = w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<![\\p{L}\\p{N}_])${escaped}(?![\\p{L}\\p{N}_])`, 'iu').test(text);
}

/** `image/*` matches every image type; otherwise an exact, case-insensitive match. */
export function typeMatches(type: string, pattern: string): boolean {
  const t = type.toLowerCase();
  const p = pattern.trim().toLowerCase();
  return p.endsWith('/*') ? t.startsWith(p.slice(0, -1)) : t === p;
}

/**
 * The `policies` of the config as a verdict source. The entry for the exact
 * address wins over the one for `*@domain`; entries are not merged (an exact
 * entry replaces the domain's rules for that address, so `postmaster` with
 * `acceptAll` is not subject to the domain's `maxSize`). Within an entry:
 * `refuse` first, then `acceptAll`, then the content rules (size, types, words).
 */
export function policySource(policies: Readonly<Record<string, ContentPolicy>>): VerdictSource {
  const table = new RecipientTable(policies);
  return {
    name: 'policies',
    atRcpt(r) {
      const p = table.get(r.address);
      if (!p) return undefined;
      if (p.refuse !== undefined) return { kind: 'refuse', reply: refusalReply(p.refuse) };
      if (p.acceptAll) return { kind: 'accept', text: 'this recipient accepts all messages' };
      return hasContentRule(p) ? { kind: 'content' } : undefined;
    },
    afterData(r, m) {
      const p = table.get(r.address);
      if (!p || p.refuse !== undefined || p.acceptAll || !hasContentRule(p)) return undefined;
      if (p.maxSize !== undefined && m.size > p.maxSize) return policyVerdicts.size(p.maxSize);
      for (const pattern of p.refuseTypes ?? []) {
        const hit = m.types.find((t) => typeMatches(t, pattern));
        if (hit) return policyVerdicts.type(hit);
      }
      for (const word of p.refuseWords ?? []) {
        if (m.texts.some((t) => containsWord(t, word))) return policyVerdicts.words();
      }
      return undefined;
    },
  };
}
