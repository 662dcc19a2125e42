/**
 * LMTP (RFC 2033) as a client, for `lmtp:host:port` routes: the pool speaks LHLO
 * and reads one reply per accepted recipient after the data, each recipient's
 * own outcome. Against smtp-server with `lmtp: true` (a real LMTP server) and a
 * raw scripted one (to cut the connection between two replies, and to offer
 * INLINE-DSN/PRDR, which are never asked over LMTP).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { SMTPServer } from 'smtp-server';
import type { Envelope } from '../../src/model/envelope.ts';
import type { RemoteHop } from '../../src/model/delivery.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import type { Reply } from '../../src/model/reply.ts';
import type { DeliveryOutcome, OutboundPool } from '../../src/outbound/index.ts';
import { outboundHarness } from '../helpers/outbound.ts';

const { pool } = outboundHarness();
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

const envelope: Envelope = {
  id: 'QLMTP1',
  mailFrom: 'sender@example.com',
  body: '7BIT',
  smtpUtf8: false,
  client: { address: '127.0.0.1', helo: 'client.test' },
  receivedAt: '2026-11-23T10:00:00.000Z',
  size: 0,
};
const BODY = Buffer.from('Subject: lmtp\r\n\r\nhello\r\n');

const hopAt = (port: number): RemoteHop => ({ key: `route:lmtp:127.0.0.1:${port}`, transport: 'lmtp', hosts: [{ host: '127.0.0.1', port }] });

function deliver(o: OutboundPool, port: number, addresses: string[], notify?: ['SUCCESS']): Promise<DeliveryOutcome> {
  return o.deliver({ hop: hopAt(port), envelope, recipients: addresses.map((a) => ({ ...newRecipient(a), ...(notify && { notify }) })), body: BODY });
}

const short = (r: Reply | undefined) => (r ? `${r.code}${r.enhanced ? ' ' + r.enhanced : ''} ${r.lines.join(' / ')}` : 'none');

/** A real LMTP server: smtp-server with `lmtp: true`, refusing by local part at RCPT and after the data. */
async function lmtpServer(): Promise<{ port: number; messages: { rcpt: string[]; body: Buffer }[] }> {
  const messages: { rcpt: string[]; body: Buffer }[] = [];
  const server = new SMTPServer({
    lmtp: true,
    hideDSN: false,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onRcptTo(address, _session, cb) {
      if (address.address.startsWith('gone')) return cb(Object.assign(new Error('5.1.1 no such user'), { responseCode: 550 }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const rcpt = session.envelope.rcptTo.map((r) => r.address);
        messages.push({ rcpt, body: Buffer.concat(chunks) });
        cb(
          null,
          rcpt.map((a) =>
            a.startsWith('full')
              ? Object.assign(new Error('4.2.2 mailbox full'), { responseCode: 452 })
              : a.startsWith('refuse')
                ? Object.assign(new Error('5.6.0 content refused'), { responseCode: 550 })
                : `2.0.0 <${a}> delivered`,
          ) as unknown as string,
        );
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  return { port: (server.server.address() as net.AddressInfo).port, messages };
}

/**
 * A raw LMTP server: LHLO answered with `keywords`; after the data, the replies
 * `after` in order, then (with `dropAfter`) the connection is cut.
 */
async function rawLmtp(opts: { keywords: string[]; after: string[]; dropAfter?: boolean }): Promise<{ port: number; commands: string[] }> {
  const commands: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buf = '';
    let inData = false;
    socket.write('220 raw.lmtp.test LMTP ready\r\n');
    socket.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          buf = buf.slice(end + 5);
          inData = false;
          socket.write(opts.after.map((l) => `${l}\r\n`).join(''));
          if (opts.dropAfter) socket.destroy();
          continue;
        }
        const eol = buf.indexOf('\r\n');
        if (eol < 0) return;
        const line = buf.slice(0, eol);
        buf = buf.slice(eol + 2);
        commands.push(line);
        const verb = line.split(/[ :]/)[0]!.toUpperCase();
        if (verb === 'LHLO') socket.write(['raw.lmtp.test', ...opts.keywords].map((k, i, all) => `250${i === all.length - 1 ? ' ' : '-'}${k}\r\n`).join(''));
        else if (verb === 'DATA') {
          socket.write('354 go ahead\r\n');
          inData = true;
        } else if (verb === 'QUIT') {
          socket.end('221 bye\r\n');
          return;
        } else socket.write('250 2.0.0 ok\r\n');
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise((resolve) => {
        for (const sock of sockets) sock.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, commands };
}

describe('LMTP delivery', () => {
  it('reads one reply per accepted recipient after the data: each recipient its own outcome', async () => {
    const s = await lmtpServer();
    const res = await deliver(pool(), s.port, ['a@lmtp.test', 'full@lmtp.test', 'gone@lmtp.test', 'refuse@lmtp.test', 'b@lmtp.test']);
    expect([...res.perRecipient].map(([a, r]) => [a, short(r)])).toEqual([
      ['a@lmtp.test', '250 2.0.0 <a@lmtp.test> delivered'],
      ['full@lmtp.test', '452 4.2.2 mailbox full'],
      ['gone@lmtp.test', '550 5.1.1 no such user'],
      ['refuse@lmtp.test', '550 5.6.0 content refused'],
      ['b@lmtp.test', '250 2.0.0 <b@lmtp.test> delivered'],
    ]);
    expect(s.messages).toHaveLength(1);
    expect(s.messages[0]!.rcpt).toEqual(['a@lmtp.test', 'full@lmtp.test', 'refuse@lmtp.test', 'b@lmtp.test']);
    expect(s.messages[0]!.body.equals(BODY)).toBe(true);
    // smtp-server advertises DSN: the request travels on, the LMTP server reports.
    expect(res.dsnPassedOn).toBe(true);
  });

  it('the last recipient refused does not make the others fail (nodemailer hands back only the last reply)', async () => {
    const s = await lmtpServer();
    const res = await deliver(pool(), s.port, ['a@lmtp.test', 'refuse@lmtp.test']);
    expect(res.perRecipient.get('a@lmtp.test')?.code).toBe(250);
    expect(res.perRecipient.get('refuse@lmtp.test')?.code).toBe(550);
  });

  it('a reused LMTP connection delivers the next transaction too', async () => {
    const s = await lmtpServer();
    const o = pool();
    await deliver(o, s.port, ['a@lmtp.test']);
    const res = await deliver(o, s.port, ['b@lmtp.test', 'full@lmtp.test']);
    expect([...res.perRecipient.values()].map((r) => r.code)).toEqual([250, 452]);
    expect(s.messages).toHaveLength(2);
  });

  it('speaks LHLO; the hop keywords are the LHLO reply’s; never asks INLINE-DSN or PRDR, even when offered', async () => {
    const s = await rawLmtp({ keywords: ['PIPELINING', 'ENHANCEDSTATUSCODES', 'INLINE-DSN', 'PRDR', 'DRUCOF'], after: ['250 2.0.0 one ok', '250 2.0.0 two ok'] });
    const o = pool();
    expect([...(await o.hopKeywords(hopAt(s.port)))].sort()).toEqual(['DRUCOF', 'ENHANCEDSTATUSCODES', 'INLINE-DSN', 'PIPELINING', 'PRDR']);
    const res = await deliver(o, s.port, ['one@lmtp.test', 'two@lmtp.test']);
    expect(s.commands[0]).toBe('LHLO relay.test');
    expect(s.commands).not.toContain('EHLO relay.test');
    expect(s.commands.find((c) => c.startsWith('MAIL'))).toBe('MAIL FROM:<sender@example.com>');
    expect(res.verdicts).toBeUndefined();
    expect([...res.perRecipient.values()].map(short)).toEqual(['250 2.0.0 one ok', '250 2.0.0 two ok']);
    // No DSN offered: our own success report is due (dsnPassedOn false).
    expect(res.dsnPassedOn).toBe(false);
  });

  it('a connection cut between two replies: the one read stands, the one not read is a temporary failure', async () => {
    const s = await rawLmtp({ keywords: ['PIPELINING'], after: ['250 2.0.0 first delivered'], dropAfter: true });
    const res = await deliver(pool(), s.port, ['first@lmtp.test', 'second@lmtp.test']);
    expect(short(res.perRecipient.get('first@lmtp.test'))).toBe('250 2.0.0 first delivered');
    const second = res.perRecipient.get('second@lmtp.test')!;
    expect(second.code).toBeGreaterThanOrEqual(400);
    expect(second.code).toBeLessThan(500);
  });
});
