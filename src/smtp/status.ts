/**
 * Named replies for the conditions the relay reports, after RFC 3463 / 5248
 * (haraka-dsn style): one constructor per meaning, so a code is chosen once and
 * the same meaning always gets the same code.
 */
import { reply, withTags, type Reply } from '../model/reply.ts';

export const status = {
  // 2.x.x
  ok: (text = 'ok') => reply(250, 0, 0, text),
  senderOk: (text = 'sender ok') => reply(250, 1, 0, text),
  recipientOk: (text = 'recipient ok') => reply(250, 1, 5, text),
  queued: (queueId: string) => withTags(reply(250, 0, 0, 'queued'), { queueId }),
  // 4.x.x
  tooManyRecipients: () => reply(452, 5, 3, 'too many recipients'),
  localError: (text = 'local error, try again later') => reply(451, 3, 0, text),
  storageUnavailable: (retryAfter = 60) =>
    withTags(reply(451, 3, 0, 'queue storage unavailable, try again later'), { retryAfter }),
  tooManyConnections: () => reply(421, 4, 5, 'too many connections, try again later'),
  tooManyConnectionsFromClient: () => reply(421, 7, 0, 'too many connections from your address, try again later'),
  /** The request deadline (a command line, or the message data, arriving too slowly). */
  requestTimeout: (data: boolean) =>
    reply(421, 4, 2, data ? 'message data arriving too slowly, closing connection' : 'command line not completed in time, closing connection'),
  tooManyAuthFailures: () => reply(421, 7, 0, 'too many authentication failures'),
  /** RFC 4954 454 4.7.0: AUTH refused for now (the address failed too often). */
  authLockedOut: (retryAfter: number) =>
    withTags(reply(454, 7, 0, 'too many authentication failures from your address, try again later'), { retryAfter }),
  authFailed: () => reply(535, 7, 8, 'authentication credentials invalid'),
  shuttingDown: () => reply(421, 4, 2, 'service shutting down'),
  expired: (text = 'delivery time expired') => reply(451, 4, 7, text),
  connectionFailed: (text: string) => reply(451, 4, 1, text),
  routingFailed: (text: string) => reply(451, 4, 4, text),
  // 5.x.x
  relayDenied: (code: 550 | 554 = 554, text = 'relay access denied') => reply(code, 7, 1, text),
  badSyntax: (text: string) => reply(501, 5, 4, text),
  unknownParameter: (text: string) => reply(555, 5, 4, text),
  /** RFC 5321 504 (a command parameter the server does not offer); RFC 4141 asks for it for CONNEG/CONPERM. */
  parameterNotImplemented: (text: string) => reply(504, 5, 4, text),
  badSequence: (text: string) => reply(503, 5, 1, text),
  messageTooBig: (text = 'message size exceeds fixed maximum message size') => reply(552, 3, 4, text),
  noValidRecipients: () => reply(554, 5, 1, 'no valid recipients'),
  badAddress: (text: string) => reply(501, 1, 3, text),
} satisfies Record<string, (...a: never[]) => Reply>;
