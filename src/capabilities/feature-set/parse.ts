/**
 * RFC 2533 feature-set expressions → parse tree (pure, total).
 *
 *   filter     = "(" filtercomp ")" *( ";" parameter )
 *   filtercomp = "&" 1*filter / "|" 1*filter / "!" filter / item
 *   item       = attr ("=" / "<=" / ">=") value / attr "=" "[" setentry *("," setentry) "]"
 *   setentry   = value / value ".." value                       (RFC 2738)
 *   value      = Boolean / number ("1", "-2", "200/100") / token / DQUOTE string DQUOTE
 *
 * Whitespace may appear between elements. A parameter after a filter (`;q=0.5`) is
 * accepted and ignored. Never throws: a bad expression gives the 0-based character
 * offset of the first thing that could not be read.
 */
import type { FeatureExpr, FeatureValue, SetEntry } from '../../model/feature-set.ts';

export type ParseResult = { readonly ok: true; readonly expr: FeatureExpr } | { readonly ok: false; readonly error: string; readonly position: number };

/** Deeper nesting than any real capability needs; keeps the recursion bounded. */
export const MAX_DEPTH = 64;
export const MAX_LENGTH = 65_536;

class ParseError extends Error {
  constructor(
    message: string,
    readonly position: number,
  ) {
    super(message);
  }
}

const isAlpha = (c: string | undefined): boolean => c !== undefined && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
/** ftag characters (RFC 2506 allows URN-style tags: letters, digits, - . : + _ /). */
const isTagChar = (c: string | undefined): boolean => isAlpha(c) || isDigit(c) || (c !== undefined && '-.:+_'.includes(c));
const isTokenChar = (c: string | undefined): boolean => isAlpha(c) || isDigit(c) || c === '-';

class Parser {
  private pos = 0;
  constructor(private readonly src: string) {}

  parse(): FeatureExpr {
    this.ws();
    const expr = this.filter(0);
    this.ws();
    if (this.pos < this.src.length) this.fail(`unexpected "${this.src[this.pos]}" after the expression`);
    return expr;
  }

  private fail(message: string, at = this.pos): never {
    throw new ParseError(message, at);
  }

  private ws(): void {
    while (this.pos < this.src.length && /\s/.test(this.src[this.pos]!)) this.pos++;
  }

  private peek(): string | undefined {
    return this.src[this.pos];
  }

  private expect(c: string, what: string): void {
    if (this.src[this.pos] !== c) this.fail(`expected ${what}${this.found()}`);
    this.pos++;
  }

  private found(): string {
    return this.pos >= this.src.length ? ', found end of expression' : `, found "${this.src[this.pos]}"`;
  }

  private filter(depth: number): FeatureExpr {
    if (depth > MAX_DEPTH) this.fail(`nested more than ${MAX_DEPTH} levels deep`);
    this.expect('(', '"("');
    this.ws();
    const expr = this.filtercomp(depth);
    this.ws();
    this.expect(')', '")"');
    // *( ";" parameter ): q-values and extensions, read and ignored.
    for (;;) {
      const save = this.pos;
      this.ws();
      if (this.peek() !== ';') {
        this.pos = save;
        break;
      }
      this.pos++;
      this.ws();
      const nameAt = this.pos;
      if (!isAlpha(this.peek())) this.fail(`expected a parameter name after ";"${this.found()}`);
      while (isTokenChar(this.peek())) this.pos++;
      const name = this.src.slice(nameAt, this.pos).toLowerCase();
      this.ws();
      this.expect('=', '"=" after the parameter name');
      this.ws();
      const valueAt = this.pos;
      const value = this.value();
      if (name === 'q' && (value.kind !== 'number' || value.value < 0 || value.value > 1)) this.fail('q must be a number from 0 to 1', valueAt);
    }
    return expr;
  }

  private filtercomp(depth: number): FeatureExpr {
    const c = this.peek();
    if (c === '&' || c === '|') {
      this.pos++;
      const items: FeatureExpr[] = [];
      this.ws();
      while (this.peek() === '(') {
        items.push(this.filter(depth + 1));
        this.ws();
      }
      if (items.length === 0) this.fail(`expected "(" to start the first filter of "${c}"${this.found()}`);
      return { op: c === '&' ? 'and' : 'or', items };
    }
    if (c === '!') {
      this.pos++;
      this.ws();
      return { op: 'not', item: this.filter(depth + 1) };
    }
    return this.item();
  }

