/**
 * The pure parts of outbound/deliver.ts: EHLO features, wire addresses, MAIL and
 * RCPT parameters, local refusals, failures → Replies, and the per-recipient
 * assembly. Table-driven, no sockets.
 */
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/model/envelope.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import type { ClientFailure } from '../../src/outbound/client.ts';
import {
  assemble,
  failureReply,
  hopFeatures,
  mailParams,
  prepare,
  rcptParams,
  remoteMtaName,
  wireAddress,
  type DeliveryRequest,
  type HopFeatures,
} from '../../src/outbound/deliver.ts';

const env = (over: Partial<Envelope> = {}): Envelope => ({
  id: 'Q1',
  mailFrom: 's@example.com',
  body: '7BIT',
  smtpUtf8: false,
  client: { address: '127.0.0.1', helo: 'c' },
  receivedAt: '',
  size: 0,
  ...over,
});

const FULL: HopFeatures = hopFeatures(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'DSN', 'SIZE 1000']);
const BARE: HopFeatures = hopFeatures(['PIPELINING']);
const host = { host: 'mx.example.net', port: 25 };

describe('hopFeatures', () => {
  it('reads keywords upper-cased, first word only, and the SIZE limit', () => {
    const f = hopFeatures(['pipelining', 'Dsn', 'SIZE 52428800', 'AUTH PLAIN LOGIN', 'X-EXPS=LOGIN']);
    expect(f.keywords).toEqual(['PIPELINING', 'DSN', 'SIZE', 'AUTH', 'X-EXPS']);
    expect(f).toMatchObject({ dsn: true, eightBitMime: false, smtpUtf8: false, size: 52428800 });
  });
  it.each([
    [['SIZE'], 0],
    [['SIZE 0'], 0],
    [['DSN'], undefined],
  ])('%j → size %s', (lines, size) => {
    expect(hopFeatures(lines).size).toBe(size);
  });
});

describe('wireAddress', () => {
  it.each([
    ['a@example.net', false, 'a@example.net'],
    ['a@bücher.example', true, 'a@bücher.example'],
    ['a@bücher.example', false, 'a@xn--bcher-kva.example'],
    ['a@[192.0.2.1]', false, 'a@[192.0.2.1]'],
    ['postmaster', false, 'postmaster'],
  ])('%s (hop SMTPUTF8 %s) → %s', (address, utf8, wire) => {
    expect(wireAddress(address, utf8, 'recipient')).toBe(wire);
  });
  it('refuses a non-ASCII local part to a hop without SMTPUTF8 with 553 5.6.7', () => {
    expect(wireAddress('jörg@example.net', false, 'recipient')).toMatchObject({ code: 553, enhanced: '5.6.7' });
  });
  it('refuses addresses that cannot go on the wire', () => {
    expect(wireAddress('a>b@example.net', true, 'recipient')).toMatchObject({ code: 501, enhanced: '5.1.3' });
  });
});

describe('mailParams', () => {
  it.each([
    ['nothing to declare', env(), FULL, ['SIZE=10']],
    ['8bit + utf8 + DSN', env({ body: '8BITMIME', smtpUtf8: true, ret: 'FULL', envid: { xtext: 'ab+2Bc', value: 'ab+c' } }), FULL, ['BODY=8BITMIME', 'SMTPUTF8', 'SIZE=10', 'RET=FULL', 'ENVID=ab+2Bc']],
    ['bare hop', env({ body: '8BITMIME', smtpUtf8: true, ret: 'HDRS', envid: { xtext: 'x', value: 'x' } }), BARE, []],
  ])('%s', (_n, e, hop, expected) => {
    expect(mailParams(e, hop, 10, false)).toEqual(expected);
  });
});

describe('rcptParams', () => {
  it.each([
    ['NOTIFY list and ORCPT verbatim', newRecipient('a@x', { notify: ['SUCCESS', 'DELAY'], orcpt: { addrType: 'rfc822', address: { xtext: 'A+2Bb@X', value: 'A+b@X' } } }), ['NOTIFY=SUCCESS,DELAY', 'ORCPT=rfc822;A+2Bb@X']],
    ['NEVER', newRecipient('a@x', { notify: 'NEVER' }), ['NOTIFY=NEVER', 'ORCPT=rfc822;a@x']],
    ['no NOTIFY, ORCPT added as xtext', newRecipient('a+b=c d@x'), ['ORCPT=rfc822;a+2Bb+3Dc+20d@x']],
    ['utf-8 address', newRecipient('jörg@x'), ['ORCPT=rfc822;j+C3+B6rg@x']],
  ])('%s', (_n, r, expected) => {
    expect(rcptParams(r, FULL)).toEqual(expected);
  });
  it('sends none to a hop without DSN', () => {
    expect(rcptParams(newRecipient('a@x', { notify: ['SUCCESS'] }), BARE)).toEqual([]);
  });
});

const req = (recipients: string[], over: Partial<DeliveryRequest> = {}): DeliveryRequest => ({
  hop: { key: 'k', hosts: [host] },
  envelope: env(),
  recipients: recipients.map((a) => newRecipient(a)),
  body: Buffer.from('x\r\n'),
  ...over,
});

