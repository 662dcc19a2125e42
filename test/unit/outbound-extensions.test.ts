/**
 * The pure parts of the extensions as a client, table-driven, no sockets: which
 * parameters go where (DRUCOF, CONNEG, INLINE-DSN, PRDR), the A4/A4b rules that
 * turn a 353 sequence into one Reply per recipient (never a success for a verdict
 * not read), and CONNEG replies into answers (capabilities/conneg-client.ts).
 */
import { describe, expect, it } from 'vitest';
import { answerFromRcpt, queryAnswers, refusesConneg } from '../../src/capabilities/conneg-client.ts';
import type { Envelope } from '../../src/model/envelope.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import type { Reply } from '../../src/model/reply.ts';
import type { AfterData, ClientFailure } from '../../src/outbound/client.ts';
import {
  assemble,
  deliveryCapabilities,
  hopFeatures,
  prepare,
  rcptParams,
  verdictMode,
  verdictOf,
  type DeliveryRequest,
  type RecipientOptions,
} from '../../src/outbound/deliver.ts';

const env: Envelope = { id: 'Q1', mailFrom: 's@example.com', body: '7BIT', smtpUtf8: false, client: { address: '127.0.0.1', helo: 'c' }, receivedAt: '', size: 0 };
const host = { host: 'mx.example.net', port: 25 };
const ALL = hopFeatures(['PIPELINING', 'DSN', 'CONNEG', 'DRUCOF', 'INLINE-DSN', 'PRDR']);
const PRDR = hopFeatures(['PIPELINING', 'PRDR']);
const BARE = hopFeatures(['PIPELINING']);
const short = (r: Reply | undefined) => (r ? `${r.code}${r.enhanced ? ' ' + r.enhanced : ''} ${r.lines.join(' / ')}` : 'none');

function req(addresses: string[], per: Record<string, RecipientOptions> = {}): DeliveryRequest {
  return { hop: { key: 'k', hosts: [host] }, envelope: env, recipients: addresses.map((a) => newRecipient(a)), body: Buffer.from('x\r\n'), perRecipient: new Map(Object.entries(per)) };
}

describe('hopFeatures and verdictMode', () => {
  it('reads the four keywords', () => {
    expect(ALL).toMatchObject({ conneg: true, drucof: true, inlineDsn: true, prdr: true });
    expect(BARE).toMatchObject({ conneg: false, drucof: false, inlineDsn: false, prdr: false });
  });
  it.each([
    [ALL, 1, 'INLINE-DSN'],
    [ALL, 3, 'INLINE-DSN'],
    [PRDR, 2, 'PRDR'],
    [PRDR, 1, undefined],
    [BARE, 5, undefined],
  ])('%#: %j recipients → %s', (hop, n, mode) => {
    expect(verdictMode(hop, n)).toBe(mode);
  });
});

describe('rcptParams with DRUCOF and CONNEG', () => {
  it.each([
    [ALL, { drucof: true, conneg: true }, ['ORCPT=rfc822;a@x', 'DRUCOF', 'CONNEG']],
    [ALL, {}, ['ORCPT=rfc822;a@x']],
    [BARE, { drucof: true, conneg: true }, []],
    [hopFeatures(['CONNEG']), { drucof: true, conneg: true }, ['CONNEG']],
  ])('%#', (hop, opts, expected) => {
    expect(rcptParams(newRecipient('a@x', { drucof: true }), hop, opts)).toEqual(expected);
  });
});

describe('prepare', () => {
  it('asks INLINE-DSN on MAIL whenever offered, PRDR only for two or more', () => {
    expect(prepare(req(['a@x']), ALL).tx?.mailParams).toEqual(['INLINE-DSN']);
    expect(prepare(req(['a@x']), ALL).tx?.verdicts).toBe('INLINE-DSN');
    expect(prepare(req(['a@x']), PRDR).tx?.mailParams).toEqual([]);
    expect(prepare(req(['a@x', 'b@x']), PRDR).tx).toMatchObject({ mailParams: ['PRDR'], verdicts: 'PRDR' });
  });
  it('defers a DRUCOF recipient locally when the hop has no DRUCOF (451 4.3.3), and sends the rest', () => {
    const p = prepare(req(['a@x', 'b@x'], { 'a@x': { drucof: true } }), BARE);
    expect(short(p.local.get('a@x'))).toMatch(/^451 4\.3\.3/);
    expect(p.tx?.recipients.map((r) => r.address)).toEqual(['b@x']);
  });
  it('records which wire recipients carry DRUCOF and CONNEG', () => {
    const p = prepare(req(['a@x', 'b@x', 'c@x'], { 'a@x': { drucof: true }, 'b@x': { conneg: true } }), ALL);
    expect([...p.drucof]).toEqual(['a@x']);
    expect([...p.conneg]).toEqual(['b@x']);
  });
});

