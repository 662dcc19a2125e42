/**
 * Body-part markings → BodyPartMarking (protocols.md A5), pure.
 *
 * - `Content-Conversion: prohibited | permitted | omission-permitted [; critical=yes|no]` (ours);
 * - RFC 4141 `Content-Convert: NONE | ANY | <feature list>`: NONE = prohibited, ANY =
 *   permitted, a list = permitted only into the forms it allows. Beside ours, the
 *   stricter wins, per dimension: conversion is allowed only if both allow it, forms
 *   must satisfy every list; only ours speaks of omission and criticality;
 * - a multipart's marking applies to the parts inside it (again the stricter wins);
 *   nothing inside multipart/signed or multipart/encrypted is converted (RFC 4141 §5:
 *   keep the protection or do not convert);
 * - message-level RFC 2156 `Conversion: Prohibited` forbids every conversion and
 *   `Conversion-With-Loss: Prohibited` every conversion with loss > 0;
 * - no marking: permitted and critical when the sender asked for DRUCOF; without
 *   DRUCOF nothing is ever converted (section 5), whatever the headers say.
 * An unreadable value is read as the strictest (prohibited) rather than ignored.
 */
import { parseFeatureSet } from '../capabilities/feature-set/index.ts';
import type { BodyPartMarking, ConversionPermission } from '../model/marking.ts';

/** What the headers of one part (or container) declare; fields absent when not said. */
export interface DeclaredMarking {
  readonly conversion?: ConversionPermission;
  readonly critical?: boolean;
  /** RFC 4141 feature lists; all must be satisfied by a converted form. */
  readonly allowedForms?: readonly string[];
  readonly source?: 'header' | 'rfc4141' | 'signed';
}

/** What a multipart/signed or multipart/encrypted container imposes on everything inside it. */
export const SIGNED: DeclaredMarking = { conversion: 'prohibited', source: 'signed' };

/** The message-level RFC 2156 fields, as found in the top-level header. */
export interface MessageMarking {
  readonly conversionProhibited: boolean;
  readonly lossProhibited: boolean;
}

const RANK: Record<ConversionPermission, number> = { prohibited: 0, permitted: 1, 'omission-permitted': 2 };

/** `Content-Conversion` value → declared marking (unreadable → prohibited). */
export function parseContentConversion(value: string): DeclaredMarking {
  const [head = '', ...params] = stripComments(value).split(';');
  const word = head.trim().toLowerCase();
  let conversion: ConversionPermission;
  if (word === 'prohibited' || word === 'permitted' || word === 'omission-permitted') conversion = word;
  else return { conversion: 'prohibited', source: 'header' };
  let critical: boolean | undefined;
  for (const p of params) {
    const eq = p.indexOf('=');
    if (eq < 0) continue;
    const name = p.slice(0, eq).trim().toLowerCase();
    const v = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase();
    if (name !== 'critical') continue;
    if (v === 'yes') critical = true;
    else if (v === 'no') critical = false;
    else return { conversion: 'prohibited', source: 'header' }; // unreadable: be strict
  }
  return { conversion, source: 'header', ...(critical !== undefined && { critical }) };
}

/** RFC 4141 `Content-Convert` value → declared marking (unreadable → prohibited). */
export function parseContentConvert(value: string): DeclaredMarking {
  const v = value.trim();
  if (/^none$/i.test(v)) return { conversion: 'prohibited', source: 'rfc4141' };
  if (/^any$/i.test(v)) return { conversion: 'permitted', source: 'rfc4141' };
  const parsed = parseFeatureSet(v);
  if (!parsed.ok) return { conversion: 'prohibited', source: 'rfc4141' };
  return { conversion: 'permitted', allowedForms: [parsed.features.expression], source: 'rfc4141' };
}

/** RFC 2156 message-level fields (values `Prohibited` / `Allowed`, case-insensitive). */
export function parseMessageMarking(conversion: string | undefined, conversionWithLoss: string | undefined): MessageMarking {
  const prohibited = (v: string | undefined) => v !== undefined && stripComments(v).trim().toLowerCase() === 'prohibited';
  return { conversionProhibited: prohibited(conversion), lossProhibited: prohibited(conversionWithLoss) };
}

/** The stricter of two declarations (either may be empty). */
export function stricter(a: DeclaredMarking | undefined, b: DeclaredMarking | undefined): DeclaredMarking {
  if (!a) return b ?? {};
  if (!b) return a;
  const conv =
    a.conversion === undefined ? b.conversion : b.conversion === undefined ? a.conversion : RANK[a.conversion] <= RANK[b.conversion] ? a.conversion : b.conversion;
  // Content-Convert allows conversion but says nothing of omission: it caps ours at "permitted"
  // only when it forbids conversion outright (handled by the rank), never otherwise.
  const source = conv === a.conversion ? a.source : b.source;
  const critical = a.critical === undefined ? b.critical : b.critical === undefined ? a.critical : a.critical || b.critical;
  const forms = [...(a.allowedForms ?? []), ...(b.allowedForms ?? [])];
  return {
    ...(conv !== undefined && { conversion: conv }),
    ...(critical !== undefined && { critical }),
    ...(forms.length > 0 && { allowedForms: forms }),
    ...(source !== undefined && { source }),
  };
}

/**
 * One part's own declaration: `Content-Conversion` and `Content-Convert` together,
 * where the latter may only restrict (it has no notion of omission).
 */
export function declaredForPart(contentConversion: string | undefined, contentConvert: string | undefined): DeclaredMarking | undefined {
  const ours = contentConversion !== undefined ? parseContentConversion(contentConversion) : undefined;
  const theirs = contentConvert !== undefined ? parseContentConvert(contentConvert) : undefined;
  if (!ours) return theirs;
  if (!theirs) return ours;
  if (theirs.conversion === 'prohibited') return { ...theirs, ...(ours.critical !== undefined && { critical: ours.critical }) };
  return { ...ours, ...(theirs.allowedForms && { allowedForms: theirs.allowedForms }) };
}

/** The marking the planner uses for one leaf part. */
export function effectiveMarking(declared: DeclaredMarking | undefined, message: MessageMarking, drucof: boolean): BodyPartMarking {
  if (!drucof) return { conversion: 'prohibited', critical: false, source: 'default' };
  const d = declared ?? {};
  const critical = d.critical ?? true;
  const forms = d.allowedForms && d.allowedForms.length > 0 ? { allowedForms: d.allowedForms.length === 1 ? d.allowedForms[0]! : `(& ${d.allowedForms.join(' ')})` } : {};
  const lossless = message.lossProhibited ? { lossless: true } : {};
  if (message.conversionProhibited) return { conversion: 'prohibited', critical, source: 'rfc2156' };
  if (d.conversion === undefined) {
    return { conversion: 'permitted', critical, source: d.source ?? 'default', ...forms, ...lossless };
  }
  return { conversion: d.conversion, critical, source: d.source ?? 'header', ...forms, ...lossless };
}

function stripComments(v: string): string {
  // RFC 5322 comments, one level, enough for hand-written header values.
  return v.replace(/\([^()]*\)/g, ' ');
}