  private item(): FeatureExpr {
    const tagAt = this.pos;
    if (!isAlpha(this.peek())) this.fail(`expected "&", "|", "!" or a feature tag${this.found()}`);
    while (isTagChar(this.peek())) this.pos++;
    const tag = this.src.slice(tagAt, this.pos).toLowerCase();
    this.ws();
    let rel: '=' | '<=' | '>=';
    if (this.src.startsWith('<=', this.pos)) rel = '<=';
    else if (this.src.startsWith('>=', this.pos)) rel = '>=';
    else if (this.peek() === '=') rel = '=';
    else this.fail(`expected "=", "<=" or ">=" after "${tag}"${this.found()}`);
    this.pos += rel.length;
    this.ws();
    if (rel === '=' && this.peek() === '[') return { op: 'set', tag, entries: this.set() };
    const valueAt = this.pos;
    const value = this.value();
    if (rel !== '=' && value.kind !== 'number') this.fail(`"${rel}" needs a number`, valueAt);
    return { op: 'cmp', tag, rel, value };
  }

  private set(): SetEntry[] {
    this.pos++; // "["
    const entries: SetEntry[] = [];
    for (;;) {
      this.ws();
      const loAt = this.pos;
      const lo = this.value();
      this.ws();
      if (this.src.startsWith('..', this.pos)) {
        this.pos += 2;
        this.ws();
        const hiAt = this.pos;
        const hi = this.value();
        if (lo.kind !== 'number') this.fail('a range needs numbers', loAt);
        if (hi.kind !== 'number') this.fail('a range needs numbers', hiAt);
        entries.push({ kind: 'range', lo, hi });
        this.ws();
      } else {
        entries.push({ kind: 'value', value: lo });
      }
      if (this.peek() === ',') {
        this.pos++;
        continue;
      }
      this.expect(']', '"," or "]" in the set');
      return entries;
    }
  }

  private value(): FeatureValue {
    const at = this.pos;
    const c = this.peek();
    if (c === '"') {
      this.pos++;
      while (this.pos < this.src.length && this.src[this.pos] !== '"') {
        const code = this.src.charCodeAt(this.pos);
        if (code < 0x20 || code > 0x7e) this.fail('a quoted string may hold only printable US-ASCII');
        this.pos++;
      }
      if (this.pos >= this.src.length) this.fail('unterminated quoted string', at);
      this.pos++;
      return { kind: 'string', value: this.src.slice(at + 1, this.pos - 1) };
    }
    if (c === '+' || c === '-' || isDigit(c)) {
      if (c === '+' || c === '-') this.pos++;
      if (!isDigit(this.peek())) this.fail(`expected a digit${this.found()}`);
      while (isDigit(this.peek())) this.pos++;
      let value = Number(this.src.slice(at, this.pos));
      if (this.peek() === '/') {
        this.pos++;
        const denAt = this.pos;
        if (!isDigit(this.peek())) this.fail(`expected the denominator's digits${this.found()}`);
        while (isDigit(this.peek())) this.pos++;
        const den = Number(this.src.slice(denAt, this.pos));
        if (den === 0) this.fail('division by zero', denAt);
        value = value / den;
      } else if (this.peek() === '.' && isDigit(this.src[this.pos + 1])) {
        // Decimal fractions appear in q-values (RFC 2533 qvalue); accepted as numbers.
        this.pos++;
        while (isDigit(this.peek())) this.pos++;
        value = Number(this.src.slice(at, this.pos));
      }
      if (isAlpha(this.peek())) this.fail(`unexpected "${this.peek()}" in a number`);
      return { kind: 'number', value, text: this.src.slice(at, this.pos) };
    }
    if (isAlpha(c)) {
      while (isTokenChar(this.peek())) this.pos++;
      const text = this.src.slice(at, this.pos);
      const upper = text.toUpperCase();
      if (upper === 'TRUE' || upper === 'FALSE') return { kind: 'boolean', value: upper === 'TRUE' };
      return { kind: 'token', value: text };
    }
    this.fail(`expected a value (number, token or quoted string)${this.found()}`);
  }
}

/** Parses one RFC 2533 filter. Errors carry the 0-based offset into `source`. */
export function parseExpression(source: string): ParseResult {
  if (source.length > MAX_LENGTH) return { ok: false, error: `expression longer than ${MAX_LENGTH} characters`, position: MAX_LENGTH };
  try {
    return { ok: true, expr: new Parser(source).parse() };
  } catch (err) {
    if (err instanceof ParseError) return { ok: false, error: err.message, position: err.position };
    /* c8 ignore next */
    return { ok: false, error: `cannot parse: ${(err as Error).message}`, position: 0 };
  }
}
