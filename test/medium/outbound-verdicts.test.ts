/**
 * Per-recipient verdicts after the data, as a client (protocols.md A4, A4b),
 * against the scriptable next hop on loopback: INLINE-DSN (352 at RCPT, the 353
 * sequence, the single-reply collapse), PRDR (Exim's form: every accepted
 * recipient itemised, the final-reply rules), which one is asked, and broken
 * sequences — short, extra line, out of order, hang — where every recipient whose
 * verdict was not read is a temporary failure, never a success.
 */
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/model/envelope.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import type { Reply } from '../../src/model/reply.ts';
import type { DeliveryOutcome, OutboundPool } from '../../src/outbound/index.ts';
import { outboundHarness } from '../helpers/outbound.ts';
import type { NextHopScript } from '../peers/next-hop.ts';

const { peer, pool } = outboundHarness();

const envelope: Envelope = {
  id: 'Q0001',
  mailFrom: 'sender@example.com',
  body: '7BIT',
  smtpUtf8: false,
  client: { address: '127.0.0.1', helo: 'client.test' },
  receivedAt: '2026-11-23T10:00:00.000Z',
  size: 0,
};
const BODY = Buffer.from('Subject: fighting words\r\n\r\nLet us fight about it.\r\n');

function deliver(o: OutboundPool, port: number, addresses: string[]): Promise<DeliveryOutcome> {
  return o.deliver({ hop: { key: `t:${port}`, hosts: [{ host: '127.0.0.1', port }] }, envelope, recipients: addresses.map((a) => newRecipient(a)), body: BODY });
}

const short = (r: Reply | undefined) => (r ? `${r.code}${r.enhanced ? ' ' + r.enhanced : ''} ${r.lines.join(' / ')}` : 'none');

/** The seed dialog's next hop (A4): postmaster accepts all, fighter and lover wait for the content, old-user is gone. */
const seed: NextHopScript = {
  extensions: ['INLINE-DSN'],
  rcpt: (a) =>
    a.startsWith('old-user')
      ? { code: 550, text: '5.1.1 this recipient no longer exists' }
      : a.startsWith('fighter') || a.startsWith('lover')
        ? { code: 352, text: 'recipient looks okay but wait for confirmation' }
        : { code: 250, text: '2.1.5 this recipient accepts all messages' },
  verdict: (a, m) => (a.startsWith('fighter') && m.body.includes('fight') ? { code: 550, text: `5.6.0 <${a}> refuses the content` } : { code: 250, text: `2.1.5 <${a}> accepts the content` }),
  sequence: { final: { code: 250, text: '2.0.0 [QUEUEID 01JSEED] data accepted by some users' } },
};
const SEED = ['postmaster@example.net', 'fighter@example.net', 'lover@example.net', 'old-user@example.net'];

