/**
 * smtp/params.ts, the extension parameters (protocols.md A1, A2): MAIL INLINE-DSN
 * and PRDR, RCPT DRUCOF and CONNEG (bare or =OPTIONAL); CONNEG and CONPERM
 * refused with 504 5.5.4 (RFC 4141), any other parameter of an extension not
 * advertised with 555 5.5.4. The policy is "what EHLO advertised".
 */
import { describe, expect, it } from 'vitest';
import { parseMailParams, parseRcptParams, type ParamPolicy } from '../../src/smtp/params.ts';

const all: ParamPolicy = { dsn: true, conneg: true, drucof: true, inlineDsn: true, prdr: true };
const none: ParamPolicy = { dsn: true };
const off = (k: keyof ParamPolicy): ParamPolicy => ({ ...all, [k]: false });

function outcome(r: ReturnType<typeof parseMailParams> | ReturnType<typeof parseRcptParams>): unknown {
  return r.ok ? r.params : `${r.reply.code} ${r.reply.enhanced}`;
}

describe('MAIL: INLINE-DSN, PRDR, CONPERM', () => {
  it.each([
    ['MAIL FROM:<a@b.test> INLINE-DSN', all, { smtpUtf8: false, inlineDsn: true }],
    ['MAIL FROM:<a@b.test> inline-dsn', all, { smtpUtf8: false, inlineDsn: true }],
    ['MAIL FROM:<a@b.test> PRDR', all, { smtpUtf8: false, prdr: true }],
    ['MAIL FROM:<a@b.test> PRDR INLINE-DSN SIZE=5', all, { smtpUtf8: false, size: 5, inlineDsn: true, prdr: true }],
    ['MAIL FROM:<> PRDR', all, { smtpUtf8: false, prdr: true }],
    ['MAIL FROM:<a@b.test> INLINE-DSN=1', all, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> PRDR=yes', all, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> INLINE-DSN INLINE-DSN', all, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> INLINE-DSN', off('inlineDsn'), '555 5.5.4'],
    ['MAIL FROM:<a@b.test> PRDR', off('prdr'), '555 5.5.4'],
    ['MAIL FROM:<a@b.test> INLINE-DSN', none, '555 5.5.4'],
    ['MAIL FROM:<a@b.test> CONPERM', all, '504 5.5.4'], // never advertised (A1)
    ['MAIL FROM:<a@b.test> CONPERM', none, '504 5.5.4'],
    ['MAIL FROM:<a@b.test> CONNEG', all, '504 5.5.4'], // a RCPT parameter
    ['MAIL FROM:<a@b.test> DRUCOF', all, '555 5.5.4'], // a RCPT parameter
  ] as const)('%s (policy %j) → %j', (line, policy, expected) => {
    expect(outcome(parseMailParams(line, policy))).toEqual(expected);
  });
});

describe('RCPT: DRUCOF, CONNEG, CONPERM', () => {
  it.each([
    ['RCPT TO:<a@b.test> DRUCOF', all, { drucof: true }],
    ['RCPT TO:<a@b.test> drucof', all, { drucof: true }],
    ['RCPT TO:<a@b.test> DRUCOF=1', all, '501 5.5.4'],
    ['RCPT TO:<a@b.test> DRUCOF', off('drucof'), '555 5.5.4'],
    ['RCPT TO:<a@b.test> CONNEG', all, { conneg: true }],
    ['RCPT TO:<a@b.test> CONNEG=OPTIONAL', all, { conneg: true }],
    ['RCPT TO:<a@b.test> CONNEG=optional', all, { conneg: true }],
    ['RCPT TO:<a@b.test> CONNEG=REQUIRED', all, '501 5.5.4'],
    ['RCPT TO:<a@b.test> CONNEG CONNEG=OPTIONAL', all, '501 5.5.4'], // duplicate
    ['RCPT TO:<a@b.test> CONNEG', off('conneg'), '504 5.5.4'], // RFC 4141: 504
    ['RCPT TO:<a@b.test> CONNEG=OPTIONAL', off('conneg'), '504 5.5.4'],
    ['RCPT TO:<a@b.test> CONNEG=BOGUS', off('conneg'), '504 5.5.4'],
    ['RCPT TO:<a@b.test> CONPERM', all, '504 5.5.4'],
    ['RCPT TO:<a@b.test> INLINE-DSN', all, '555 5.5.4'], // a MAIL parameter
    ['RCPT TO:<a@b.test> PRDR', all, '555 5.5.4'],
    ['RCPT TO:<a@b.test> XDRUCOF', all, '555 5.5.4'],
    [
      'RCPT TO:<a@b.test> NOTIFY=FAILURE DRUCOF CONNEG=OPTIONAL ORCPT=rfc822;a@b.test',
      all,
      { notify: ['FAILURE'], drucof: true, conneg: true, orcpt: { addrType: 'rfc822', address: { xtext: 'a@b.test', value: 'a@b.test' } } },
    ],
  ] as const)('%s (policy %j) → %j', (line, policy, expected) => {
    expect(outcome(parseRcptParams(line, policy))).toEqual(expected);
  });
});