const f = (over: Partial<ClientFailure>): ClientFailure => ({ stage: 'session', tcpConnected: true, message: 'x', ...over });
const ad = (over: Partial<AfterData>): AfterData => ({ mode: 'PRDR', deferred: [], sequence: true, itemised: ['a@x', 'b@x'], lines: new Map(), ...over });

describe('verdictOf (A4, A4b)', () => {
  const lines = new Map([
    ['a@x', '250 PRDR R=<a@x> acceptance'],
    ['b@x', '550 PRDR R=<b@x> refusal'],
  ]);
  it.each([
    ['2xx line, 2xx final → its own line', 'a@x', ad({ lines, final: '250 OK id=1' }), undefined, '250 PRDR R=<a@x> acceptance'],
    ['5xx line governs whatever the final', 'b@x', ad({ lines, final: '250 OK id=1' }), undefined, '550 PRDR R=<b@x> refusal'],
    ['2xx line, 4xx final → deferred with the final', 'a@x', ad({ lines, final: '451 later' }), undefined, '451 later'],
    ['2xx line, 5xx final → failed with the final', 'a@x', ad({ lines, final: '554 no' }), undefined, '554 no'],
    ['4xx line with 5xx final → its own 4xx', 'a@x', ad({ lines: new Map([['a@x', '450 busy']]), final: '554 no' }), undefined, '450 busy'],
    ['2xx line, no final (timeout) → 451 4.4.2', 'a@x', ad({ lines }), f({ code: 'ETIMEDOUT', timeoutType: 'SOCKET_TIMEOUT' }), '451 4.4.2'],
    ['no line (connection lost) → 451 4.4.2', 'b@x', ad({ lines: new Map([['a@x', '250 ok']]) }), f({ code: 'ECONNECTION' }), '451 4.4.2'],
    ['malformed → 451 4.5.0', 'a@x', ad({ lines, malformed: 'an extra line' }), f({ code: 'EPROTOCOL' }), '451 4.5.0'],
    ['a 3xx line is no verdict → 451 4.5.0', 'a@x', ad({ lines: new Map([['a@x', '354 what']]), final: '250 ok' }), undefined, '451 4.5.0'],
    ['INLINE-DSN, accepted with 250 at RCPT → the final', 'p@x', ad({ mode: 'INLINE-DSN', itemised: ['a@x'], lines, final: '250 2.0.0 done' }), undefined, '250 2.0.0 done'],
    ['INLINE-DSN, accepted with 250 at RCPT, no final → temporary', 'p@x', ad({ mode: 'INLINE-DSN', itemised: ['a@x'], lines }), f({ code: 'ETIMEDOUT' }), '451 4.4.2'],
    ['a 5xx failure reply standing in for an unread verdict becomes temporary', 'a@x', ad({ lines: new Map() }), f({ stage: 'data', response: '554 5.0.0 nope' }), '451 4.5.0 nope'],
  ])('%s', (_n, address, a, failure, expected) => {
    const r = verdictOf(address, a, failure, host);
    expect(short(r).startsWith(expected), short(r)).toBe(true);
    if (expected.startsWith('4')) expect(r.code).toBeLessThan(500);
  });
});

describe('assemble with verdicts', () => {
  const r = req(['p@x', 'a@x', 'b@x', 'o@x']);
  const prep = prepare(r, ALL);
  it('INLINE-DSN: 352 recipients by their lines, the 250 one by the final, refusals by RCPT', () => {
    const out = assemble(
      r,
      prep,
      {
        rcpt: new Map([
          ['p@x', '250 2.1.5 ok'],
          ['a@x', '352 wait'],
          ['b@x', '352 wait'],
          ['o@x', '550 5.1.1 gone'],
        ]),
        data: '250 2.0.0 done',
        afterData: ad({ mode: 'INLINE-DSN', deferred: ['a@x', 'b@x'], itemised: ['a@x', 'b@x'], lines: new Map([['a@x', '550 5.6.0 <a@x> refuses'], ['b@x', '250 2.1.5 <b@x> accepts']]), final: '250 2.0.0 done' }),
      },
      host,
    );
    expect([...out].map(([k, v]) => `${k} ${short(v)}`)).toEqual(['p@x 250 2.0.0 done', 'a@x 550 5.6.0 <a@x> refuses', 'b@x 250 2.1.5 <b@x> accepts', 'o@x 550 5.1.1 gone']);
  });
  it('INLINE-DSN single reply: one reply for every accepted recipient, 352 ones included', () => {
    const out = assemble(r, prep, { rcpt: new Map([['p@x', '250 ok'], ['a@x', '352 wait'], ['b@x', '352 wait'], ['o@x', '250 ok']]), data: '250 2.0.0 all', afterData: ad({ mode: 'INLINE-DSN', deferred: ['a@x', 'b@x'], sequence: false, itemised: [] }) }, host);
    expect([...out.values()].map(short)).toEqual(Array(4).fill('250 2.0.0 all'));
  });
  it('a 352 without INLINE-DSN is a protocol error for that recipient', () => {
    const out = assemble(r, prep, { rcpt: new Map([['p@x', '250 ok'], ['a@x', '352 wait'], ['b@x', '250 ok'], ['o@x', '250 ok']]), data: '250 ok' }, host);
    expect(short(out.get('a@x'))).toMatch(/^451 4\.5\.0/);
  });
  it('a stray 353 as the only reply to the dot is a temporary failure, not a success', () => {
    const out = assemble(req(['a@x']), prepare(req(['a@x']), BARE), { rcpt: new Map([['a@x', '250 ok']]), failure: f({ stage: 'data', response: '353 what' }) }, host);
    expect(short(out.get('a@x'))).toMatch(/^451 4\.5\.0/);
  });
});