describe('INLINE-DSN', () => {
  it('the seed dialog: MAIL … INLINE-DSN, 352s accepted, the 353 sequence read, each recipient its own reply', async () => {
    const p = await peer(seed);
    const res = await deliver(pool(), p.port, SEED);
    expect(res.verdicts).toBe('INLINE-DSN');
    expect(p.commands.filter((c) => !c.startsWith('EHLO'))).toEqual([
      'MAIL FROM:<sender@example.com> INLINE-DSN',
      'RCPT TO:<postmaster@example.net> ORCPT=rfc822;postmaster@example.net',
      'RCPT TO:<fighter@example.net> ORCPT=rfc822;fighter@example.net',
      'RCPT TO:<lover@example.net> ORCPT=rfc822;lover@example.net',
      'RCPT TO:<old-user@example.net> ORCPT=rfc822;old-user@example.net',
      'DATA',
    ]);
    expect(p.messages[0]!.deferred).toEqual(['fighter@example.net', 'lover@example.net']);
    expect(res.perRecipient.get('postmaster@example.net')).toEqual({ code: 250, enhanced: '2.0.0', lines: ['data accepted by some users'], tags: { queueId: '01JSEED' } });
    expect(res.perRecipient.get('fighter@example.net')).toEqual({ code: 550, enhanced: '5.6.0', lines: ['<fighter@example.net> refuses the content'] });
    expect(res.perRecipient.get('lover@example.net')).toEqual({ code: 250, enhanced: '2.1.5', lines: ['<lover@example.net> accepts the content'] });
    expect(res.perRecipient.get('old-user@example.net')).toEqual({ code: 550, enhanced: '5.1.1', lines: ['this recipient no longer exists'] });
  });

  it('keeps the connection in step: the next delivery reuses it', async () => {
    const p = await peer(seed);
    const o = pool();
    await deliver(o, p.port, SEED);
    const second = await deliver(o, p.port, ['lover@example.net']);
    expect(short(second.perRecipient.get('lover@example.net'))).toBe('250 2.1.5 <lover@example.net> accepts the content');
    expect(p.connections).toBe(1);
  });

  it('one 250 standing for all (every deferred recipient accepts): everyone delivered with it', async () => {
    const p = await peer({ ...seed, verdict: undefined, sequence: { collapse: true, final: { code: 250, text: '2.0.0 all accepted' } } });
    const res = await deliver(pool(), p.port, SEED);
    expect(short(res.perRecipient.get('postmaster@example.net'))).toBe('250 2.0.0 all accepted');
    expect(short(res.perRecipient.get('fighter@example.net'))).toBe('250 2.0.0 all accepted');
    expect(short(res.perRecipient.get('lover@example.net'))).toBe('250 2.0.0 all accepted');
    expect(short(res.perRecipient.get('old-user@example.net'))).toBe('550 5.1.1 this recipient no longer exists');
  });

  it('one 550 standing for all (no 250 at RCPT, every deferred one refused alike)', async () => {
    const p = await peer({ ...seed, verdict: (a) => ({ code: 550, text: `5.6.0 <${a}> refuses the content` }), sequence: { collapse: true } });
    const res = await deliver(pool(), p.port, ['fighter@example.net', 'lover@example.net']);
    expect(short(res.perRecipient.get('fighter@example.net'))).toBe('550 5.6.0 refuses the content');
    expect(short(res.perRecipient.get('lover@example.net'))).toBe('550 5.6.0 refuses the content');
  });

  it('a 4xx line defers only its recipient', async () => {
    const p = await peer({ ...seed, verdict: (a) => (a.startsWith('lover') ? { code: 451, text: `4.7.1 <${a}> try again later` } : undefined) });
    const res = await deliver(pool(), p.port, SEED);
    expect(short(res.perRecipient.get('lover@example.net'))).toBe('451 4.7.1 <lover@example.net> try again later');
    expect(res.perRecipient.get('fighter@example.net')?.code).toBe(250);
    expect(res.perRecipient.get('postmaster@example.net')?.code).toBe(250);
  });

  it.each([
    ['short (a line missing)', 'short' as const],
    ['an extra line', 'extra' as const],
    ['lines out of order', 'swap' as const],
    ['a hang after the lines', 'hang' as const],
    ['a hang after 353', 'hang-after-353' as const],
  ])('%s: every recipient whose verdict was not read is a temporary failure, never a success', async (_n, brk) => {
    const p = await peer({ ...seed, verdict: undefined, sequence: { break: brk } });
    const res = await deliver(pool({ commandTimeout: 400 }), p.port, SEED);
    for (const a of ['postmaster@example.net', 'fighter@example.net', 'lover@example.net']) {
      const r = res.perRecipient.get(a)!;
      expect(r.code, `${a}: ${short(r)}`).toBeGreaterThanOrEqual(400);
      expect(r.code, `${a}: ${short(r)}`).toBeLessThan(500);
      expect(['4.5.0', '4.4.2']).toContain(r.enhanced);
    }
    expect(short(res.perRecipient.get('old-user@example.net'))).toBe('550 5.1.1 this recipient no longer exists');
  });

  it('a refusal line that was read stays a refusal when the sequence breaks later', async () => {
    const p = await peer({ ...seed, sequence: { break: 'hang' } });
    const res = await deliver(pool({ commandTimeout: 400 }), p.port, SEED);
    expect(short(res.perRecipient.get('fighter@example.net'))).toBe('550 5.6.0 <fighter@example.net> refuses the content');
    expect(res.perRecipient.get('lover@example.net')).toMatchObject({ code: 451, enhanced: '4.4.2' });
  });

  it('not asked of a hop that does not advertise it; a 352 from such a hop is a protocol error (451 4.5.0)', async () => {
    const p = await peer({ ...seed, extensions: [] });
    const res = await deliver(pool(), p.port, ['postmaster@example.net', 'lover@example.net']);
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com>');
    expect(res.verdicts).toBeUndefined();
    expect(res.perRecipient.get('lover@example.net')).toMatchObject({ code: 451, enhanced: '4.5.0' });
    expect(res.perRecipient.get('postmaster@example.net')?.code).toBe(250);
  });

  it('is preferred over PRDR when the hop offers both', async () => {
    const p = await peer({ ...seed, extensions: ['PRDR', 'INLINE-DSN'] });
    const res = await deliver(pool(), p.port, SEED);
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com> INLINE-DSN');
    expect(res.verdicts).toBe('INLINE-DSN');
    expect(res.perRecipient.get('fighter@example.net')?.code).toBe(550);
  });
});

