/**
 * CONNEG capability lines in RCPT replies (RFC 4141 §5 shape, protocols.md A3):
 * the first line is the ordinary RCPT text; each further line begins with the
 * token `CONNEG` (after the enhanced code, which reply-format prints); the text
 * after the tokens, joined with single spaces, is one RFC 2533 expression.
 * Readers also accept the older `[CONNEG]` tag. Pure; no expression parsing here.
 */
import type { Reply } from '../model/reply.ts';

/** Longest expression text per line, so a line stays well under RFC 5321's 512 octets. */
const CHUNK = 400;

/** The Reply lines for a positive RCPT reply carrying `expression`. */
export function connegLines(rcptText: string, expression: string): string[] {
  const lines = [rcptText];
  let rest = expression.trim().replace(/\s+/g, ' ');
  while (rest.length > 0) {
    let cut = rest.length <= CHUNK ? rest.length : rest.lastIndexOf(' ', CHUNK);
    if (cut <= 0) cut = Math.min(rest.length, CHUNK);
    lines.push(`CONNEG ${rest.slice(0, cut).trim()}`);
    rest = rest.slice(cut).trim();
  }
  return lines;
}

/**
 * The expression carried by a reply, or undefined when it carries none ("not known").
 * Only positive replies carry capabilities.
 */
export function connegExpression(r: Reply): string | undefined {
  if (r.code < 200 || r.code >= 300) return undefined;
  const parts: string[] = [];
  for (const line of r.lines.slice(1)) {
    const m = /^\s*(?:CONNEG|\[CONNEG\])(?:\s+(.*))?$/i.exec(line);
    if (m) parts.push((m[1] ?? '').trim());
  }
  const expression = parts.filter(Boolean).join(' ').trim();
  return expression === '' ? undefined : expression;
}
