/**
 * The outbound stage (Postfix smtp(8)): one SMTP transaction for a group of
 * recipients sharing a next hop → a Reply for every recipient. The relay worker
 * calls `new OutboundPool(opts).deliver(req)` and `close()` at shutdown; nothing
 * else of this folder is public.
 */
export { OutboundPool, type OutboundOptions } from './pool.ts';
export type { DeliveryRequest } from './deliver.ts';