/** Exim's PRDR, as A4b observed it: no enhanced codes, `PRDR R=<x>` lines. */
const exim: NextHopScript = {
  extensions: ['PRDR'],
  verdict: (a) => (a.startsWith('fighter') ? { code: 550, text: `PRDR R=<${a}> refusal` } : { code: 250, text: `PRDR R=<${a}> acceptance` }),
};
const THREE = ['postmaster@exim.test', 'fighter@exim.test', 'lover@exim.test'];

describe('PRDR', () => {
  it('MAIL … PRDR with two or more recipients; lines matched by position; each recipient its own outcome', async () => {
    const p = await peer(exim);
    const res = await deliver(pool(), p.port, THREE);
    expect(res.verdicts).toBe('PRDR');
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com> PRDR');
    expect(res.perRecipient.get('postmaster@exim.test')).toEqual({ code: 250, lines: ['PRDR R=<postmaster@exim.test> acceptance'] });
    expect(res.perRecipient.get('fighter@exim.test')).toEqual({ code: 550, lines: ['PRDR R=<fighter@exim.test> refusal'] });
    expect(res.perRecipient.get('lover@exim.test')).toEqual({ code: 250, lines: ['PRDR R=<lover@exim.test> acceptance'] });
  });

  it('lines that do not name the recipient are matched by position', async () => {
    const p = await peer({ ...exim, verdict: (a) => (a.startsWith('fighter') ? { code: 550, text: 'content refused by policy' } : { code: 250, text: 'fine' }) });
    const res = await deliver(pool(), p.port, THREE);
    expect(THREE.map((a) => short(res.perRecipient.get(a)))).toEqual(['250 fine', '550 content refused by policy', '250 fine']);
  });

  it('a recipient refused at RCPT gets no line; the others are itemised in RCPT order', async () => {
    const p = await peer({ ...exim, rcpt: (a) => (a.startsWith('postmaster') ? { code: 550, text: 'no such user' } : undefined) });
    const res = await deliver(pool(), p.port, [...THREE, 'fourth@exim.test']);
    expect(short(res.perRecipient.get('postmaster@exim.test'))).toBe('550 no such user');
    expect(short(res.perRecipient.get('fighter@exim.test'))).toBe('550 PRDR R=<fighter@exim.test> refusal');
    expect(short(res.perRecipient.get('lover@exim.test'))).toBe('250 PRDR R=<lover@exim.test> acceptance');
    expect(short(res.perRecipient.get('fourth@exim.test'))).toBe('250 PRDR R=<fourth@exim.test> acceptance');
  });

  it('a 4xx final reply defers the recipients whose line was 2xx; a 4xx/5xx line governs its own', async () => {
    const p = await peer({ ...exim, sequence: { final: { code: 451, text: 'temporary trouble after data' } } });
    const res = await deliver(pool(), p.port, THREE);
    expect(short(res.perRecipient.get('postmaster@exim.test'))).toBe('451 temporary trouble after data');
    expect(short(res.perRecipient.get('lover@exim.test'))).toBe('451 temporary trouble after data');
    expect(short(res.perRecipient.get('fighter@exim.test'))).toBe('550 PRDR R=<fighter@exim.test> refusal');
  });

  it('a 5xx final reply fails the recipients whose line was 2xx, with the final reply as diagnostic', async () => {
    const p = await peer({ ...exim, verdict: (a) => (a.startsWith('fighter') ? { code: 450, text: `PRDR R=<${a}> later` } : undefined), sequence: { final: { code: 554, text: 'message refused after all' } } });
    const res = await deliver(pool(), p.port, THREE);
    expect(short(res.perRecipient.get('postmaster@exim.test'))).toBe('554 message refused after all');
    expect(short(res.perRecipient.get('lover@exim.test'))).toBe('554 message refused after all');
    expect(short(res.perRecipient.get('fighter@exim.test'))).toBe('450 PRDR R=<fighter@exim.test> later');
  });

  it('all refused: the lines and the peer’s 550 final', async () => {
    const p = await peer({ ...exim, verdict: (a) => ({ code: 550, text: `PRDR R=<${a}> refusal` }) });
    const res = await deliver(pool(), p.port, THREE);
    for (const a of THREE) expect(short(res.perRecipient.get(a))).toBe(`550 PRDR R=<${a}> refusal`);
  });

  it.each(['short', 'extra', 'swap', 'hang'] as const)('a %s sequence: no recipient with a 2xx line is delivered', async (brk) => {
    const p = await peer({ ...exim, sequence: { break: brk } });
    const res = await deliver(pool({ commandTimeout: 400 }), p.port, THREE);
    for (const a of ['postmaster@exim.test', 'lover@exim.test']) {
      const r = res.perRecipient.get(a)!;
      expect(r.code, `${a}: ${short(r)}`).toBeGreaterThanOrEqual(400);
      expect(r.code, `${a}: ${short(r)}`).toBeLessThan(500);
    }
    // fighter's refusal counts only when its own line was read in its place.
    const fighter = res.perRecipient.get('fighter@exim.test')!;
    expect(fighter.code === 550 || (fighter.code >= 400 && fighter.code < 500)).toBe(true);
  });

  it('one recipient: no PRDR, one ordinary reply', async () => {
    const p = await peer(exim);
    const res = await deliver(pool(), p.port, ['lover@exim.test']);
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com>');
    expect(res.verdicts).toBeUndefined();
    expect(short(res.perRecipient.get('lover@exim.test'))).toBe('250 OK: message queued');
  });

  it('two recipients of which one is refused at RCPT: the hop answers once, and that reply counts', async () => {
    const p = await peer({ ...exim, rcpt: (a) => (a.startsWith('postmaster') ? { code: 550, text: 'no such user' } : undefined) });
    const res = await deliver(pool(), p.port, ['postmaster@exim.test', 'lover@exim.test']);
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com> PRDR');
    expect(short(res.perRecipient.get('lover@exim.test'))).toBe('250 OK: message queued');
  });

  it('not asked of a hop that does not advertise it', async () => {
    const p = await peer({ ...exim, extensions: [] });
    const res = await deliver(pool(), p.port, THREE);
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com>');
    expect(res.verdicts).toBeUndefined();
    for (const a of THREE) expect(res.perRecipient.get(a)?.code).toBe(250);
  });
});
