/**
 * The inbound stage (Postfix smtpd + cleanup): accepts SMTP, keeps the 250
 * promise (nothing is acknowledged before it is in Redis), and answers with the
 * exact replies of RFC 5321 / RFC 3461 and protocols.md. Other stages and the
 * CLI use only what this file exports.
 */
export { createInbound, type Inbound, type InboundOptions } from './server.ts';
export { STANDARD_EHLO_KEYWORDS, type ConnectionSettings } from './connection.ts';
export { compilePolicy, checkConnect, checkRecipient, mayRelay, type AccessPolicy } from './access.ts';
