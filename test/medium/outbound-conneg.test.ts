/**
 * What the decision logic learns from a next hop, and what it passes on
 * (protocols.md A1–A3, A8), against the scriptable next hop on loopback: the
 * hop's EHLO keywords (kept with a TTL), CONNEG queries in a probe session
 * (RFC 4141 shape with and without enhanced codes, `[CONNEG]`, not known,
 * refused parameter with the RCPT sent again, unparsable, timeout, MAIL refused)
 * and during a delivery, and DRUCOF passed on only to a DRUCOF hop.
 */
import { describe, expect, it } from 'vitest';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import type { Envelope } from '../../src/model/envelope.ts';
import type { NextHop } from '../../src/model/delivery.ts';
import { newRecipient, type RecipientState } from '../../src/model/recipient.ts';
import { HopUnavailableError, type RecipientOptions } from '../../src/outbound/index.ts';
import { freePort } from '../helpers/ports.ts';
import { outboundHarness } from '../helpers/outbound.ts';

const { peer, pool } = outboundHarness();

const hop = (port: number): NextHop => ({ key: `t:${port}`, hosts: [{ host: '127.0.0.1', port }] });
const envelope: Envelope = {
  id: 'Q0001',
  mailFrom: 'sender@example.com',
  body: '7BIT',
  smtpUtf8: false,
  client: { address: '127.0.0.1', helo: 'client.test' },
  receivedAt: '2026-11-23T10:00:00.000Z',
  size: 0,
};
const BODY = Buffer.from('Subject: x\r\n\r\nhello\r\n');
const tick = () => new Promise((r) => setTimeout(r, 50));

function request(port: number, recipients: RecipientState[], perRecipient?: Record<string, RecipientOptions>) {
  return { hop: hop(port), envelope, recipients, body: BODY, ...(perRecipient && { perRecipient: new Map(Object.entries(perRecipient)) }) };
}

const FAX = '(& (| (type="image/tiff") (type="image/jpeg")) (color=grey) (pix-x<=1728))';
const failed = (a: CapabilityAnswer | undefined): string => (a?.kind === 'query-failed' ? a.reason : `not a failure: ${JSON.stringify(a)}`);

describe('EHLO keywords per hop', () => {
  it('reads them by connecting once, then keeps them (no new connection, no new EHLO)', async () => {
    const p = await peer({ extensions: ['CONNEG', 'DRUCOF', 'INLINE-DSN', 'PRDR'] });
    const o = pool();
    const k = await o.hopKeywords(hop(p.port));
    expect([...k]).toEqual(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'DSN', 'CONNEG', 'DRUCOF', 'INLINE-DSN', 'PRDR']);
    expect(await o.hopKeywords(hop(p.port))).toBe(k);
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(p.connections).toBe(1);
    expect(p.commands.filter((c) => c.startsWith('EHLO'))).toHaveLength(1);
    // The connection opened for the keywords served the delivery, without an RSET of nothing.
    expect(p.commands.filter((c) => c === 'RSET')).toHaveLength(0);
  });

  it('concurrent askers share one lookup', async () => {
    const p = await peer({ extensions: ['DRUCOF'] });
    const o = pool();
    const all = await Promise.all(Array.from({ length: 5 }, () => o.hopKeywords(hop(p.port))));
    expect(all.every((k) => k.has('DRUCOF'))).toBe(true);
    expect(p.connections).toBe(1);
  });

  it('after the TTL they are read again from a new connection', async () => {
    const p = await peer({ extensions: ['DRUCOF'] });
    const o = pool({ ehloTtl: 400, idleReuse: 50 });
    expect((await o.hopKeywords(hop(p.port))).has('DRUCOF')).toBe(true);
    p.setScript({ extensions: ['CONNEG'] });
    expect((await o.hopKeywords(hop(p.port))).has('DRUCOF')).toBe(true); // still fresh
    await new Promise((r) => setTimeout(r, 500));
    const k = await o.hopKeywords(hop(p.port));
    expect(k.has('CONNEG')).toBe(true);
    expect(k.has('DRUCOF')).toBe(false);
    expect(p.connections).toBe(2);
  });

  it('every new connection refreshes them', async () => {
    const p = await peer({ extensions: ['DRUCOF'] });
    const o = pool({ idleReuse: 50 });
    await o.hopKeywords(hop(p.port));
    p.setScript({ extensions: ['CONNEG'] });
    await new Promise((r) => setTimeout(r, 150));
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    expect((await o.hopKeywords(hop(p.port))).has('CONNEG')).toBe(true);
  });

  it('an unreachable hop rejects with HopUnavailableError carrying a temporary reply (never an empty set)', async () => {
    const port = await freePort();
    const err = await pool()
      .hopKeywords(hop(port))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HopUnavailableError);
    expect((err as HopUnavailableError).reply).toMatchObject({ code: 451, enhanced: '4.4.1' });
  });
});

