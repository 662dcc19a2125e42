/**
 * Guards for the nodemailer internals src/outbound/client.ts overrides or reads
 * (style rule 6): one test per internal, each failing loudly — with the name of
 * the internal — if nodemailer 10.6.0's shape moves under us. Run against the
 * real next hop, with and without PIPELINING (nodemailer reaches `_sendRcpt`
 * from `_setEnvelope` when pipelining and from `_advanceEnvelope` when not), and
 * against a raw-socket server where the bytes and their batching matter (which
 * commands arrive in one write, what was answered before each arrived).
 */
import net from 'node:net';
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

async function client(port: number, commandTimeout = 2000): Promise<RelayClient> {
  const opts: ClientOptions = { host: '127.0.0.1', port, name: 'relay.test', connectTimeout: 2000, greetingTimeout: 2000, commandTimeout, tls: 'off', tlsVerify: false };
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

/** One command line as the raw server saw it. */
interface RawCommand {
  readonly line: string;
  /** Which TCP chunk (1-based, per connection) it arrived in: same number = same write. */
  readonly chunk: number;
  /** How many replies the server had written before that chunk arrived. */
  readonly answeredBefore: number;
}

interface RawScript {
  /** EHLO keywords (default PIPELINING). */
  readonly ehlo?: readonly string[];
  /** The reply to a RCPT line, CRLF-terminated (default `250 2.1.5 ok`). */
  readonly rcpt?: (line: string) => string;
  /** Raw writes after the final dot, in order, 20 ms apart (default `250 2.0.0 queued`). */
  readonly afterDot?: () => readonly string[];
}

/** A hand-written SMTP server: every byte it answers is the test's, and it records how commands arrived. */
async function rawServer(script: RawScript = {}): Promise<{ port: number; commands: RawCommand[] }> {
  const commands: RawCommand[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    let inData = false;
    let chunk = 0;
    let replies = 0;
    const reply = (text: string): void => {
      replies++;
      sock.write(text);
    };
    reply('220 raw.test ESMTP\r\n');
    sock.on('data', (d: Buffer) => {
      chunk++;
      const answeredBefore = replies;
      buf += d.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          buf = buf.slice(end + 5);
          inData = false;
          const writes = script.afterDot?.() ?? ['250 2.0.0 queued\r\n'];
          writes.forEach((w, i) => setTimeout(() => reply(w), 20 * i));
          continue;
        }
        const eol = buf.indexOf('\r\n');
        if (eol < 0) return;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        commands.push({ line, chunk, answeredBefore });
        const verb = line.split(' ')[0]!.toUpperCase();
        if (verb === 'EHLO') {
          const kw = script.ehlo ?? ['PIPELINING'];
          reply(['250-raw.test hello', ...kw].map((k, i, a) => `250${i === a.length - 1 ? ' ' : '-'}${k.replace(/^250-/, '')}`).join('\r\n') + '\r\n');
        } else if (verb === 'MAIL') reply('250 2.1.0 ok\r\n');
        else if (verb === 'RCPT') reply(script.rcpt?.(line) ?? '250 2.1.5 ok\r\n');
        else if (verb === 'DATA') {
          inData = true;
          reply('354 go ahead\r\n');
        } else if (verb === 'RSET') reply('250 2.0.0 reset\r\n');
        else if (verb === 'QUIT') {
          reply('221 2.0.0 bye\r\n');
          sock.end();
        } else reply('500 5.5.1 unknown\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const addr = server.address();
  return { port: typeof addr === 'object' && addr ? addr.port : 0, commands };
}

const line = (cmds: readonly RawCommand[], prefix: string): RawCommand => {
  const c = cmds.find((x) => x.line.startsWith(prefix));
  if (!c) throw new Error(`no command starting with ${prefix}: ${cmds.map((x) => x.line).join(' | ')}`);
  return c;
};

describe('nodemailer internals used for CONNEG, INLINE-DSN and PRDR', () => {
  it('_createSendStream: the one reply action it queues after the dot is replaced by our 353-sequence reader (sequence in one write)', async () => {
    expect(typeof proto._createSendStream, '_createSendStream is gone from SMTPConnection.prototype').toBe('function');
    expect(typeof proto._actionSMTPStream, '_actionSMTPStream is gone: the popped stock action would not answer the final reply').toBe('function');
    const raw = await rawServer({
      ehlo: ['PIPELINING', 'INLINE-DSN'],
      rcpt: (l) => (l.includes('<b@x.test>') ? '352 wait for confirmation\r\n' : '250 2.1.5 ok\r\n'),
      afterDot: () => ['353 data looks okay\r\n250 2.1.5 <b@x.test> accepts the content\r\n250 2.0.0 [QUEUEID Q1] data accepted\r\n'],
    });
    const c = await client(raw.port);
    const r = await c.transaction({ from: 's@x.test', mailParams: ['INLINE-DSN'], recipients: [{ address: 'a@x.test', params: [] }, { address: 'b@x.test', params: [] }], body: Buffer.from('x\r\n'), verdicts: 'INLINE-DSN' });
    expect(r.failure, '353 failed the transaction: _createSendStream override not in effect?').toBeUndefined();
    expect(r.afterData).toMatchObject({ mode: 'INLINE-DSN', sequence: true, deferred: ['b@x.test'], itemised: ['b@x.test'], final: '250 2.0.0 [QUEUEID Q1] data accepted' });
    expect(r.afterData!.lines.get('b@x.test')).toBe('250 2.1.5 <b@x.test> accepts the content');
    expect(r.data, 'the final reply did not reach nodemailer\'s own action (_actionSMTPStream)').toBe('250 2.0.0 [QUEUEID Q1] data accepted');
    expect(c._responseActions).toEqual([]);
    expect(c.usable).toBe(true);
  });

  it('_actionRCPT: a 352 handed to it as an acceptance puts the recipient in nodemailer\'s accepted list (DATA is sent for it alone)', async () => {
    expect(typeof proto._actionRCPT).toBe('function');
    const raw = await rawServer({ ehlo: ['INLINE-DSN'], rcpt: () => '352 wait\r\n', afterDot: () => ['353 wait\r\n', '550 5.6.0 <b@x.test> refuses the content\r\n', '250 2.0.0 done\r\n'] });
    const c = await client(raw.port);
    const r = await c.transaction({ from: 's@x.test', mailParams: ['INLINE-DSN'], recipients: [{ address: 'b@x.test', params: [] }], body: Buffer.from('x\r\n'), verdicts: 'INLINE-DSN' });
    expect(r.failure, 'nodemailer refused to send DATA: 352 not taken as an acceptance').toBeUndefined();
    expect(raw.commands.map((x) => x.line)).toContain('DATA');
    expect(r.afterData!.lines.get('b@x.test')).toBe('550 5.6.0 <b@x.test> refuses the content');
  });

  it('the sequence is read however its bytes are split (mid-line, one line per write)', async () => {
    const raw = await rawServer({
      ehlo: ['PIPELINING', 'PRDR'],
      afterDot: () => ['353 PRDR content analysis beginning\r\n250 PRDR R=<a@x.test> acc', 'eptance\r\n550 PRDR R=<b@x.test> refusal\r\n', '250 OK id=1\r', '\n'],
    });
    const c = await client(raw.port);
    const r = await c.transaction({ from: 's@x.test', mailParams: ['PRDR'], recipients: [{ address: 'a@x.test', params: [] }, { address: 'b@x.test', params: [] }], body: Buffer.from('x\r\n'), verdicts: 'PRDR' });
    expect(r.failure).toBeUndefined();
    expect([...r.afterData!.lines]).toEqual([
      ['a@x.test', '250 PRDR R=<a@x.test> acceptance'],
      ['b@x.test', '550 PRDR R=<b@x.test> refusal'],
    ]);
    expect(r.afterData!.final).toBe('250 OK id=1');
  });

  it('_supportedExtensions / _envelope.rcptQueue: with a CONNEG query, the RCPTs go out in one write after MAIL, and DATA only after their replies', async () => {
    const raw = await rawServer({ ehlo: ['PIPELINING', 'CONNEG'] });
    const c = await client(raw.port);
    expect(c._supportedExtensions, '_supportedExtensions no longer lists PIPELINING').toContain('PIPELINING');
    const r = await c.transaction({
      from: 's@x.test',
      mailParams: [],
      recipients: [
        { address: 'a@x.test', params: ['CONNEG'] },
        { address: 'b@x.test', params: [] },
        { address: 'c@x.test', params: ['CONNEG'] },
      ],
      body: Buffer.from('x\r\n'),
    });
    expect(r.failure).toBeUndefined();
    const cmds = raw.commands;
    const mail = line(cmds, 'MAIL');
    const [a, b, cc] = ['RCPT TO:<a', 'RCPT TO:<b', 'RCPT TO:<c'].map((p) => line(cmds, p));
    const data = line(cmds, 'DATA');
    expect(a!.chunk, 'RCPT went out with MAIL: PIPELINING was not hidden from _setEnvelope').toBeGreaterThan(mail.chunk);
    expect(new Set([a!.chunk, b!.chunk, cc!.chunk]).size, 'RCPTs not sent in one write: _envelope.rcptQueue not drained').toBe(1);
    expect(data.chunk).toBeGreaterThan(cc!.chunk);
    expect(data.answeredBefore - mail.answeredBefore, 'DATA did not wait for the MAIL and RCPT replies').toBe(4);
    expect(c._supportedExtensions, 'PIPELINING was not given back after the transaction').toContain('PIPELINING');
    // The next transaction without a query is pipelined again: MAIL, RCPT and DATA in one write.
    await c.resetSession();
    const before = cmds.length;
    await c.transaction({ from: 's@x.test', mailParams: [], recipients: [{ address: 'd@x.test', params: [] }], body: Buffer.from('x\r\n') });
    const next = cmds.slice(before);
    expect(new Set([line(next, 'MAIL').chunk, line(next, 'RCPT').chunk, line(next, 'DATA').chunk]).size).toBe(1);
  });

  it('_recipientQueue: a 504 to a RCPT with CONNEG is sent again without it, before DATA, and nodemailer pairs the replies right', async () => {
    const raw = await rawServer({
      ehlo: ['PIPELINING', 'CONNEG'],
      rcpt: (l) => (l.includes('<a@x.test>') && l.endsWith(' CONNEG') ? '504 5.5.4 CONNEG not supported\r\n' : l.includes('<b@x.test>') ? '550 5.1.1 no such user\r\n' : '250 2.1.5 ok\r\n'),
    });
    const c = await client(raw.port);
    const r = await c.transaction({
      from: 's@x.test',
      mailParams: [],
      recipients: [
        { address: 'a@x.test', params: ['NOTIFY=NEVER', 'CONNEG'] },
        { address: 'b@x.test', params: [] },
      ],
      body: Buffer.from('x\r\n'),
    });
    expect(raw.commands.map((x) => x.line).filter((l) => /^(RCPT|DATA)/.test(l))).toEqual(['RCPT TO:<a@x.test> NOTIFY=NEVER CONNEG', 'RCPT TO:<b@x.test>', 'RCPT TO:<a@x.test> NOTIFY=NEVER', 'DATA']);
    expect(r.query?.get('a@x.test')).toBe('504 5.5.4 CONNEG not supported');
    expect(r.rcpt.get('a@x.test')).toBe('250 2.1.5 ok');
    expect(r.rcpt.get('b@x.test')).toBe('550 5.1.1 no such user');
    expect(r.failure).toBeUndefined();
    expect(c._recipientQueue).toEqual([]);
  });

  it('_responseActions / _sendCommand drive a probe: MAIL FROM:<> and the RCPTs in one write, no DATA', async () => {
    const raw = await rawServer({ ehlo: ['PIPELINING', 'CONNEG'], rcpt: (l) => (l.includes('<a@') ? '250-2.1.5 ok\r\n250 2.1.5 CONNEG (type="text/plain")\r\n' : '250 2.1.5 ok\r\n') });
    const c = await client(raw.port);
    const r = await c.probe({ mailParams: [], recipients: [{ address: 'a@x.test', params: ['CONNEG'] }, { address: 'b@x.test', params: ['CONNEG'] }] }, 2000);
    expect(r.failure).toBeUndefined();
    expect(r.mail).toBe('250 2.1.0 ok');
    expect(r.rcpt.get('a@x.test')).toBe('250-2.1.5 ok\n250 2.1.5 CONNEG (type="text/plain")');
    const cmds = raw.commands.filter((x) => x.line !== 'EHLO relay.test');
    expect(cmds.map((x) => x.line)).toEqual(['MAIL FROM:<>', 'RCPT TO:<a@x.test> CONNEG', 'RCPT TO:<b@x.test> CONNEG']);
    expect(new Set(cmds.map((x) => x.chunk)).size).toBe(1);
    expect(c._responseActions).toEqual([]);
    expect(await c.resetSession()).toBe(true);
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
