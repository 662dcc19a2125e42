/**
 * RFC 2533 feature sets: the grammar (rfc-digest.md §4), errors with positions,
 * satisfiability matching per protocols.md A7, and the part formatter.
 */
import { describe, expect, it } from 'vitest';
import { featureSet, formatFeatures, parseFeatureSet, type PartFeatures } from '../../src/capabilities/feature-set/index.ts';

function fs(expr: string) {
  const r = parseFeatureSet(expr);
  if (!r.ok) throw new Error(`${expr}: ${r.error} at ${r.position}`);
  return r.features;
}

describe('parseFeatureSet: the grammar', () => {
  it.each([
    '(type="text/plain")',
    '(& (type="image/jpeg") (pix-x<=1024))',
    '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=1024)))',
    '(! (color=binary))',
    '(pix-x=[100..200])',
    '(dpi=[200,300])',
    '(pix-x=[640..1024, 1728])',
    '(dpi-xyratio=200/100)',
    '(pix-x>=-5)',
    '(pix-x<=+5)',
    '(color=Binary)',
    '(ua-media=TRUE)',
    '(type="image/jpeg");q=0.5',
    '(& (type="text/plain");q=1 (charset=utf-8))',
    '  (&(type="text/plain")(charset=utf-8))  ',
    '(& (image-file-structure=TIFF-minimal)\n (color=Binary)\n (paper-size=[letter,A4]) )',
    '(UA-Media=screen)',
  ])('accepts %s', (expr) => {
    const r = parseFeatureSet(expr);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    if (r.ok) expect(r.features.expression).toBe(expr.trim());
  });

  it.each([
    ['', 0, /expected "\("/],
    ['type="text/plain"', 0, /expected "\("/],
    ['(type="text/plain"', 18, /expected "\)"/],
    ['(type="text/plain))', 6, /unterminated quoted string/],
    ['(& )', 3, /first filter/],
    ['(| foo)', 3, /first filter/],
    ['(pix-x<1024)', 6, /expected "=", "<=" or ">="/],
    ['(pix-x!=1)', 6, /expected "=", "<=" or ">="/],
    ['(pix-x<="big")', 8, /needs a number/],
    ['(pix-x=[1..a])', 11, /range needs numbers/],
    ['(pix-x=[1,2)', 11, /"," or "\]"/],
    ['(dpi=200/0)', 9, /division by zero/],
    ['(pix-x=12abc)', 9, /in a number/],
    ['(type="text/plain") x', 20, /after the expression/],
    ['(=1)', 1, /feature tag/],
    ['(type="a"\u0001)', 9, /expected "\)"/],
    ['(type="ü")', 7, /printable US-ASCII/],
    ['(type=)', 6, /expected a value/],
    ['(type="x");q=2', 13, /q must be/],
    ['(type="x");', 11, /parameter name/],
  ])('rejects %j at %i', (expr, position, message) => {
    const r = parseFeatureSet(expr);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.position).toBe(position);
      expect(r.error).toMatch(message);
    }
  });

  it('rejects nesting deeper than the limit instead of overflowing the stack', () => {
    const deep = '(!'.repeat(10_000) + '(a=1)' + ')'.repeat(10_000);
    const r = parseFeatureSet(deep);
    expect(r.ok).toBe(false);
  });
});