describe('CONNEG probe (MAIL FROM:<>, RCPT … CONNEG, RSET; never DATA)', () => {
  it('reads RFC 4141’s shape (enhanced codes, the expression over several lines) and ends with RSET', async () => {
    const p = await peer({
      extensions: ['CONNEG'],
      conneg: (a) => (a.startsWith('fax') ? { expression: ['(& (| (type="image/tiff") (type="image/jpeg"))', '   (color=grey) (pix-x<=1728))'] } : undefined),
    });
    const o = pool();
    const answers = await o.probe(hop(p.port), ['fax@example.net']);
    expect(answers.get('fax@example.net')).toEqual({ kind: 'known', expression: FAX, source: 'conneg' });
    await tick();
    expect(p.commands.filter((c) => !c.startsWith('EHLO'))).toEqual(['MAIL FROM:<>', 'RCPT TO:<fax@example.net> CONNEG', 'RSET']);
    expect(p.messages).toHaveLength(0);
    // The connection is parked and serves the next delivery.
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(p.connections).toBe(1);
  });

  it.each([
    ['without enhanced codes', { expression: '(type="text/plain")', enhanced: false }],
    ['with the [CONNEG] tag', { expression: '(type="text/plain")', tag: '[CONNEG]' as const }],
    ['with the [CONNEG] tag, no enhanced codes', { expression: '(type="text/plain")', tag: '[CONNEG]' as const, enhanced: false }],
  ])('reads the expression %s', async (_n, c) => {
    const p = await peer({ extensions: ['CONNEG'], conneg: () => c });
    const answers = await pool().probe(hop(p.port), ['a@example.net']);
    expect(answers.get('a@example.net')).toEqual({ kind: 'known', expression: '(type="text/plain")', source: 'conneg' });
  });

  it('not known (a positive reply without CONNEG lines) is a failed query, not "no capabilities"', async () => {
    const p = await peer({ extensions: ['CONNEG'] });
    const a = (await pool().probe(hop(p.port), ['a@example.net'])).get('a@example.net');
    expect(a).toMatchObject({ kind: 'query-failed', source: 'conneg', reply: { code: 250 } });
    expect(failed(a)).toMatch(/not known/);
  });

  it.each([
    [504, '5.5.4 CONNEG not supported here'],
    [555, '5.5.4 unrecognised parameter'],
    [501, '5.5.4 syntax error in parameters'],
  ])('a %s to the RCPT with CONNEG: the RCPT is sent again without it, and the query failed', async (code, text) => {
    const p = await peer({ extensions: ['CONNEG'], conneg: () => ({ code, text }) });
    const a = (await pool().probe(hop(p.port), ['a@example.net'])).get('a@example.net');
    expect(a).toMatchObject({ kind: 'query-failed', reply: { code } });
    expect(failed(a)).toMatch(/refused the CONNEG parameter/);
    await tick();
    expect(p.commands.filter((c) => c.startsWith('RCPT') || c === 'RSET' || c === 'DATA')).toEqual(['RCPT TO:<a@example.net> CONNEG', 'RCPT TO:<a@example.net>', 'RSET']);
  });

  it('a refused recipient (5xx) or a deferred one (4xx) is a failed query with that reply', async () => {
    const p = await peer({ extensions: ['CONNEG'], rcpt: (a) => (a.startsWith('gone') ? { code: 550, text: '5.1.1 no such user' } : a.startsWith('busy') ? { code: 451, text: '4.3.0 later' } : undefined) });
    const answers = await pool().probe(hop(p.port), ['gone@example.net', 'busy@example.net']);
    expect(answers.get('gone@example.net')).toMatchObject({ kind: 'query-failed', reply: { code: 550, enhanced: '5.1.1' } });
    expect(answers.get('busy@example.net')).toMatchObject({ kind: 'query-failed', reply: { code: 451, enhanced: '4.3.0' } });
  });

  it('an unparsable expression is a failed query', async () => {
    const p = await peer({ extensions: ['CONNEG'], conneg: () => ({ expression: '(& (type="text/plain"' }) });
    const a = (await pool().probe(hop(p.port), ['a@example.net'])).get('a@example.net');
    expect(a).toMatchObject({ kind: 'query-failed', reply: { code: 250 } });
    expect(failed(a)).toMatch(/unparsable/);
  });

  it('no reply in time is a failed query (451 4.4.2), and the connection is dropped', async () => {
    const p = await peer({ extensions: ['CONNEG'], rcptSilence: (a) => (a.startsWith('slow') ? 'hang' : undefined), conneg: () => ({ expression: '(type="text/plain")' }) });
    const o = pool({ probeTimeout: 300 });
    const answers = await o.probe(hop(p.port), ['fast@example.net', 'slow@example.net']);
    expect(answers.get('fast@example.net')).toMatchObject({ kind: 'known' });
    expect(answers.get('slow@example.net')).toMatchObject({ kind: 'query-failed', reply: { code: 451, enhanced: '4.4.2' } });
    expect(failed(answers.get('slow@example.net'))).toMatch(/probe/);
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(p.connections).toBe(2);
  });

  it('MAIL FROM:<> refused: every query failed with that reply', async () => {
    const p = await peer({ extensions: ['CONNEG'], mail: () => ({ code: 550, text: '5.7.1 no null sender here' }) });
    const answers = await pool().probe(hop(p.port), ['a@example.net', 'b@example.net']);
    for (const a of ['a@example.net', 'b@example.net']) expect(answers.get(a)).toMatchObject({ kind: 'query-failed', reply: { code: 550, enhanced: '5.7.1' } });
  });

  it('several recipients in one session, pipelined or one command at a time', async () => {
    for (const pipelining of [true, false]) {
      const p = await peer({ pipelining, extensions: ['CONNEG'], conneg: (a) => (a.startsWith('x') ? { code: 504, text: '5.5.4 no' } : { expression: `(type="text/${a[0]}")` }) });
      const answers = await pool().probe(hop(p.port), ['a@example.net', 'x@example.net', 'b@example.net']);
      expect(answers.get('a@example.net')).toMatchObject({ kind: 'known', expression: '(type="text/a")' });
      expect(answers.get('x@example.net')).toMatchObject({ kind: 'query-failed' });
      expect(answers.get('b@example.net')).toMatchObject({ kind: 'known', expression: '(type="text/b")' });
      expect(p.connections).toBe(1);
    }
  });

  it('a hop without CONNEG is not asked at all', async () => {
    const p = await peer({ extensions: ['DRUCOF'] });
    const a = (await pool().probe(hop(p.port), ['a@example.net'])).get('a@example.net');
    expect(failed(a)).toMatch(/does not advertise CONNEG/);
    await tick();
    expect(p.commands.filter((c) => !c.startsWith('EHLO'))).toEqual([]);
  });

  it('an unreachable server is a failed query', async () => {
    const port = await freePort();
    const a = (await pool().probe(hop(port), ['a@example.net'])).get('a@example.net');
    expect(a).toMatchObject({ kind: 'query-failed', reply: { code: 451, enhanced: '4.4.1' } });
  });

  it('source srv for a capability server found by SRV', async () => {
    const p = await peer({ extensions: ['CONNEG'], conneg: () => ({ expression: '(type="text/plain")' }) });
    const a = (await pool().probe(hop(p.port), ['a@example.net'], { source: 'srv' })).get('a@example.net');
    expect(a).toEqual({ kind: 'known', expression: '(type="text/plain")', source: 'srv' });
  });
});

