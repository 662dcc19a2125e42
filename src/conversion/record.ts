/**
 * Conversion records (protocols.md A6, RFC 4141 §5): each converted part carries
 * `Content-Previous: Date <date-time>; By <host>; <features before>` and
 * `Content-Features: <features now>` (RFC 2912, replaced if present); the message
 * gets one `Content-Conversions:` trace field of ours, written above the others
 * like `Received:`, naming per part the converter chain and its loss. Pure.
 */
import { formatFeatures } from '../capabilities/feature-set/index.ts';
import type { PartFeatures } from '../model/feature-set.ts';
import type { ConversionRecord, PartRecord } from '../model/plan.ts';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 date-time in UTC: `Mon, 23 Nov 2026 10:52:37 +0000`. */
export function rfc5322Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

/** Features as recorded: the RFC 2533 tags, without our private size/pixel tags. */
export const recordedFeatures = (f: PartFeatures): string => formatFeatures(f, { size: false });

/** `Content-Previous` value (RFC 4141: `Date …; By …; <type>`). */
export function contentPrevious(before: PartFeatures, host: string, date: string): string {
  return `Date ${date}; By ${host}; ${recordedFeatures(before)}`;
}

/** `Content-Features` value. */
export function contentFeatures(after: PartFeatures): string {
  return recordedFeatures(after);
}

function describePart(p: PartRecord): string {
  const to = p.omitted ? 'omitted' : (p.after?.type ?? '?');
  const via = p.chain.length > 0 ? ` via ${p.chain.join(', ')}` : '';
  return `${p.path} ${p.before.type} -> ${to}${via} (loss ${p.loss})`;
}

/** `Content-Conversions` value: `<host>; <path> <old> -> <new> via <chain> (loss n); …; <date>`. */
export function contentConversions(record: ConversionRecord): string {
  return [record.host, ...record.parts.map(describePart), record.date].join('; ');
}
