/** smtp/params.ts: MAIL/RCPT parameters from the raw line — RFC 3461, 1870, 6152, 6531 — and xtext. */
import { describe, expect, it } from 'vitest';
import { decodeXtext, encodeXtext, parseMailParams, parseRcptParams, splitParams, type ParamPolicy } from '../../src/smtp/params.ts';

const dsn: ParamPolicy = { dsn: true, maxSize: 1000 };
const noDsn: ParamPolicy = { dsn: false };

/** `code enhanced` of a failed parse, or the params of a good one. */
function outcome(r: ReturnType<typeof parseMailParams> | ReturnType<typeof parseRcptParams>): unknown {
  return r.ok ? r.params : `${r.reply.code} ${r.reply.enhanced}`;
}

const x = (n: number) => 'x'.repeat(n);

describe('parseMailParams', () => {
  it.each([
    ['MAIL FROM:<a@b.test>', dsn, { smtpUtf8: false }],
    ['MAIL FROM:<>', dsn, { smtpUtf8: false }],
    ['mail from: <a@b.test>  SIZE=100', dsn, { smtpUtf8: false, size: 100 }],
    ['MAIL FROM:<a@b.test> SIZE=1000', dsn, { smtpUtf8: false, size: 1000 }],
    ['MAIL FROM:<a@b.test> SIZE=1001', dsn, '552 5.3.4'],
    ['MAIL FROM:<a@b.test> SIZE=99999999999', noDsn, { smtpUtf8: false, size: 99999999999 }], // no limit
    ['MAIL FROM:<a@b.test> SIZE=1e3', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> SIZE', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> BODY=8bitmime', dsn, { smtpUtf8: false, body: '8BITMIME' }],
    ['MAIL FROM:<a@b.test> BODY=7BIT', dsn, { smtpUtf8: false, body: '7BIT' }],
    ['MAIL FROM:<a@b.test> BODY=BINARYMIME', dsn, '501 5.5.4'], // needs BDAT, not offered
    ['MAIL FROM:<a@b.test> SMTPUTF8', dsn, { smtpUtf8: true }],
    ['MAIL FROM:<a@b.test> SMTPUTF8=yes', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> RET=hdrs', dsn, { smtpUtf8: false, ret: 'HDRS' }],
    ['MAIL FROM:<a@b.test> RET=FULL', dsn, { smtpUtf8: false, ret: 'FULL' }],
    ['MAIL FROM:<a@b.test> RET=X', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> RET', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> RET=FULL', noDsn, '555 5.5.4'], // DSN not advertised
    ['MAIL FROM:<a@b.test> ENVID=abc+2Bdef', dsn, { smtpUtf8: false, envid: { xtext: 'abc+2Bdef', value: 'abc+def' } }],
    ['MAIL FROM:<a@b.test> ENVID=caf+C3+A9', dsn, { smtpUtf8: false, envid: { xtext: 'caf+C3+A9', value: 'café' } }],
    [`MAIL FROM:<a@b.test> ENVID=${x(100)}`, dsn, { smtpUtf8: false, envid: { xtext: x(100), value: x(100) } }],
    [`MAIL FROM:<a@b.test> ENVID=${x(101)}`, dsn, '501 5.5.4'], // RFC 3461 §4.4: at most 100
    ['MAIL FROM:<a@b.test> ENVID=a+zz', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> ENVID=a+2b', dsn, '501 5.5.4'], // hexchar is upper-case only
    ['MAIL FROM:<a@b.test> ENVID=a+2', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> ENVID', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> ENVID=x', noDsn, '555 5.5.4'],
    ['MAIL FROM:<a@b.test> FOO=1', dsn, '555 5.5.4'],
    ['MAIL FROM:<a@b.test> FOO', dsn, '555 5.5.4'],
    ['MAIL FROM:<a@b.test> REQUIRETLS', dsn, '555 5.5.4'], // not advertised
    ['MAIL FROM:<a@b.test> SIZE=1 SIZE=2', dsn, '501 5.5.4'], // duplicate
    ['MAIL FROM:<a@b.test> size=1 SIZE=2', dsn, '501 5.5.4'], // keys are case-insensitive
    ['MAIL FROM:<a@b.test> RET=FULL RET=HDRS', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> =x', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test> SIZE=', dsn, '501 5.5.4'],
    ['MAIL FROM:<a@b.test', dsn, '501 5.5.4'], // unterminated path
    ['MAIL FROM:<"a> b"@c.test> SIZE=5', dsn, { smtpUtf8: false, size: 5 }], // quoted local part
    ['MAIL FROM:<a@b.test> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=q', dsn, { smtpUtf8: true, size: 10, body: '8BITMIME', ret: 'HDRS', envid: { xtext: 'q', value: 'q' } }],
  ] as const)('%s (policy %j) → %j', (line, policy, expected) => {
    expect(outcome(parseMailParams(line, policy))).toEqual(expected);
  });
});

describe('parseRcptParams', () => {
  it.each([
    ['RCPT TO:<a@b.test>', dsn, {}],
    ['RCPT TO:<a@b.test> NOTIFY=NEVER', dsn, { notify: 'NEVER' }],
    ['RCPT TO:<a@b.test> NOTIFY=never', dsn, { notify: 'NEVER' }],
    ['RCPT TO:<a@b.test> NOTIFY=SUCCESS,FAILURE,DELAY', dsn, { notify: ['SUCCESS', 'FAILURE', 'DELAY'] }],
    ['RCPT TO:<a@b.test> NOTIFY=delay', dsn, { notify: ['DELAY'] }],
    ['RCPT TO:<a@b.test> NOTIFY=NEVER,SUCCESS', dsn, '501 5.5.4'], // NEVER stands alone
    ['RCPT TO:<a@b.test> NOTIFY=SUCCESS,NEVER', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> NOTIFY=SUCCESS,SUCCESS', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> NOTIFY=BOGUS', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> NOTIFY=SUCCESS,', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> NOTIFY', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> NOTIFY=SUCCESS,FAILURE,DELAY,DELAY', dsn, '501 5.5.4'], // 29 chars > 28
    ['RCPT TO:<a@b.test> NOTIFY=SUCCESS', noDsn, '555 5.5.4'],
    ['RCPT TO:<a@b.test> ORCPT=rfc822;a+2Bb@x.test', dsn, { orcpt: { addrType: 'rfc822', address: { xtext: 'a+2Bb@x.test', value: 'a+b@x.test' } } }],
    ['RCPT TO:<a@b.test> ORCPT=utf-8;J+C3+B6rg@x.test', dsn, { orcpt: { addrType: 'utf-8', address: { xtext: 'J+C3+B6rg@x.test', value: 'Jörg@x.test' } } }],
    ['RCPT TO:<a@b.test> ORCPT=rfc822', dsn, '501 5.5.4'], // no ;
    ['RCPT TO:<a@b.test> ORCPT=;a@x.test', dsn, '501 5.5.4'], // no addr-type
    ['RCPT TO:<a@b.test> ORCPT=rfc822;', dsn, '501 5.5.4'], // no address
    ['RCPT TO:<a@b.test> ORCPT=rfc822;a+zzb@x', dsn, '501 5.5.4'], // bad xtext
    ['RCPT TO:<a@b.test> ORCPT=rfc822;a+2bb@x', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> ORCPT=rfc 822;a@x', dsn, '501 5.5.4'], // the space splits: ORCPT=rfc has no ";"
    [`RCPT TO:<a@b.test> ORCPT=rfc822;${x(493)}`, dsn, { orcpt: { addrType: 'rfc822', address: { xtext: x(493), value: x(493) } } }], // 500 chars
    [`RCPT TO:<a@b.test> ORCPT=rfc822;${x(494)}`, dsn, '501 5.5.4'], // 501 chars
    ['RCPT TO:<a@b.test> ORCPT=rfc822;a@x', noDsn, '555 5.5.4'],
    ['RCPT TO:<a@b.test> NOTIFY=NEVER NOTIFY=NEVER', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> ORCPT=rfc822;a@x orcpt=rfc822;b@x', dsn, '501 5.5.4'],
    ['RCPT TO:<a@b.test> FOO=1', dsn, '555 5.5.4'],
    ['RCPT TO:<a@b.test> SIZE=1', dsn, '555 5.5.4'], // a MAIL parameter
    ['RCPT TO:<a@b.test> NOTIFY=FAILURE ORCPT=rfc822;a@b.test', dsn, { notify: ['FAILURE'], orcpt: { addrType: 'rfc822', address: { xtext: 'a@b.test', value: 'a@b.test' } } }],
  ] as const)('%s (policy %j) → %j', (line, policy, expected) => {
    expect(outcome(parseRcptParams(line, policy))).toEqual(expected);
  });
});

describe('splitParams', () => {
  it('splits after the path, upper-casing keys; a keyword alone has the value true', () => {
    expect(splitParams('MAIL FROM:<a@b> k=v FLAG')).toEqual([
      { key: 'K', value: 'v' },
      { key: 'FLAG', value: true },
    ]);
  });
  it('refuses "=" inside a value (RFC 5321 esmtp-value excludes it)', () => {
    expect(splitParams('MAIL FROM:<a@b> K=v=w')).toMatchObject({ code: 501, enhanced: '5.5.4' });
  });
  it('takes the first word as path when there are no angle brackets', () => {
    expect(splitParams('MAIL FROM:a@b SIZE=1')).toEqual([{ key: 'SIZE', value: '1' }]);
  });
  it('refuses control characters in a value', () => {
    expect(splitParams('MAIL FROM:<a@b> ENVID=a\x01b')).toMatchObject({ code: 501 });
  });
});

describe('xtext (RFC 3461 §4)', () => {
  it.each([
    ['plain', 'plain'],
    ['a+b', 'a+2Bb'],
    ['a=b', 'a+3Db'],
    ['a b', 'a+20b'],
    ['tab\there', 'tab+09here'],
    ['café', 'caf+C3+A9'],
    ['日本', '+E6+97+A5+E6+9C+AC'],
    ['rfc822;user+tag=1@example.com', 'rfc822;user+2Btag+3D1@example.com'],
    ['~!', '~!'],
    ['', ''],
  ])('%j ⇄ %s', (value, xtext) => {
    expect(encodeXtext(value)).toBe(xtext);
    expect(decodeXtext(xtext)).toBe(value);
  });

  it.each(['a+', 'a+2', 'a+2g', 'a+2b', 'a b', 'a=b', 'é'])('refuses malformed xtext %j', (bad) => {
    expect(decodeXtext(bad)).toBeUndefined();
  });

  it('round-trips every byte value', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('latin1');
    const samples = [all.slice(0, 128), 'Ünïcødé ✓ 𝄞', '+++===', ' leading and trailing '];
    for (const s of samples) expect(decodeXtext(encodeXtext(s))).toBe(s);
  });
});
