/**
 * BodyPartMarking — what the sender allows for one body part (protocols.md A5):
 * our `Content-Conversion` header, RFC 4141 `Content-Convert`, the message-level
 * RFC 2156 `Conversion` / `Conversion-With-Loss`, and the defaults (permitted and
 * critical under DRUCOF; nothing converted without it). Plain data, JSON-safe.
 */

export type ConversionPermission = 'prohibited' | 'permitted' | 'omission-permitted';

export interface BodyPartMarking {
  /** prohibited: never convert; permitted: convert if needed; omission-permitted: convert, else the part may be dropped. */
  readonly conversion: ConversionPermission;
  /** critical (the default): if the part cannot be made usable, the recipient fails; else it goes unconverted. */
  readonly critical: boolean;
  /** Where the strictest rule came from (for `explain` and the CLI); `signed`: inside multipart/signed or /encrypted (RFC 4141 §5: keep protection or do not convert). */
  readonly source: 'header' | 'default' | 'rfc2156' | 'rfc4141' | 'signed';
  /** RFC 4141 `Content-Convert` feature list: convert only into forms it allows (an RFC 2533 expression). */
  readonly allowedForms?: string;
  /** RFC 2156 `Conversion-With-Loss: Prohibited`: only lossless (loss 0) chains. */
  readonly lossless?: boolean;
}

/** The strictest marking: what no header can loosen. */
export const PROHIBITED_NOT_CRITICAL: BodyPartMarking = { conversion: 'prohibited', critical: false, source: 'default' };