describe('CONNEG during a delivery', () => {
  it('asks with the bare CONNEG on the asking recipients’ RCPTs, and returns the answers', async () => {
    const p = await peer({ extensions: ['CONNEG'], conneg: (a) => (a.startsWith('fax') ? { expression: FAX } : undefined) });
    const res = await pool().deliver(request(p.port, [newRecipient('fax@example.net'), newRecipient('plain@example.net'), newRecipient('other@example.net')], { 'fax@example.net': { conneg: true }, 'plain@example.net': { conneg: true } }));
    expect(p.messages[0]!.rcptLines).toEqual([
      'RCPT TO:<fax@example.net> ORCPT=rfc822;fax@example.net CONNEG',
      'RCPT TO:<plain@example.net> ORCPT=rfc822;plain@example.net CONNEG',
      'RCPT TO:<other@example.net> ORCPT=rfc822;other@example.net',
    ]);
    expect(res.capabilities?.get('fax@example.net')).toEqual({ kind: 'known', expression: FAX, source: 'conneg' });
    expect(failed(res.capabilities?.get('plain@example.net'))).toMatch(/not known/);
    expect(res.capabilities?.has('other@example.net')).toBe(false);
    for (const a of ['fax@example.net', 'plain@example.net', 'other@example.net']) expect(res.perRecipient.get(a)?.code).toBe(250);
  });

  it.each([true, false])('a 504 refuses the parameter, not the recipient: RCPT again without CONNEG, then DATA (PIPELINING %s)', async (pipelining) => {
    const p = await peer({ pipelining, extensions: ['CONNEG'], conneg: () => ({ code: 504, text: '5.5.4 CONNEG not supported' }) });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('b@example.net')], { 'a@example.net': { conneg: true } }));
    expect(p.commands.filter((c) => c.startsWith('RCPT') || c === 'DATA')).toEqual([
      'RCPT TO:<a@example.net> ORCPT=rfc822;a@example.net CONNEG',
      ...(pipelining ? ['RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net', 'RCPT TO:<a@example.net> ORCPT=rfc822;a@example.net'] : ['RCPT TO:<a@example.net> ORCPT=rfc822;a@example.net', 'RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net']),
      'DATA',
    ]);
    expect(p.messages[0]!.rcptTo.sort()).toEqual(['a@example.net', 'b@example.net']);
    expect(res.perRecipient.get('a@example.net')?.code).toBe(250);
    expect(res.capabilities?.get('a@example.net')).toMatchObject({ kind: 'query-failed', reply: { code: 504 } });
  });

  it('to a hop without CONNEG: no parameter, and the query reported as failed', async () => {
    const p = await peer();
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net')], { 'a@example.net': { conneg: true } }));
    expect(p.messages[0]!.rcptLines).toEqual(['RCPT TO:<a@example.net> ORCPT=rfc822;a@example.net']);
    expect(failed(res.capabilities?.get('a@example.net'))).toMatch(/does not advertise CONNEG/);
  });

  it('a lost connection before the RCPT reply: the query failed with the reason', async () => {
    const p = await peer({ extensions: ['CONNEG'], rcptSilence: () => 'drop' });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net')], { 'a@example.net': { conneg: true } }));
    expect(res.perRecipient.get('a@example.net')).toMatchObject({ code: 451, enhanced: '4.4.2' });
    expect(res.capabilities?.get('a@example.net')).toMatchObject({ kind: 'query-failed', reply: { code: 451, enhanced: '4.4.2' } });
  });

  it('works together with INLINE-DSN (the 352 after a resend is itemised in its place)', async () => {
    const p = await peer({
      extensions: ['CONNEG', 'INLINE-DSN'],
      rcpt: () => ({ code: 352, text: 'wait' }),
      conneg: (a) => (a.startsWith('a') ? { code: 504, text: '5.5.4 no' } : undefined),
      verdict: (a) => (a.startsWith('a') ? { code: 550, text: `5.6.0 <${a}> refuses` } : undefined),
    });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('b@example.net')], { 'a@example.net': { conneg: true } }));
    expect(p.messages[0]!.deferred).toEqual(['b@example.net', 'a@example.net']);
    expect(res.perRecipient.get('a@example.net')).toMatchObject({ code: 550, enhanced: '5.6.0' });
    expect(res.perRecipient.get('b@example.net')).toMatchObject({ code: 250, enhanced: '2.1.5' });
  });
});

