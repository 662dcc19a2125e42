/**
 * Fuzz-style tests of the RFC 2533 parser and matcher: random strings over the
 * grammar's alphabet and random mutations of valid expressions never throw;
 * each is either parsed or rejected with a position inside the input; whatever
 * parses can be matched against random parts without throwing. Seeded, so a
 * failure is reproducible.
 */
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../helpers/random.ts';
import { parseFeatureSet, type PartFeatures } from '../../src/capabilities/feature-set/index.ts';


const ALPHABET = '()&|!=<>[],.;"/ -+0123456789abcxyzTFpix-colrtype\t\n\u00e9\u0000';
const VALID = [
  '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=1024)))',
  '(& (type="image/tiff") (color=Binary) (paper-size=[letter,A4]) (dpi=[200,300]))',
  '(! (& (pix-x=[100..200, 640]) (dpi-xyratio=200/100)));q=0.5',
  '(& (type="text/plain") (charset=[utf-8,us-ascii]) (size<=1048576))',
];
const PARTS: PartFeatures[] = [
  { type: 'text/plain', charset: 'utf-8', size: 100 },
  { type: 'image/jpeg', 'pix-x': 4000, 'pix-y': 3000, color: 'full', size: 1 },
  { type: 'image/tiff', 'pix-x': 1728, 'pix-y': 2200, color: 'binary', dpi: 200, 'paper-size': 'a4' },
  { type: 'image/png', unmeasured: ['pix-x', 'pix-y', 'color', 'dpi'] },
];

function check(expr: string): void {
  let r: ReturnType<typeof parseFeatureSet>;
  expect(() => (r = parseFeatureSet(expr)), JSON.stringify(expr)).not.toThrow();
  r = parseFeatureSet(expr);
  if (r.ok) {
    for (const p of PARTS) {
      const m = r.features.matches(p);
      expect(typeof m.ok).toBe('boolean');
      if (!m.ok) expect(m.reasons.length).toBeGreaterThan(0);
      expect(Array.isArray(r.features.alternatives(p, ['pix-x', 'type']))).toBe(true);
    }
  } else {
    expect(typeof r.error).toBe('string');
    expect(r.error.length).toBeGreaterThan(0);
    expect(Number.isInteger(r.position)).toBe(true);
    expect(r.position).toBeGreaterThanOrEqual(0);
    expect(r.position).toBeLessThanOrEqual(expr.length);
  }
}

describe('feature-set fuzz', () => {
  it('random strings over the grammar alphabet: parsed, or rejected with a position', () => {
    const rand = seededRandom(2533);
    for (let i = 0; i < 3000; i++) {
      const len = Math.floor(rand() * 40);
      let s = '';
      for (let j = 0; j < len; j++) s += ALPHABET[Math.floor(rand() * ALPHABET.length)];
      check(s);
    }
  });

  it('random mutations of valid expressions (insert, delete, replace, swap, truncate)', () => {
    const rand = seededRandom(4141);
    let parsed = 0;
    for (let i = 0; i < 4000; i++) {
      let s = VALID[i % VALID.length]!;
      const edits = 1 + Math.floor(rand() * 3);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rand() * (s.length + 1));
        const ch = ALPHABET[Math.floor(rand() * ALPHABET.length)]!;
        switch (Math.floor(rand() * 5)) {
          case 0:
            s = s.slice(0, at) + ch + s.slice(at);
            break;
          case 1:
            s = s.slice(0, at) + s.slice(at + 1);
            break;
          case 2:
            s = s.slice(0, at) + ch + s.slice(at + 1);
            break;
          case 3:
            s = s.slice(0, at) + s.slice(at + 1, at + 2) + s.slice(at, at + 1) + s.slice(at + 2);
            break;
          default:
            s = s.slice(0, at);
        }
      }
      check(s);
      if (parseFeatureSet(s).ok) parsed++;
    }
    // Some mutations stay valid (e.g. a changed digit): both paths are exercised.
    expect(parsed).toBeGreaterThan(0);
    expect(parsed).toBeLessThan(4000);
  });

  it('the error position points at the first character that cannot be read', () => {
    const rand = seededRandom(7);
    for (let i = 0; i < 500; i++) {
      const valid = VALID[i % VALID.length]!;
      const at = 1 + Math.floor(rand() * (valid.length - 2));
      const broken = valid.slice(0, at) + '\u0001' + valid.slice(at);
      const r = parseFeatureSet(broken);
      // A control character is never valid: the parser must stop at or before it.
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.position).toBeLessThanOrEqual(at);
    }
  });

  it('long and deep inputs stay bounded', () => {
    check('('.repeat(100_000));
    check(`(& ${'(a=1) '.repeat(5000)})`);
    check(`(pix-x=[${Array.from({ length: 2000 }, (_, i) => i).join(',')}])`);
    check('"'.repeat(70_000));
  });
});
