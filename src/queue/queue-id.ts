/**
 * Queue ids: time-ordered (so `queue list` sorts by arrival, like Postfix's long
 * queue ids) and unique across processes without coordination.
 */
import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789BCDFGHJKLMNPQRSTVWXYZ';

function encode(n: bigint, width: number): string {
  let s = '';
  const base = BigInt(ALPHABET.length);
  for (let i = 0; i < width; i++) {
    s = ALPHABET[Number(n % base)] + s;
    n /= base;
  }
  return s;
}

export function newQueueId(now = Date.now()): string {
  return encode(BigInt(now), 9) + encode(BigInt('0x' + randomBytes(8).toString('hex')), 10);
}
