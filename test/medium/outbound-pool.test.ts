/**
 * The outbound stage against a real next hop (test/peers/next-hop.ts) on
 * 127.0.0.1, port 0: bytes on the wire, per-recipient DSN parameters, per-
 * recipient replies, failures as Replies, connection reuse, hosts in order,
 * opportunistic STARTTLS, SMTPUTF8 / A-labels, SIZE, and the log line.
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/model/envelope.ts';
import type { NextHop } from '../../src/model/delivery.ts';
import { newRecipient, type RecipientState } from '../../src/model/recipient.ts';
import { createLogger, type Logger } from '../../src/ops/log.ts';
import { freePort } from '../helpers/ports.ts';
import { outboundHarness } from '../helpers/outbound.ts';

const { peer, pool } = outboundHarness({ connectionsPerHop: 4 });

const hop = (...ports: number[]): NextHop => ({ key: `test:${ports.join(',')}`, hosts: ports.map((port) => ({ host: '127.0.0.1', port })) });

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'Q0001',
    mailFrom: 'sender@example.com',
    body: '7BIT',
    smtpUtf8: false,
    client: { address: '127.0.0.1', helo: 'client.test' },
    receivedAt: '2026-11-23T10:00:00.000Z',
    size: 0,
    ...over,
  };
}

const BODY = Buffer.from('Subject: test\r\nFrom: <sender@example.com>\r\n\r\nhello\r\n', 'utf8');

function request(port: number | number[], recipients: RecipientState[], over: { envelope?: Partial<Envelope>; body?: Buffer } = {}) {
  const ports = Array.isArray(port) ? port : [port];
  return { hop: hop(...ports), envelope: envelope(over.envelope), recipients, body: over.body ?? BODY };
}

describe('the message on the wire', () => {
  it('delivers the body byte-identical (dots, 8-bit bytes, long lines, binary-ish content)', async () => {
    const p = await peer();
    const body = Buffer.concat([
      Buffer.from('Subject: bytes\r\nContent-Transfer-Encoding: 8bit\r\n\r\n', 'latin1'),
      Buffer.from('.leading dot\r\n..two dots\r\n.\r\n', 'latin1'),
      Buffer.from([0xc3, 0xa9, 0xe2, 0x82, 0xac, 0x80, 0xff, 0x0d, 0x0a]),
      Buffer.from('x'.repeat(5000) + '\r\n', 'latin1'),
      Buffer.from(Array.from({ length: 2000 }, (_, i) => `line ${i} ${'.'.repeat(i % 3)}\r\n`).join(''), 'latin1'),
    ]);
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net')], { body }));
    expect(res.perRecipient.get('a@example.net')?.code).toBe(250);
    expect(p.messages).toHaveLength(1);
    expect(p.messages[0]!.body.equals(body)).toBe(true);
  });

  it('passes each recipient its own NOTIFY and ORCPT verbatim, and RET/ENVID on MAIL, to a DSN hop', async () => {
    const p = await peer({ dsn: true });
    const recipients = [
      newRecipient('a+b@example.net', { notify: ['SUCCESS', 'FAILURE'], orcpt: { addrType: 'rfc822', address: { xtext: 'a+2Bb@x', value: 'a+b@x' } } }),
      newRecipient('c@example.net', { notify: 'NEVER' }),
      newRecipient('d=e@example.net', { notify: ['DELAY'], orcpt: { addrType: 'RFC822', address: { xtext: 'Mixed.Case@Example.ORG', value: 'Mixed.Case@Example.ORG' } } }),
      newRecipient('f@example.net'),
    ];
    const res = await pool().deliver(request(p.port, recipients, { envelope: { ret: 'HDRS', envid: { xtext: 'QQ+2B314159+3Dx', value: 'QQ+314159=x' } } }));
    expect(res.dsnPassedOn).toBe(true);
    expect(res.ehlo).toContain('DSN');
    const m = p.messages[0]!;
    expect(m.mailLine).toBe('MAIL FROM:<sender@example.com> RET=HDRS ENVID=QQ+2B314159+3Dx');
    expect(m.rcptLines).toEqual([
      'RCPT TO:<a+b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x',
      'RCPT TO:<c@example.net> NOTIFY=NEVER ORCPT=rfc822;c@example.net',
      'RCPT TO:<d=e@example.net> NOTIFY=DELAY ORCPT=RFC822;Mixed.Case@Example.ORG',
      'RCPT TO:<f@example.net> ORCPT=rfc822;f@example.net',
    ]);
  });

  it('adds ORCPT=rfc822;<xtext of the address> when none arrived', async () => {
    const p = await peer();
    await pool().deliver(request(p.port, [newRecipient('user+tag=1@example.net', { notify: ['FAILURE'] })]));
    expect(p.messages[0]!.rcptLines).toEqual(['RCPT TO:<user+tag=1@example.net> NOTIFY=FAILURE ORCPT=rfc822;user+2Btag+3D1@example.net']);
  });

  it('sends no DSN parameters at all to a hop without DSN', async () => {
    const p = await peer({ dsn: false });
    const recipients = [
      newRecipient('a@example.net', { notify: ['SUCCESS'], orcpt: { addrType: 'rfc822', address: { xtext: 'a@x', value: 'a@x' } } }),
      newRecipient('b@example.net', { notify: 'NEVER' }),
    ];
    const res = await pool().deliver(request(p.port, recipients, { envelope: { ret: 'FULL', envid: { xtext: 'E1', value: 'E1' } } }));
    expect(res.dsnPassedOn).toBe(false);
    expect(res.ehlo).not.toContain('DSN');
    const m = p.messages[0]!;
    expect(m.mailLine).toBe('MAIL FROM:<sender@example.com>');
    expect(m.rcptLines).toEqual(['RCPT TO:<a@example.net>', 'RCPT TO:<b@example.net>']);
  });

  it('sends <> as <>', async () => {
    const p = await peer();
    await pool().deliver(request(p.port, [newRecipient('a@example.net')], { envelope: { mailFrom: '' } }));
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<>');
  });

  it('declares BODY=8BITMIME and SMTPUTF8 only where the hop offers them', async () => {
    const rich = await peer();
    const plain = await peer({ eightBitMime: false, smtpUtf8: false });
    const env = { envelope: { body: '8BITMIME' as const, smtpUtf8: true } };
    const o = pool();
    await o.deliver(request(rich.port, [newRecipient('a@example.net')], env));
    await o.deliver(request(plain.port, [newRecipient('a@example.net')], env));
    expect(rich.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com> BODY=8BITMIME SMTPUTF8');
    expect(plain.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com>');
  });

  it('to a hop without SMTPUTF8: A-labels domains, refuses a non-ASCII local part with 553 5.6.7', async () => {
    const p = await peer({ smtpUtf8: false });
    const res = await pool().deliver(
      request(p.port, [newRecipient('user@bücher.example'), newRecipient('jörg@example.net')], { envelope: { mailFrom: 'sender@münchen.example', smtpUtf8: true } }),
    );
    expect(res.perRecipient.get('user@bücher.example')?.code).toBe(250);
    expect(res.perRecipient.get('jörg@example.net')).toMatchObject({ code: 553, enhanced: '5.6.7' });
    const m = p.messages[0]!;
    expect(m.mailLine).toBe('MAIL FROM:<sender@xn--mnchen-3ya.example>');
    expect(m.rcptLines).toEqual(['RCPT TO:<user@xn--bcher-kva.example> ORCPT=rfc822;user@b+C3+BCcher.example']);
  });

  it('to a hop with SMTPUTF8: sends UTF-8 addresses as they are, with SMTPUTF8 on MAIL', async () => {
    const p = await peer();
    const res = await pool().deliver(request(p.port, [newRecipient('jörg@bücher.example')], { envelope: { smtpUtf8: true } }));
    expect(res.perRecipient.get('jörg@bücher.example')?.code).toBe(250);
    expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<sender@example.com> SMTPUTF8');
    expect(p.messages[0]!.rcptLines[0]).toMatch(/^RCPT TO:<jörg@bücher\.example> /);
  });

  it('declares SIZE when advertised, and refuses a message over the hop limit locally (552 5.3.4)', async () => {
    const p = await peer({ size: 10_000 });
    const o = pool();
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(p.messages[0]!.mailLine).toBe(`MAIL FROM:<sender@example.com> SIZE=${BODY.length}`);
    const big = await o.deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('b@example.net')], { body: Buffer.alloc(20_000, 0x41) }));
    expect(big.perRecipient.get('a@example.net')).toMatchObject({ code: 552, enhanced: '5.3.4' });
    expect(big.perRecipient.get('b@example.net')).toMatchObject({ code: 552, enhanced: '5.3.4' });
    expect(p.messages).toHaveLength(1);
  });
});

describe('replies per recipient', () => {
  it('gives a refused recipient its RCPT reply and an accepted one the DATA reply', async () => {
    const p = await peer({
      rcpt: (a) => (a.startsWith('old') ? { code: 550, text: '5.1.1 no such user' } : undefined),
      data: () => ({ code: 250, text: '2.0.0 [QUEUEID ABC123] queued as ABC123' }),
    });
    const res = await pool().deliver(request(p.port, [newRecipient('old@example.net'), newRecipient('new@example.net')]));
    expect(res.perRecipient.get('old@example.net')).toEqual({ code: 550, enhanced: '5.1.1', lines: ['no such user'] });
    expect(res.perRecipient.get('new@example.net')).toEqual({ code: 250, enhanced: '2.0.0', lines: ['queued as ABC123'], tags: { queueId: 'ABC123' } });
    expect(p.messages[0]!.rcptTo).toEqual(['new@example.net']);
    expect(p.messages[0]!.rcptLines).toHaveLength(2);
  });

  it('gives every accepted recipient a DATA 451, and keeps RCPT refusals', async () => {
    const p = await peer({
      rcpt: (a) => (a.startsWith('busy') ? { code: 452, text: '4.2.2 mailbox full' } : undefined),
      data: () => ({ code: 451, text: '4.3.0 temporary local problem' }),
    });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('busy@example.net'), newRecipient('b@example.net')]));
    expect(res.perRecipient.get('a@example.net')).toEqual({ code: 451, enhanced: '4.3.0', lines: ['temporary local problem'] });
    expect(res.perRecipient.get('b@example.net')).toEqual({ code: 451, enhanced: '4.3.0', lines: ['temporary local problem'] });
    expect(res.perRecipient.get('busy@example.net')).toEqual({ code: 452, enhanced: '4.2.2', lines: ['mailbox full'] });
  });

  it('keeps a multi-line reply whole, with its enhanced code', async () => {
    const p = await peer({
      rcpt: () => ({ code: 550, text: '5.7.1 first line of the policy\n5.7.1 second line\n5.7.1 see https://example.net/policy' }),
    });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('b@example.net')]));
    const expected = { code: 550, enhanced: '5.7.1', lines: ['first line of the policy', 'second line', 'see https://example.net/policy'] };
    expect(res.perRecipient.get('a@example.net')).toEqual(expected);
    expect(res.perRecipient.get('b@example.net')).toEqual(expected);
    expect(p.messages).toHaveLength(0);
  });

  it('keeps a reply without an enhanced code as it is', async () => {
    const p = await peer({ data: () => ({ code: 554, text: 'rejected for content' }) });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(res.perRecipient.get('a@example.net')).toEqual({ code: 554, lines: ['rejected for content'] });
  });

  it('a 421 in the middle ends the session: that reply for every recipient not refused', async () => {
    const p = await peer({ rcpt: (a) => (a.startsWith('x') ? { code: 421, text: '4.3.2 shutting down' } : undefined) });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('x@example.net'), newRecipient('b@example.net')]));
    for (const a of ['a@example.net', 'x@example.net', 'b@example.net']) {
      expect(res.perRecipient.get(a)).toMatchObject({ code: 421, enhanced: '4.3.2' });
    }
    expect(p.messages).toHaveLength(0);
  });
});

describe('session-wide failures', () => {
  it('MAIL refused → that reply for everyone', async () => {
    const p = await peer({ mail: () => ({ code: 553, text: '5.7.1 sender not allowed' }) });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('b@example.net')]));
    expect(res.perRecipient.get('a@example.net')).toEqual({ code: 553, enhanced: '5.7.1', lines: ['sender not allowed'] });
    expect(res.perRecipient.get('b@example.net')).toEqual({ code: 553, enhanced: '5.7.1', lines: ['sender not allowed'] });
    expect(p.messages).toHaveLength(0);
  });

  it('a connection lost mid-transaction on a fresh connection → 451 4.4.2, not retried', async () => {
    const p = await peer({ mail: () => 'drop' });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(res.perRecipient.get('a@example.net')).toMatchObject({ code: 451, enhanced: '4.4.2' });
    expect(p.connections).toBe(1);
  });

  it('connection refused → 451 4.4.1 for everyone', async () => {
    const port = await freePort();
    const res = await pool().deliver(request(port, [newRecipient('a@example.net'), newRecipient('b@example.net')]));
    for (const a of ['a@example.net', 'b@example.net']) {
      const r = res.perRecipient.get(a)!;
      expect(r).toMatchObject({ code: 451, enhanced: '4.4.1' });
      expect(r.lines.join(' ')).toContain('connection refused');
    }
    expect(res.remoteMta).toBeUndefined();
    expect(res.ehlo).toEqual([]);
    expect(res.dsnPassedOn).toBe(false);
  });

  it('a greeting 554 → that reply for everyone', async () => {
    const p = await peer({ connect: () => ({ code: 554, text: '5.7.1 go away' }) });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('b@example.net')]));
    expect(res.perRecipient.get('a@example.net')).toEqual({ code: 554, enhanced: '5.7.1', lines: ['go away'] });
    expect(res.perRecipient.get('b@example.net')).toEqual({ code: 554, enhanced: '5.7.1', lines: ['go away'] });
    expect(res.remoteMta).toBe('127.0.0.1');
  });

  it('no reply in time → 451 4.4.2 for everyone', async () => {
    const p = await peer({ delayMs: 1500 });
    const res = await pool({ commandTimeout: 300 }).deliver(request(p.port, [newRecipient('a@example.net'), newRecipient('b@example.net')]));
    for (const a of ['a@example.net', 'b@example.net']) expect(res.perRecipient.get(a)).toMatchObject({ code: 451, enhanced: '4.4.2' });
  });

  it('a refusal at RCPT survives a later timeout', async () => {
    const p = await peer({ rcpt: (a) => (a.startsWith('old') ? { code: 550, text: '5.1.1 gone' } : undefined), delayMs: 1500 });
    const res = await pool({ commandTimeout: 300 }).deliver(request(p.port, [newRecipient('old@example.net'), newRecipient('a@example.net')]));
    expect(res.perRecipient.get('old@example.net')).toMatchObject({ code: 550, enhanced: '5.1.1' });
    expect(res.perRecipient.get('a@example.net')).toMatchObject({ code: 451, enhanced: '4.4.2' });
  });

  it('tries hop.hosts in order when connecting fails', async () => {
    const closed = await freePort();
    const p = await peer();
    const res = await pool().deliver(request([closed, p.port], [newRecipient('a@example.net')]));
    expect(res.perRecipient.get('a@example.net')?.code).toBe(250);
    expect(res.remoteMta).toBe('next-hop.test');
    expect(p.messages).toHaveLength(1);
  });
});

describe('connections', () => {
  it('reuses one connection for sequential deliveries to the same hop', async () => {
    const p = await peer();
    const o = pool();
    for (const a of ['a@example.net', 'b@example.net', 'c@example.net']) {
      const res = await o.deliver(request(p.port, [newRecipient(a)]));
      expect(res.perRecipient.get(a)?.code).toBe(250);
    }
    expect(p.messages.map((m) => m.rcptTo[0])).toEqual(['a@example.net', 'b@example.net', 'c@example.net']);
    expect(p.connections).toBe(1);
    // A transaction that ran to its final reply leaves the session clean: the next MAIL follows at once.
    expect(p.commands.filter((c) => /^(MAIL|RSET)/.test(c)).map((c) => c.split(/[ :]/)[0])).toEqual(['MAIL', 'MAIL', 'MAIL']);
  });

  it('reuses the connection after a failed transaction too, with RSET first', async () => {
    const p = await peer({ rcpt: (a) => (a.startsWith('old') ? { code: 550, text: '5.1.1 gone' } : undefined) });
    const o = pool();
    await o.deliver(request(p.port, [newRecipient('old@example.net')]));
    const res = await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(res.perRecipient.get('a@example.net')?.code).toBe(250);
    expect(p.connections).toBe(1);
    expect(p.commands.filter((c) => /^(MAIL|RSET)/.test(c)).map((c) => c.split(/[ :]/)[0])).toEqual(['MAIL', 'RSET', 'MAIL']);
  });

  it('replaces a parked connection that died, transparently', async () => {
    const p = await peer();
    const o = pool();
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    p.dropConnections();
    await new Promise((r) => setTimeout(r, 50));
    const res = await o.deliver(request(p.port, [newRecipient('b@example.net')]));
    expect(res.perRecipient.get('b@example.net')?.code).toBe(250);
    expect(p.connections).toBe(2);
  });

  it('runs a transaction again on a new connection when the reused one is lost before any reply', async () => {
    const p = await peer();
    const o = pool();
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    let dropped = false;
    p.setScript({ mail: () => (dropped ? undefined : ((dropped = true), 'drop')) });
    const res = await o.deliver(request(p.port, [newRecipient('b@example.net')]));
    expect(res.perRecipient.get('b@example.net')?.code).toBe(250);
    expect(p.messages.map((m) => m.rcptTo[0])).toEqual(['a@example.net', 'b@example.net']);
    expect(p.connections).toBe(2);
  });

  it('closes an idle connection after idleReuse', async () => {
    const p = await peer();
    const o = pool({ idleReuse: 100 });
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    await new Promise((r) => setTimeout(r, 400));
    await o.deliver(request(p.port, [newRecipient('b@example.net')]));
    expect(p.connections).toBe(2);
  });

  it('opens at most connectionsPerHop connections, and queues the rest', async () => {
    const p = await peer({ delayMs: 100 });
    const o = pool({ connectionsPerHop: 2 });
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => o.deliver(request(p.port, [newRecipient(`r${i}@example.net`)]))));
    for (const [i, r] of results.entries()) expect(r.perRecipient.get(`r${i}@example.net`)?.code).toBe(250);
    expect(p.messages).toHaveLength(6);
    expect(p.connections).toBe(2);
  });

  it('uses STARTTLS when offered', async () => {
    const p = await peer({ starttls: true });
    const res = await pool().deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(res.perRecipient.get('a@example.net')?.code).toBe(250);
    expect(p.messages[0]!.secure).toBe(true);
  });

  it('continues in plaintext when the TLS upgrade fails (certificate not trusted, tlsVerify)', async () => {
    const p = await peer({ starttls: true });
    const res = await pool({ tlsVerify: true }).deliver(request(p.port, [newRecipient('a@example.net')]));
    expect(res.perRecipient.get('a@example.net')?.code).toBe(250);
    expect(p.messages[0]!.secure).toBe(false);
  });

  it('close() QUITs idle connections; deliver() after close() rejects', async () => {
    const p = await peer();
    const o = pool();
    await o.deliver(request(p.port, [newRecipient('a@example.net')]));
    await o.close();
    await expect(o.deliver(request(p.port, [newRecipient('b@example.net')]))).rejects.toThrow(/closed/);
  });
});

describe('logging', () => {
  it('writes one line per delivery attempt with hop, host, recipients and codes, ms', async () => {
    const p = await peer({ rcpt: (a) => (a.startsWith('old') ? { code: 550, text: '5.1.1 gone' } : undefined) });
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        cb();
      },
    });
    const log: Logger = createLogger('info', sink);
    await pool({ log }).deliver(request(p.port, [newRecipient('old@example.net'), newRecipient('a@example.net')]));
    const attempts = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'delivery attempt');
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({
      hop: `test:${p.port}`,
      host: `127.0.0.1:${p.port}`,
      queueId: 'Q0001',
      recipients: [
        { to: 'old@example.net', code: 550, enhanced: '5.1.1' },
        { to: 'a@example.net', code: 250 },
      ],
    });
    expect(typeof attempts[0]!.ms).toBe('number');
  });
});