describe('DRUCOF passed on', () => {
  it('only on the RCPTs it was asked for, to a hop that advertises DRUCOF', async () => {
    const p = await peer({ extensions: ['DRUCOF'] });
    const res = await pool().deliver(
      request(p.port, [newRecipient('a@example.net', { drucof: true }), newRecipient('b@example.net', { drucof: true }), newRecipient('c@example.net')], {
        'a@example.net': { drucof: true },
      }),
    );
    // b asked for DRUCOF from the sender, but the decision (convert here) did not ask to pass it on.
    expect(p.messages[0]!.rcptLines).toEqual([
      'RCPT TO:<a@example.net> ORCPT=rfc822;a@example.net DRUCOF',
      'RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net',
      'RCPT TO:<c@example.net> ORCPT=rfc822;c@example.net',
    ]);
    expect([...(res.drucofPassedOn ?? [])]).toEqual(['a@example.net']);
    for (const a of ['a@example.net', 'b@example.net', 'c@example.net']) expect(res.perRecipient.get(a)?.code).toBe(250);
  });

  it('never to a hop without DRUCOF: a recipient asked for is deferred (451 4.3.3) for the decision to be made again; the others go', async () => {
    const p = await peer({ dsn: false });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net', { drucof: true }), newRecipient('c@example.net')], { 'a@example.net': { drucof: true } }));
    expect(p.messages[0]!.rcptLines).toEqual(['RCPT TO:<c@example.net>']);
    expect(res.perRecipient.get('a@example.net')).toMatchObject({ code: 451, enhanced: '4.3.3' });
    expect(res.perRecipient.get('c@example.net')?.code).toBe(250);
    expect(res.drucofPassedOn).toBeUndefined();
  });

  it('with CONNEG on the same RCPT, both parameters, DRUCOF first', async () => {
    const p = await peer({ dsn: false, extensions: ['CONNEG', 'DRUCOF'] });
    await pool().deliver(request(p.port, [newRecipient('a@example.net', { drucof: true })], { 'a@example.net': { drucof: true, conneg: true } }));
    expect(p.messages[0]!.rcptLines).toEqual(['RCPT TO:<a@example.net> DRUCOF CONNEG']);
  });
});