describe('matching (RFC 2533 satisfiability, A7)', () => {
  const jpeg = (w: number, h = Math.round((w * 3) / 4), extra: Partial<PartFeatures> = {}): PartFeatures => ({ type: 'image/jpeg', 'pix-x': w, 'pix-y': h, color: 'full', ...extra });
  const text: PartFeatures = { type: 'text/plain', charset: 'utf-8', size: 10 };
  const caps = fs('(| (type="text/plain") (& (type="image/jpeg") (pix-x<=1024)))');

  it.each<[string, PartFeatures, boolean]>([
    ['text fits the text branch', text, true],
    ['small jpeg fits', jpeg(800), true],
    ['jpeg at the limit fits', jpeg(1024), true],
    ['large jpeg does not', jpeg(4000), false],
    ['png does not', { type: 'image/png', 'pix-x': 10, 'pix-y': 10 }, false],
    ['media type compares case-insensitively', { type: 'TEXT/PLAIN', charset: 'utf-8' }, true],
  ])('%s', (_name, part, ok) => {
    expect(caps.matches(part).ok).toBe(ok);
  });

  it('a tag that does not apply to a part does not constrain it', () => {
    expect(fs('(& (type="text/plain") (pix-x<=100))').matches(text).ok).toBe(true);
    expect(fs('(pix-x<=100)').matches(text).ok).toBe(true);
    expect(fs('(charset=utf-8)').matches(jpeg(10)).ok).toBe(true);
  });

  it('contradictory constraints on a free tag are still unsatisfiable', () => {
    expect(fs('(& (type="text/plain") (pix-x<=100) (pix-x>=200))').matches(text).ok).toBe(false);
    expect(fs('(& (pix-x=[1..5]) (! (pix-x=[1..5])))').matches(text).ok).toBe(false);
    expect(fs('(& (paper-size=a4) (paper-size=letter))').matches(text).ok).toBe(false);
  });

  it('an image whose values cannot be measured satisfies no constraint on them, negated or not', () => {
    const broken: PartFeatures = { type: 'image/jpeg', unmeasured: ['pix-x', 'pix-y', 'color', 'dpi'] };
    expect(caps.matches(broken).ok).toBe(false);
    expect(fs('(! (pix-x>=5000))').matches(broken).ok).toBe(false);
    expect(fs('(type="image/jpeg")').matches(broken).ok).toBe(true);
    const r = caps.matches(broken);
    if (!r.ok) expect(r.reasons.join(' ')).toMatch(/pix-x could not be measured/);
  });

  it('token values compare case-insensitively (RFC 2531 Binary = RFC 2534 binary)', () => {
    const fax = fs('(& (type="image/tiff") (color=Binary) (paper-size=[letter,A4]))');
    expect(fax.matches({ type: 'image/tiff', color: 'binary', 'paper-size': 'a4' }).ok).toBe(true);
    expect(fax.matches({ type: 'image/tiff', color: 'grey' }).ok).toBe(false);
    expect(fs('(charset=UTF-8)').matches(text).ok).toBe(true);
  });

  it('quoted strings of other tags compare exactly', () => {
    const part = (v: string) => ({ type: 'x', 'x-name': v }) as unknown as PartFeatures;
    expect(fs('(x-name="A b")').matches(part('A b')).ok).toBe(true);
    expect(fs('(x-name="A b")').matches(part('a b')).ok).toBe(false);
  });

  it('ranges, sets, negation and rationals', () => {
    expect(fs('(pix-x=[100..200])').matches(jpeg(150)).ok).toBe(true);
    expect(fs('(pix-x=[100..200])').matches(jpeg(250)).ok).toBe(false);
    expect(fs('(pix-x=[50, 100..200])').matches(jpeg(50)).ok).toBe(true);
    expect(fs('(! (pix-x=[100..200]))').matches(jpeg(250)).ok).toBe(true);
    expect(fs('(! (pix-x=[100..200]))').matches(jpeg(150)).ok).toBe(false);
    expect(fs('(dpi=400/2)').matches(jpeg(10, 10, { dpi: 200 })).ok).toBe(true);
    expect(fs('(! (& (type="image/jpeg") (pix-x>=2000)))').matches(jpeg(1000)).ok).toBe(true);
    expect(fs('(! (& (type="image/jpeg") (pix-x>=2000)))').matches(jpeg(3000)).ok).toBe(false);
    expect(fs('(pix-x>=1)').matches(jpeg(1)).ok).toBe(true);
  });

  it('says why not, one reason per failed alternative', () => {
    const r = caps.matches(jpeg(4000));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reasons).toContain('type is "image/jpeg", not (type="text/plain")');
      expect(r.reasons).toContain('pix-x is 4000, not (pix-x<=1024)');
    }
  });

  it('alternatives: the bounds each way of satisfying the set puts on the free tags', () => {
    const alts = caps.alternatives(jpeg(4000), ['pix-x', 'pix-y']);
    expect(alts).toEqual([{ 'pix-x': { max: 1024, maxStrict: false } }]);
    expect(caps.alternatives({ type: 'image/png', 'pix-x': 4000 }, ['pix-x'])).toEqual([]);
    const byType = caps.alternatives({ type: 'image/png', 'pix-x': 4000 }, ['type', 'pix-x']);
    expect(byType).toEqual([{ type: { eq: 'text/plain' } }, { type: { eq: 'image/jpeg' }, 'pix-x': { max: 1024, maxStrict: false } }]);
    expect(fs('(color=[grey,binary])').alternatives({ type: 'image/png', color: 'full' }, ['color'])).toEqual([{ color: { eq: 'grey' } }, { color: { eq: 'binary' } }]);
  });

  it('a pathological expression falls back safely instead of exploding', () => {
    // 2^20 alternatives if expanded naively.
    const big = `(& ${Array.from({ length: 20 }, (_, i) => `(| (t${i}=1) (t${i}=2))`).join(' ')})`;
    expect(fs(big).matches(text).ok).toBe(true);
  });

  it('featureSet() over a parsed tree behaves like parseFeatureSet()', () => {
    const p = parseFeatureSet('(pix-x<=10)');
    if (!p.ok) throw new Error('parse');
    expect(featureSet('x', p.features.expr).matches(jpeg(5)).ok).toBe(true);
  });
});

describe('formatFeatures (RFC 4141 Content-Features syntax)', () => {
  it('prints a part as a conjunction that parses back and matches the part', () => {
    const part: PartFeatures = { type: 'image/jpeg', 'pix-x': 1024, 'pix-y': 768, color: 'full', dpi: 72, size: 5000 };
    const text = formatFeatures(part, { size: false });
    expect(text).toBe('(& (type="image/jpeg") (pix-x=1024) (pix-y=768) (dpi=72) (color=full))');
    expect(fs(text).matches(part).ok).toBe(true);
    expect(formatFeatures({ type: 'text/plain' })).toBe('(type="text/plain")');
    expect(formatFeatures({ type: 'text/plain', charset: 'x_odd' })).toBe('(& (type="text/plain") (charset="x_odd"))');
  });
});
