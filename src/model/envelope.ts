/**
 * Envelope — what the sender told us about the whole message (RFC 5321 MAIL,
 * RFC 3461 RET/ENVID), plus where it came from. Immutable once the message is
 * queued; stored beside the body in Redis.
 */
import type { Xtext } from '../smtp/params.ts';

export type QueueId = string;

export interface ClientIdentity {
  readonly address: string;
  readonly helo: string;
  readonly hostname?: string;
  readonly user?: string;
  readonly tls?: string;
}

export interface Envelope {
  readonly id: QueueId;
  /** '' for the null sender `<>`. */
  readonly mailFrom: string;
  readonly ret?: 'FULL' | 'HDRS';
  readonly envid?: Xtext;
  readonly body: '7BIT' | '8BITMIME';
  readonly smtpUtf8: boolean;
  readonly client: ClientIdentity;
  /** ISO 8601. */
  readonly receivedAt: string;
  /** Bytes of the stored message, trace header included. */
  readonly size: number;
}
