/**
 * Guards for the nodemailer internals src/outbound/client.ts overrides or reads
 * (style rule 6): one test per internal, each failing loudly — with the name of
 * the internal — if nodemailer 10.6.0's shape moves under us. Run against the
 * real next hop, with and without PIPELINING (nodemailer reaches `_sendRcpt`
 * from `_setEnvelope` when pipelining and from `_advanceEnvelope` when not).
 */
import { afterEach, describe, expect, it } from 'vitest';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import nodemailerPackage from 'nodemailer/package.json' with { type: 'json' };
import { RelayClient, appendMailParams, missingInternals, type ClientOptions } from '../../src/outbound/client.ts';
import { startNextHop, type NextHopPeer, type NextHopScript } from '../peers/next-hop.ts';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function peer(script?: NextHopScript): Promise<NextHopPeer> {
  const p = await startNextHop(script);
  cleanups.push(() => p.close());
  return p;
}

async function client(port: number): Promise<RelayClient> {
  const opts: ClientOptions = { host: '127.0.0.1', port, name: 'relay.test', connectTimeout: 2000, greetingTimeout: 2000, commandTimeout: 2000, tls: 'off', tlsVerify: false };
  const c = new RelayClient(opts);
  cleanups.push(() => c.quitSession());
  await c.open();
  return c;
}

const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;

describe('nodemailer internals used by outbound/client.ts', () => {
  it('nodemailer is the pinned version the subclass was written against', () => {
    expect(nodemailerPackage.version, 'client.ts overrides nodemailer 10.6.0 internals: re-check them before upgrading').toBe('10.6.0');
  });

  it('every internal is present (missingInternals)', () => {
    expect(missingInternals()).toEqual([]);
    expect(Object.getPrototypeOf(RelayClient.prototype)).toBe(SMTPConnection.prototype);
  });

  describe.each([
    ['pipelined', true],
    ['one command at a time', false],
  ])('%s', (_name, pipelining) => {
    it('_sendCommand: nodemailer still writes the MAIL line through it, so our MAIL parameters go out', async () => {
      expect(typeof proto._sendCommand, '_sendCommand is gone from SMTPConnection.prototype').toBe('function');
      const p = await peer({ pipelining });
      const c = await client(p.port);
      const r = await c.transaction({ from: 's@example.com', mailParams: ['RET=HDRS', 'ENVID=QQ+2B1'], recipients: [{ address: 'a@example.net', params: [] }], body: Buffer.from('x\r\n') });
      expect(r.failure, 'MAIL FROM did not pass through _sendCommand').toBeUndefined();
      expect(p.messages[0]!.mailLine).toBe('MAIL FROM:<s@example.com> RET=HDRS ENVID=QQ+2B1');
    });

    it('_sendRcpt: nodemailer still sends every RCPT through it, so each recipient gets its own parameters and its reply is recorded', async () => {
      expect(typeof proto._sendRcpt, '_sendRcpt is gone from SMTPConnection.prototype').toBe('function');
      const p = await peer({ pipelining, rcpt: (a) => (a.startsWith('b') ? { code: 550, text: '5.1.1 no' } : undefined) });
      const c = await client(p.port);
      const r = await c.transaction({
        from: 's@example.com',
        mailParams: [],
        recipients: [
          { address: 'a@example.net', params: ['NOTIFY=SUCCESS', 'ORCPT=rfc822;a@x'] },
          { address: 'b@example.net', params: ['NOTIFY=NEVER'] },
          { address: 'c@example.net', params: [] },
        ],
        body: Buffer.from('x\r\n'),
      });
      expect(p.messages[0]!.rcptLines).toEqual(['RCPT TO:<a@example.net> NOTIFY=SUCCESS ORCPT=rfc822;a@x', 'RCPT TO:<b@example.net> NOTIFY=NEVER', 'RCPT TO:<c@example.net>']);
      expect([...r.rcpt.keys()], 'RCPT replies not recorded: _sendRcpt bypassed?').toEqual(['a@example.net', 'b@example.net', 'c@example.net']);
      expect(r.rcpt.get('b@example.net')).toBe('550 5.1.1 no');
      expect(r.data).toMatch(/^250 /);
    });
  });

  it('_responseActions / _recipientQueue / _actionRCPT: the queue our _sendRcpt feeds is the one nodemailer reads', async () => {
    expect(typeof proto._actionRCPT, '_actionRCPT is gone from SMTPConnection.prototype').toBe('function');
    const p = await peer({ rcpt: (a) => (a.startsWith('b') ? { code: 550, text: '5.1.1 no' } : undefined) });
    const c = await client(p.port);
    expect(Array.isArray(c._responseActions), '_responseActions is not an array').toBe(true);
    expect(Array.isArray(c._recipientQueue), '_recipientQueue is not an array').toBe(true);
    const r = await c.transaction({ from: '', mailParams: [], recipients: [{ address: 'a@example.net', params: [] }, { address: 'b@example.net', params: [] }], body: Buffer.from('x\r\n') });
    // nodemailer's own bookkeeping (fed by _actionRCPT) decided who got the data.
    expect(p.messages[0]!.rcptTo).toEqual(['a@example.net']);
    expect(r.failure).toBeUndefined();
    expect(c._recipientQueue).toEqual([]);
    expect(c._responseActions).toEqual([]);
  });

  it('_ehloLines: the raw EHLO keyword lines are still kept there', async () => {
    const p = await peer({ dsn: true, size: 1234 });
    const c = await client(p.port);
    expect(c._ehloLines, '_ehloLines is no longer set after EHLO').toEqual(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'DSN', 'SIZE 1234']);
    expect(c.ehloLines).toEqual(c._ehloLines);
  });

  it('the stock _getDsnRcptToArgs stays unused: no envelope-wide DSN parameters leak onto RCPT', async () => {
    expect(typeof proto._getDsnRcptToArgs).toBe('function');
    const p = await peer();
    const c = await client(p.port);
    await c.transaction({ from: 's@example.com', mailParams: [], recipients: [{ address: 'a@example.net', params: [] }], body: Buffer.from('x\r\n') });
    expect(p.messages[0]!.rcptLines).toEqual(['RCPT TO:<a@example.net>']);
  });
});

describe('appendMailParams', () => {
  it.each([
    ['MAIL FROM:<a@b>', ['RET=FULL'], 'MAIL FROM:<a@b> RET=FULL'],
    ['MAIL FROM:<>', [], 'MAIL FROM:<>'],
    ['MAIL FROM:<a@b> SMTPUTF8', ['BODY=8BITMIME', 'SMTPUTF8', 'SIZE=5'], 'MAIL FROM:<a@b> SMTPUTF8 BODY=8BITMIME SIZE=5'],
    ['MAIL FROM:<a@b> BODY=8BITMIME', ['BODY=8BITMIME'], 'MAIL FROM:<a@b> BODY=8BITMIME'],
  ])('%s + %j → %s', (line, params, expected) => {
    expect(appendMailParams(line, params)).toBe(expected);
  });
});
