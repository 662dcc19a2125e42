/**
 * The outbound stage (Postfix smtp(8)): one SMTP transaction for a group of
 * recipients sharing a next hop → a Reply for every recipient (per-recipient
 * verdicts read from INLINE-DSN or PRDR hops, protocols.md A4/A4b), plus the
 * hop knowledge the DRUCOF decision needs: EHLO keywords and CONNEG answers
 * (A3). A route can make the relay the final hop: LMTP hops (`lmtp:`) go
 * through the same pool, speaking LMTP; Maildir hops (`maildir:`) are written
 * by maildir.ts, with no connection at all. The relay worker calls
 * `new OutboundPool(opts)`, `hopKeywords(hop)`, `probe(hop, recipients)`,
 * `deliver(req)` and `close()` at shutdown; nothing else of this folder is public.
 */
export { OutboundPool, HopUnavailableError, type OutboundOptions, type DeliveryOutcome, type ProbeOptions } from './pool.ts';
export type { DeliveryRequest, RecipientOptions } from './deliver.ts';
export type { Verdicts } from './client.ts';
