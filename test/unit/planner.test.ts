/**
 * The planner (pure): least lossy chains, tie-breaks, keep, omit, impossible with
 * the right code, markings honoured, whole-message verdict. Converters here are
 * declarations only (from, to, loss, reach); nothing is converted.
 */
import { describe, expect, it } from 'vitest';
import { parseFeatureSet, type FeatureSet, type PartFeatures } from '../../src/capabilities/feature-set/index.ts';
import type { Converter, Reach } from '../../src/conversion/api.ts';
import { cheapestChain, planMessage, planPart, type PlannerConverter, type PlannerPart } from '../../src/conversion/planner.ts';
import type { BodyPartMarking } from '../../src/model/marking.ts';

function fs(expr: string): FeatureSet {
  const r = parseFeatureSet(expr);
  if (!r.ok) throw new Error(r.error);
  return r.features;
}

const never = async (): Promise<never> => {
  throw new Error('not called in planning');
};

function conv(name: string, from: string, to: string, loss: number, reach?: Converter['reach'], origin: 'builtin' | 'user' = 'builtin'): PlannerConverter {
  return { origin, converter: { name, from, to, loss, convert: never, ...(reach && { reach }) } };
}

/** A resize declaration: halves pix-x/pix-y until within the target's max. */
const resize = (type: string, loss: number): PlannerConverter =>
  conv(`resize-${type}`, type, type, loss, (input, target): Reach | undefined => {
    const own = target.alternatives(input, ['pix-x', 'pix-y']);
    const alts = own.length > 0 ? own : target.alternatives(input, ['pix-x', 'pix-y', 'type']);
    const max = alts.find((a) => a['pix-x']?.max !== undefined)?.['pix-x']?.max;
    const w = input['pix-x'];
    if (max === undefined || w === undefined || w <= max) return undefined;
    return { features: { ...input, 'pix-x': max, 'pix-y': Math.round(((input['pix-y'] ?? w) * max) / w) } };
  });

const BUILTINS: PlannerConverter[] = [
  conv('png-to-jpeg', 'image/png', 'image/jpeg', 32),
  conv('jpeg-to-png', 'image/jpeg', 'image/png', 0),
  conv('png-to-webp', 'image/png', 'image/webp', 0),
  conv('webp-to-jpeg', 'image/webp', 'image/jpeg', 32),
  conv('tiff-to-png', 'image/tiff', 'image/png', 0),
  conv('png-to-gif', 'image/png', 'image/gif', 25),
  conv('html-to-text', 'text/html', 'text/plain', 40, () => ({ features: { type: 'text/plain', charset: 'utf-8' } })),
  resize('image/png', 10),
  resize('image/jpeg', 42),
];

const permitted: BodyPartMarking = { conversion: 'permitted', critical: true, source: 'default' };
const part = (features: PartFeatures, marking: BodyPartMarking = permitted, path = '1'): PlannerPart => ({ path, features, marking });
const png = (w = 800, h = 600): PartFeatures => ({ type: 'image/png', 'pix-x': w, 'pix-y': h, color: 'full', size: 1000 });

