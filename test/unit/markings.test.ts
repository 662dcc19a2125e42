/**
 * Body-part markings (protocols.md A5): our Content-Conversion, RFC 4141
 * Content-Convert (stricter wins), RFC 2156 message-level fields, inheritance
 * from containers, and the DRUCOF / no-DRUCOF defaults.
 */
import { describe, expect, it } from 'vitest';
import {
  declaredForPart,
  effectiveMarking,
  parseContentConversion,
  parseContentConvert,
  parseMessageMarking,
  stricter,
  type MessageMarking,
} from '../../src/conversion/markings.ts';

const NONE: MessageMarking = { conversionProhibited: false, lossProhibited: false };

describe('Content-Conversion', () => {
  it.each([
    ['prohibited', { conversion: 'prohibited', source: 'header' }],
    ['permitted', { conversion: 'permitted', source: 'header' }],
    ['omission-permitted', { conversion: 'omission-permitted', source: 'header' }],
    ['Permitted; critical=no', { conversion: 'permitted', critical: false, source: 'header' }],
    ['omission-permitted ; CRITICAL="yes"', { conversion: 'omission-permitted', critical: true, source: 'header' }],
    ['permitted (the sender says so); critical=no', { conversion: 'permitted', critical: false, source: 'header' }],
    ['sometimes', { conversion: 'prohibited', source: 'header' }],
    ['permitted; critical=maybe', { conversion: 'prohibited', source: 'header' }],
  ])('%j', (value, expected) => {
    expect(parseContentConversion(value)).toEqual(expected);
  });
});

describe('Content-Convert (RFC 4141)', () => {
  it.each([
    ['NONE', { conversion: 'prohibited', source: 'rfc4141' }],
    ['none', { conversion: 'prohibited', source: 'rfc4141' }],
    ['ANY', { conversion: 'permitted', source: 'rfc4141' }],
    ['(type="image/png")', { conversion: 'permitted', allowedForms: ['(type="image/png")'], source: 'rfc4141' }],
    ['(type="image/png"', { conversion: 'prohibited', source: 'rfc4141' }],
  ])('%j', (value, expected) => {
    expect(parseContentConvert(value)).toEqual(expected);
  });
});

describe('RFC 2156 message fields', () => {
  it.each([
    [undefined, undefined, NONE],
    ['Prohibited', undefined, { conversionProhibited: true, lossProhibited: false }],
    [undefined, ' prohibited ', { conversionProhibited: false, lossProhibited: true }],
    ['Allowed', 'Allowed', NONE],
  ])('Conversion: %j, Conversion-With-Loss: %j', (c, l, expected) => {
    expect(parseMessageMarking(c, l)).toEqual(expected);
  });
});

describe('both headers on one part: the stricter wins, per dimension', () => {
  it.each([
    ['permitted', 'NONE', 'prohibited'],
    ['prohibited', 'ANY', 'prohibited'],
    ['omission-permitted', 'ANY', 'omission-permitted'],
    ['permitted; critical=no', 'NONE', 'prohibited'],
    [undefined, 'ANY', 'permitted'],
    ['omission-permitted', undefined, 'omission-permitted'],
  ])('Content-Conversion %j + Content-Convert %j → %s', (ours, theirs, conversion) => {
    expect(declaredForPart(ours, theirs)?.conversion).toBe(conversion);
  });

  it('keeps our critical=no beside Content-Convert, and the RFC 4141 list', () => {
    expect(declaredForPart('permitted; critical=no', '(type="image/png")')).toEqual({
      conversion: 'permitted',
      critical: false,
      allowedForms: ['(type="image/png")'],
      source: 'header',
    });
    expect(declaredForPart('permitted; critical=no', 'NONE')).toMatchObject({ conversion: 'prohibited', critical: false });
  });

  it('a container passes its marking to the parts inside (stricter wins)', () => {
    const parent = parseContentConversion('prohibited');
    const child = parseContentConversion('permitted; critical=no');
    expect(stricter(parent, child)).toMatchObject({ conversion: 'prohibited', critical: false });
    expect(stricter(parseContentConversion('permitted; critical=yes'), child)).toMatchObject({ critical: true });
    expect(stricter(undefined, child)).toEqual(child);
    expect(stricter({ allowedForms: ['(a=1)'] }, { allowedForms: ['(b=2)'] }).allowedForms).toEqual(['(a=1)', '(b=2)']);
  });
});

describe('effective marking and defaults', () => {
  it.each([
    ['no marking, DRUCOF: permitted and critical', undefined, NONE, true, { conversion: 'permitted', critical: true, source: 'default' }],
    ['no DRUCOF: nothing is converted, whatever the header says', parseContentConversion('permitted'), NONE, false, { conversion: 'prohibited', critical: false, source: 'default' }],
    ['header honoured', parseContentConversion('omission-permitted; critical=no'), NONE, true, { conversion: 'omission-permitted', critical: false, source: 'header' }],
    ['Conversion: Prohibited overrides a permitting header', parseContentConversion('permitted'), { conversionProhibited: true, lossProhibited: false }, true, { conversion: 'prohibited', critical: true, source: 'rfc2156' }],
    ['Conversion-With-Loss: Prohibited → lossless only', undefined, { conversionProhibited: false, lossProhibited: true }, true, { conversion: 'permitted', critical: true, source: 'default', lossless: true }],
    ['Content-Convert list carried', parseContentConvert('(type="image/png")'), NONE, true, { conversion: 'permitted', critical: true, source: 'rfc4141', allowedForms: '(type="image/png")' }],
    ['two lists become one conjunction', { conversion: 'permitted' as const, allowedForms: ['(a=1)', '(b=2)'] }, NONE, true, { conversion: 'permitted', critical: true, source: 'header', allowedForms: '(& (a=1) (b=2))' }],
  ])('%s', (_name, declared, message, drucof, expected) => {
    expect(effectiveMarking(declared, message, drucof)).toEqual(expected);
  });
});