describe('prepare', () => {
  it('answers everyone locally when the message exceeds the hop SIZE', () => {
    const p = prepare(req(['a@x', 'b@x'], { body: Buffer.alloc(2000) }), FULL);
    expect(p.tx).toBeUndefined();
    expect([...p.local.values()].map((r) => `${r.code} ${r.enhanced}`)).toEqual(['552 5.3.4', '552 5.3.4']);
  });
  it('answers everyone when the sender cannot go to a hop without SMTPUTF8', () => {
    const p = prepare(req(['a@x'], { envelope: env({ mailFrom: 'jörg@example.com' }) }), BARE);
    expect(p.tx).toBeUndefined();
    expect(p.local.get('a@x')).toMatchObject({ code: 553, enhanced: '5.6.7' });
  });
  it('keeps sendable recipients, refuses the others, merges those that meet on the wire', () => {
    const p = prepare(req(['a@bücher.example', 'a@xn--bcher-kva.example', 'ü@x']), BARE);
    expect(p.tx?.recipients.map((r) => r.address)).toEqual(['a@xn--bcher-kva.example']);
    expect(p.wire.get('a@xn--bcher-kva.example')?.map((r) => r.address)).toEqual(['a@bücher.example', 'a@xn--bcher-kva.example']);
    expect(p.local.get('ü@x')).toMatchObject({ code: 553, enhanced: '5.6.7' });
  });
});

const failure = (over: Partial<ClientFailure>): ClientFailure => ({ stage: 'connect', tcpConnected: false, message: 'x', ...over });

describe('failureReply', () => {
  it.each([
    ['refused', failure({ code: 'ESOCKET', originalCode: 'ECONNREFUSED' }), 451, '4.4.1', 'connection refused'],
    ['unreachable', failure({ code: 'ESOCKET', originalCode: 'EHOSTUNREACH' }), 451, '4.4.1', 'no route to host'],
    ['connect timeout', failure({ code: 'ETIMEDOUT', timeoutType: 'CONNECT_TIMEOUT' }), 451, '4.4.1', 'timed out'],
    ['greeting timeout', failure({ code: 'ETIMEDOUT', timeoutType: 'GREETING_TIMEOUT', tcpConnected: true }), 451, '4.4.2', 'greeting'],
    ['command timeout', failure({ stage: 'session', code: 'ETIMEDOUT', timeoutType: 'SOCKET_TIMEOUT', tcpConnected: true }), 451, '4.4.2', 'timed out'],
    ['dropped', failure({ stage: 'session', code: 'ECONNECTION', tcpConnected: true }), 451, '4.4.2', 'lost connection'],
    ['dns', failure({ code: 'EDNS', originalCode: 'ENOTFOUND' }), 451, '4.4.4', 'not found'],
    ['protocol', failure({ code: 'EPROTOCOL', tcpConnected: true }), 451, '4.5.0', 'protocol error'],
    ['peer said so', failure({ code: 'EPROTOCOL', response: '554 5.7.1 go away', tcpConnected: true }), 554, '5.7.1', 'go away'],
    ['peer 421 without enhanced code', failure({ code: 'ECONNECTION', response: '421 bye', tcpConnected: true }), 421, undefined, 'bye'],
  ])('%s', (_n, f, code, enhanced, text) => {
    const r = failureReply(f, host);
    expect(r.code).toBe(code);
    expect(r.enhanced).toBe(enhanced);
    expect(r.lines.join(' ')).toContain(text);
  });
});

describe('assemble', () => {
  const r = req(['a@x', 'b@x', 'c@x']);
  const prep = prepare(r, FULL);
  it('RCPT refusal for the refused, DATA reply for the rest', () => {
    const out = assemble(r, prep, { rcpt: new Map([['a@x', '250 ok'], ['b@x', '550 5.1.1 no'], ['c@x', '250 ok']]), data: '250 2.0.0 queued' }, host);
    expect(out.get('a@x')).toEqual({ code: 250, enhanced: '2.0.0', lines: ['queued'] });
    expect(out.get('b@x')).toEqual({ code: 550, enhanced: '5.1.1', lines: ['no'] });
    expect(out.get('c@x')).toEqual({ code: 250, enhanced: '2.0.0', lines: ['queued'] });
  });
  it('MAIL refusal for everyone, even with pipelined 503s to RCPT', () => {
    const out = assemble(r, prep, { rcpt: new Map([['a@x', '503 need MAIL'], ['b@x', '503 need MAIL'], ['c@x', '503 need MAIL']]), failure: failure({ stage: 'mail', response: '550 5.7.1 sender refused', tcpConnected: true }) }, host);
    expect([...out.values()].map((x) => x.code)).toEqual([550, 550, 550]);
  });
  it('a lost connection after RCPT: refusals stay, the rest get 451 4.4.2', () => {
    const out = assemble(r, prep, { rcpt: new Map([['a@x', '250 ok'], ['b@x', '550 5.1.1 no']]), failure: failure({ stage: 'session', code: 'ECONNECTION', tcpConnected: true }) }, host);
    expect(out.get('a@x')).toMatchObject({ code: 451, enhanced: '4.4.2' });
    expect(out.get('b@x')).toMatchObject({ code: 550 });
    expect(out.get('c@x')).toMatchObject({ code: 451, enhanced: '4.4.2' });
  });
  it('a multi-line reply keeps every line', () => {
    const out = assemble(r, prep, { rcpt: new Map([['a@x', '250 ok'], ['b@x', '250 ok'], ['c@x', '250 ok']]), data: '250-2.0.0 one\n250 2.0.0 two' }, host);
    expect(out.get('c@x')).toEqual({ code: 250, enhanced: '2.0.0', lines: ['one', 'two'] });
  });
});

describe('remoteMtaName', () => {
  it.each([
    ['mx.example.net', 'other.example', 'mx.example.net'],
    ['192.0.2.1', 'mx.example.net', 'mx.example.net'],
    ['192.0.2.1', undefined, '192.0.2.1'],
    ['192.0.2.1', '[192.0.2.1]', '192.0.2.1'],
  ])('%s greeting as %s → %s', (h, name, expected) => {
    expect(remoteMtaName(h, name)).toBe(expected);
  });
});