describe('planPart', () => {
  it('keeps a part that already fits (loss 0)', () => {
    expect(planPart(part(png()), fs('(type="image/png")'), BUILTINS)).toEqual({ kind: 'keep', usable: true });
  });

  it('chooses the lossless chain when one exists, even over more hops', () => {
    // tiff → png (0) → webp (0) beats nothing else here; and png → webp (0) rather than via jpeg.
    const a = planPart(part({ type: 'image/tiff', 'pix-x': 10, 'pix-y': 10 }), fs('(type="image/webp")'), BUILTINS);
    expect(a).toMatchObject({ kind: 'convert', chain: ['tiff-to-png', 'png-to-webp'], loss: 0 });
  });

  it('chooses the least lossy chain when only lossy ones exist', () => {
    const a = planPart(part(png()), fs('(| (type="image/jpeg") (type="image/gif"))'), BUILTINS);
    expect(a).toMatchObject({ kind: 'convert', chain: ['png-to-gif'], loss: 25 });
  });

  it('chains several hops and checks the final features (resize before the lossy step when cheaper)', () => {
    const a = planPart(part(png(4000, 3000)), fs('(& (type="image/jpeg") (pix-x<=1024))'), BUILTINS);
    expect(a).toMatchObject({ kind: 'convert', chain: ['resize-image/png', 'png-to-jpeg'], loss: 42 });
    if (a.kind === 'convert') {
      expect(a.features).toMatchObject({ type: 'image/jpeg', 'pix-x': 1024, 'pix-y': 768 });
      expect(a.steps.map((s) => s.aim['pix-x'])).toEqual([1024, 1024]);
    }
  });

  it('ties: fewer hops first', () => {
    const cs = [conv('a-to-c', 'x/a', 'x/c', 5), conv('a-to-b', 'x/a', 'x/b', 2), conv('b-to-c', 'x/b', 'x/c', 3)];
    expect(planPart(part({ type: 'x/a' }), fs('(type="x/c")'), cs)).toMatchObject({ chain: ['a-to-c'] });
  });

  it('ties: built-in before user, then name; a user converter wins only by strictly lower loss', () => {
    const builtin = conv('zz-builtin', 'x/a', 'x/b', 5);
    const user = conv('aa-user', 'x/a', 'x/b', 5, undefined, 'user');
    expect(planPart(part({ type: 'x/a' }), fs('(type="x/b")'), [user, builtin])).toMatchObject({ chain: ['zz-builtin'] });
    const better = conv('aa-user', 'x/a', 'x/b', 4.5, undefined, 'user');
    expect(planPart(part({ type: 'x/a' }), fs('(type="x/b")'), [better, builtin])).toMatchObject({ chain: ['aa-user'] });
    const named = [conv('m', 'x/a', 'x/b', 5), conv('b', 'x/a', 'x/b', 5), conv('k', 'x/a', 'x/b', 5)];
    expect(planPart(part({ type: 'x/a' }), fs('(type="x/b")'), named)).toMatchObject({ chain: ['b'] });
  });

  it('prohibited and unusable: impossible with 5.6.2 (critical), kept unconverted (not critical)', () => {
    const prohibited: BodyPartMarking = { conversion: 'prohibited', critical: true, source: 'header' };
    const a = planPart(part(png(), prohibited), fs('(type="image/jpeg")'), BUILTINS);
    expect(a.kind).toBe('impossible');
    if (a.kind === 'impossible') {
      expect(a.reply.code).toBe(554);
      expect(a.reply.enhanced).toBe('5.6.2');
      expect(a.reasons).toContain('type is "image/png", not (type="image/jpeg")');
    }
    expect(planPart(part(png(), { ...prohibited, critical: false }), fs('(type="image/jpeg")'), BUILTINS)).toMatchObject({ kind: 'keep', usable: false });
  });

  it('prohibited but already usable: kept', () => {
    expect(planPart(part(png(), { conversion: 'prohibited', critical: true, source: 'header' }), fs('(type="image/png")'), BUILTINS)).toEqual({ kind: 'keep', usable: true });
  });

  it('no conversion at all: impossible with 5.6.3', () => {
    const a = planPart(part({ type: 'application/pdf', size: 5 }), fs('(type="text/plain")'), BUILTINS);
    expect(a).toMatchObject({ kind: 'impossible', reply: { enhanced: '5.6.3' } });
  });

  it('omits only where omission is permitted', () => {
    const pdf = { type: 'application/pdf', size: 5 };
    const omit: BodyPartMarking = { conversion: 'omission-permitted', critical: false, source: 'header' };
    const a = planPart({ ...part(pdf, omit), filename: 'report.pdf' }, fs('(type="text/plain")'), BUILTINS);
    expect(a.kind).toBe('omit');
    if (a.kind === 'omit') expect(a.note).toMatch(/application\/pdf part "report.pdf", 5 bytes was removed/);
    // A convertible part is converted, not omitted.
    expect(planPart(part(png(), omit), fs('(type="image/jpeg")'), BUILTINS).kind).toBe('convert');
    // Permitted (not omission): never omitted.
    expect(planPart(part(pdf, { ...omit, conversion: 'permitted' }), fs('(type="text/plain")'), BUILTINS).kind).toBe('keep');
  });

  it('Conversion-With-Loss: Prohibited admits lossless chains only, else 5.6.2', () => {
    const lossless: BodyPartMarking = { ...permitted, lossless: true };
    expect(planPart(part({ type: 'image/tiff', 'pix-x': 1, 'pix-y': 1 }), fs('(type="image/webp")'), BUILTINS, {})).toMatchObject({ kind: 'convert', loss: 0 });
    expect(planPart(part({ type: 'image/tiff', 'pix-x': 1, 'pix-y': 1 }, lossless), fs('(type="image/webp")'), BUILTINS)).toMatchObject({ kind: 'convert', loss: 0 });
    const a = planPart(part(png(), lossless), fs('(type="image/jpeg")'), BUILTINS);
    expect(a).toMatchObject({ kind: 'impossible', reply: { enhanced: '5.6.2' } });
  });

  it('an RFC 4141 Content-Convert list limits the forms converted into', () => {
    const onlyGif: BodyPartMarking = { ...permitted, allowedForms: '(type="image/gif")' };
    expect(planPart(part(png(), onlyGif), fs('(| (type="image/jpeg") (type="image/gif"))'), BUILTINS)).toMatchObject({ chain: ['png-to-gif'] });
    const onlyWebp: BodyPartMarking = { ...permitted, allowedForms: '(type="image/webp")' };
    expect(planPart(part(png(), onlyWebp), fs('(type="image/jpeg")'), BUILTINS)).toMatchObject({ kind: 'impossible', reply: { enhanced: '5.6.2' } });
  });

  it('an unreadable image cannot be made to fit a size limit', () => {
    const broken: PartFeatures = { type: 'image/jpeg', size: 10, unmeasured: ['pix-x', 'pix-y', 'color', 'dpi'] };
    expect(planPart(part(broken), fs('(& (type="image/jpeg") (pix-x<=1024))'), BUILTINS)).toMatchObject({ kind: 'impossible', reply: { enhanced: '5.6.3' } });
  });

  it('a reach() that throws is ignored, not fatal', () => {
    const bad = conv('bad', 'x/a', 'x/b', 0, () => {
      throw new Error('boom');
    });
    expect(planPart(part({ type: 'x/a' }), fs('(type="x/b")'), [bad])).toMatchObject({ kind: 'impossible' });
  });

  it('cycles and long chains stay bounded', () => {
    const ring = [conv('a-b', 'x/a', 'x/b', 1), conv('b-a', 'x/b', 'x/a', 1)];
    expect(cheapestChain({ type: 'x/a' }, (f) => f.type === 'x/z', fs('(type="x/z")'), ring)).toBeUndefined();
    const line = Array.from({ length: 6 }, (_, i) => conv(`s${i}`, `x/${i}`, `x/${i + 1}`, 1));
    expect(planPart(part({ type: 'x/0' }), fs('(type="x/4")'), line)).toMatchObject({ kind: 'convert', loss: 4 });
    expect(planPart(part({ type: 'x/0' }), fs('(type="x/6")'), line).kind).toBe('impossible'); // more than 4 hops
    expect(planPart(part({ type: 'x/0' }), fs('(type="x/6")'), line, { maxHops: 6 })).toMatchObject({ kind: 'convert', loss: 6 });
  });
});

