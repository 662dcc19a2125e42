/** Reading the RFC 3464 reports the relay sends, as tests check them. */

/**
 * The field blocks of a `message/delivery-status` body: the per-message block
 * first, then one per recipient; folded lines unfolded, `Name: value` pairs.
 */
export function deliveryStatusBlocks(content: Buffer | string): Record<string, string>[] {
  return content
    .toString('latin1')
    .replace(/\r\n[ \t]+/g, ' ')
    .trim()
    .split(/\r\n\r\n/)
    .map((b) => Object.fromEntries(b.split('\r\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()])));
}

/** The recipient block whose Final-Recipient is `address`. */
export function blockFor(blocks: readonly Record<string, string>[], address: string): Record<string, string> | undefined {
  return blocks.find((b) => b['Final-Recipient']?.replace(/\s/g, '').toLowerCase() === `rfc822;${address.toLowerCase()}`);
}
