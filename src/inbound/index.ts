/**
 * The inbound stage (Postfix smtpd + cleanup): accepts SMTP, keeps the 250
 * promise (nothing is acknowledged before it is in Redis), and answers with the
 * exact replies of RFC 5321 / RFC 3461 and protocols.md (CONNEG answers, DRUCOF,
 * INLINE-DSN and PRDR per-recipient verdicts). Other stages and the CLI use only
 * what this file exports.
 */
export { createInbound, extensionKeywords, type Inbound, type InboundExtensions, type InboundOptions } from './server.ts';
export { STANDARD_EHLO_KEYWORDS, type ConnectionSettings } from './connection.ts';
export { compilePolicy, checkConnect, checkRecipient, mayRelay, type AccessPolicy } from './access.ts';
export {
  VerdictEngine,
  policySource,
  type ContentPolicy,
  type MessageFacts,
  type RcptOpinion,
  type RecipientFacts,
  type VerdictSource,
} from './verdicts.ts';