describe('planMessage', () => {
  const target = fs('(| (type="text/plain") (& (type="image/jpeg") (pix-x<=1024)))');

  it('possible when every critical part is keep/convert; loss is the sum', () => {
    const plan = planMessage(
      [part({ type: 'text/plain', charset: 'utf-8' }, permitted, '1.1'), part({ type: 'text/html', charset: 'utf-8' }, permitted, '1.2'), part(png(4000, 3000), permitted, '2')],
      target,
      BUILTINS,
    );
    expect(plan.possible).toBe(true);
    expect(plan.parts.map((p) => p.action.kind)).toEqual(['keep', 'convert', 'convert']);
    expect(plan.loss).toBe(40 + 42);
    expect(plan.target).toBe(target.expression);
  });

  it('impossible when a critical part cannot be made usable; the reply is that part’s', () => {
    const plan = planMessage([part({ type: 'text/plain' }, permitted, '1'), part({ type: 'application/pdf' }, permitted, '2')], target, BUILTINS);
    expect(plan.possible).toBe(false);
    expect(plan.reply?.enhanced).toBe('5.6.3');
    expect(plan.reply?.lines.join(' ')).toMatch(/part 2 \(application\/pdf\)/);
  });

  it('non-critical unusable parts do not block; omitted ones count 100', () => {
    const plan = planMessage(
      [
        part({ type: 'text/plain' }, permitted, '1'),
        part({ type: 'application/pdf' }, { conversion: 'permitted', critical: false, source: 'header' }, '2'),
        part({ type: 'application/zip' }, { conversion: 'omission-permitted', critical: false, source: 'header' }, '3'),
      ],
      target,
      BUILTINS,
    );
    expect(plan.possible).toBe(true);
    expect(plan.parts.map((p) => p.action.kind)).toEqual(['keep', 'keep', 'omit']);
    expect(plan.loss).toBe(100);
  });

  it('a critical part that may be omitted still makes the plan impossible', () => {
    const plan = planMessage([part({ type: 'application/zip' }, { conversion: 'omission-permitted', critical: true, source: 'header' }, '1')], target, BUILTINS);
    expect(plan.parts[0]?.action.kind).toBe('omit');
    expect(plan.possible).toBe(false);
    expect(plan.reply?.enhanced).toBe('5.6.3');
  });

  it('without DRUCOF (prohibited, non-critical everywhere) nothing is converted and the plan is possible', () => {
    const off: BodyPartMarking = { conversion: 'prohibited', critical: false, source: 'default' };
    const plan = planMessage([part({ type: 'text/html' }, off, '1'), part(png(4000, 3000), off, '2')], target, BUILTINS);
    expect(plan.possible).toBe(true);
    expect(plan.parts.map((p) => p.action)).toEqual([expect.objectContaining({ kind: 'keep', usable: false }), expect.objectContaining({ kind: 'keep', usable: false })]);
    expect(plan.loss).toBe(0);
  });
});