describe('deliveryCapabilities', () => {
  it('answers every asker: from its query reply, or why there was none', () => {
    const r = req(['a@x', 'b@x', 'c@x', 'd@x'], { 'a@x': { conneg: true }, 'b@x': { conneg: true }, 'd@x': { conneg: true, drucof: true } });
    const prep = prepare(r, hopFeatures(['CONNEG']));
    const caps = deliveryCapabilities(r, prep, hopFeatures(['CONNEG']), { rcpt: new Map([['a@x', '250 ok'], ['b@x', '250 ok'], ['c@x', '250 ok']]), query: new Map([['a@x', '250-ok\n250 CONNEG (type="text/plain")'], ['b@x', '504 5.5.4 no']]), data: '250 ok' }, host)!;
    expect(caps.get('a@x')).toEqual({ kind: 'known', expression: '(type="text/plain")', source: 'conneg' });
    expect(caps.get('b@x')).toMatchObject({ kind: 'query-failed', reply: { code: 504 } });
    expect(caps.has('c@x')).toBe(false);
    expect(caps.get('d@x')).toMatchObject({ kind: 'query-failed', reply: { code: 451, enhanced: '4.3.3' } });
  });
  it('nobody asked: undefined', () => {
    const r = req(['a@x']);
    expect(deliveryCapabilities(r, prepare(r, ALL), ALL, undefined, host)).toBeUndefined();
  });
});

describe('CONNEG replies → answers (conneg-client)', () => {
  it.each([
    ['RFC 4141, enhanced codes', '250-2.1.5 <a@x> ok\n250-2.1.5 CONNEG (& (type="image/tiff")\n250 2.1.5 CONNEG   (color=grey))', { kind: 'known', expression: '(& (type="image/tiff") (color=grey))' }],
    ['no enhanced codes', '250-ok\n250 CONNEG (type="text/plain")', { kind: 'known', expression: '(type="text/plain")' }],
    ['[CONNEG] tag', '250-2.1.5 ok\n250 2.1.5 [CONNEG] (type="text/plain")', { kind: 'known', expression: '(type="text/plain")' }],
    ['not known', '250 2.1.5 ok', { kind: 'query-failed', reason: expect.stringMatching(/not known/) }],
    ['unparsable', '250-ok\n250 CONNEG (& (type=', { kind: 'query-failed', reason: expect.stringMatching(/unparsable/) }],
    ['504', '504 5.5.4 no', { kind: 'query-failed', reason: expect.stringMatching(/refused the CONNEG parameter/) }],
    ['550', '550 5.1.1 no such user', { kind: 'query-failed', reason: expect.stringMatching(/answered 550/) }],
    ['capabilities on a refusal do not count', '550-5.1.1 no\n550 5.1.1 CONNEG (type="text/plain")', { kind: 'query-failed' }],
    ['garbage', 'hello', { kind: 'query-failed', reason: expect.stringMatching(/malformed/) }],
  ])('%s', (_n, raw, expected) => {
    expect(answerFromRcpt(raw)).toMatchObject(expected);
  });
  it('refusesConneg: 501, 504, 555 only', () => {
    expect([501, 504, 555, 550, 500, 250].map(refusesConneg)).toEqual([true, true, true, false, false, false]);
  });
  it('queryAnswers: MAIL refused, a reply, no reply after a failure', () => {
    expect(queryAnswers(['a@x'], { mail: '550 5.7.1 no', rcpt: new Map() }).get('a@x')).toMatchObject({ kind: 'query-failed', reply: { code: 550 } });
    const m = queryAnswers(['a@x', 'b@x'], { mail: '250 ok', rcpt: new Map([['a@x', '250-ok\n250 CONNEG (type="text/plain")']]), failure: { reason: 'timed out' } }, 'srv');
    expect(m.get('a@x')).toEqual({ kind: 'known', expression: '(type="text/plain")', source: 'srv' });
    expect(m.get('b@x')).toEqual({ kind: 'query-failed', reason: 'timed out', source: 'srv' });
  });
});
