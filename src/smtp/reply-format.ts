/**
 * Reply ⇄ wire text. The only place that prints or parses SMTP reply lines
 * (RFC 5321 §4.2, RFC 2034 enhanced codes, protocols.md A9 bracketed tags).
 * Printing: every line of a multi-line reply repeats the enhanced code (RFC 2034 §3);
 * tags go on the first line right after the enhanced code. Parsing is lenient:
 * enhanced codes and tags are optional, and a malformed line yields undefined.
 */
import type { EnhancedCode, Reply, ReplyTags } from '../model/reply.ts';

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;
const TAG = /^\[(QUEUEID|RETRY-AFTER)\s+([^\]\s]+)\]\s*/i;

function tagText(tags: ReplyTags | undefined): string {
  if (!tags) return '';
  const parts: string[] = [];
  if (tags.queueId !== undefined) parts.push(`[QUEUEID ${tags.queueId}]`);
  if (tags.retryAfter !== undefined) parts.push(`[RETRY-AFTER ${tags.retryAfter}]`);
  return parts.join(' ');
}

/** The text of each line after the basic code: `2.0.0 [QUEUEID x] queued`. */
export function formatTextLines(r: Reply): string[] {
  const tags = tagText(r.tags);
  return r.lines.map((line, i) =>
    [r.enhanced, i === 0 ? tags : '', line].filter((s) => s !== undefined && s !== '').join(' '),
  );
}

/** Full wire form with CRLFs: `250-2.0.0 a\r\n250 2.0.0 b\r\n`. */
export function formatReply(r: Reply): string {
  const lines = formatTextLines(r);
  return lines.map((l, i) => `${r.code}${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n') + '\r\n';
}

/**
 * Parses one complete reply (its lines, CRLF stripped or not). Returns undefined
 * when the lines do not form one well-formed reply (mixed codes, no code).
 */
export function parseReply(input: string | readonly string[]): Reply | undefined {
  const raw = (typeof input === 'string' ? input.split(/\r?\n/) : [...input]).filter((l) => l.length > 0);
  if (raw.length === 0) return undefined;
  let code: number | undefined;
  let enhanced: EnhancedCode | undefined;
  const tags: { queueId?: string; retryAfter?: number } = {};
  const lines: string[] = [];
  for (const [i, line] of raw.entries()) {
    const m = /^(\d{3})([ -]|$)(.*)$/.exec(line);
    if (!m) return undefined;
    const c = Number(m[1]);
    if (code === undefined) code = c;
    else if (c !== code) return undefined;
    if (i < raw.length - 1 && m[2] !== '-') return undefined;
    let text = m[3] ?? '';
    const e = ENHANCED.exec(text);
    if (e && Number(e[1]) === Math.floor(c / 100)) {
      if (i === 0) enhanced = `${e[1]}.${Number(e[2])}.${Number(e[3])}` as EnhancedCode;
      text = text.slice(e[0].length).trimStart();
    }
    if (i === 0) {
      for (let t = TAG.exec(text); t; t = TAG.exec(text)) {
        if (t[1]!.toUpperCase() === 'QUEUEID') tags.queueId = t[2]!;
        else if (/^\d+$/.test(t[2]!)) tags.retryAfter = Number(t[2]);
        text = text.slice(t[0].length);
      }
    }
    lines.push(text);
  }
  if (code === undefined || code < 200 || code > 599) return undefined;
  const hasTags = tags.queueId !== undefined || tags.retryAfter !== undefined;
  return {
    code,
    ...(enhanced ? { enhanced } : {}),
    lines,
    ...(hasTags ? { tags } : {}),
  };
}
