/**
 * The inbound stage over real sockets and real Redis: EHLO, our exact replies,
 * RFC 3461 parameters, limits, the store promise (byte-intact body, queue id in
 * the 250), access control and AUTH, STARTTLS, connection limit and shutdown.
 * Driven by the wire-level Dialog and by nodemailer.
 */
import nodemailer from 'nodemailer';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { createInbound } from '../../src/inbound/index.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { parseReply } from '../../src/smtp/reply-format.ts';
import { selfSignedCert } from '../helpers/tls.ts';
import { Dialog, type WireReply } from '../helpers/dialog.ts';
import { inboundBed } from '../helpers/inbound.ts';

const bed = inboundBed('inbound-smtp');
const { store, messageKeys } = bed;

async function start(raw: Record<string, unknown> = {}): Promise<number> {
  const config = parseConfig({ listen: '127.0.0.1:0', ...raw });
  return bed.listen({ config });
}

const connect = (port: number): Promise<Dialog> => bed.connect(port);

/** MAIL, RCPTs, DATA, the data (dot-stuffed by the caller), returns the reply to the dot. */
async function transaction(d: Dialog, from: string, rcpts: string[], data: string | Buffer): Promise<WireReply> {
  await d.command(`MAIL FROM:<${from}>`, 250, '2.1.0');
  for (const r of rcpts) await d.command(`RCPT TO:<${r}>`, 250, '2.1.5');
  await d.command('DATA', 354);
  d.write(data);
  return d.read();
}

describe('EHLO and the replies smtp-server makes', () => {
  it('advertises PIPELINING 8BITMIME SMTPUTF8 DSN ENHANCEDSTATUSCODES SIZE and our extensions, and no STARTTLS/AUTH when not configured', async () => {
    const d = await connect(await start({ limits: { maxMessageSize: 12345 } }));
    const greeting = await d.expect(220);
    expect(greeting.text).toMatch(/^220 relay\.test ESMTP/);
    d.send('EHLO client.test');
    const ehlo = await d.expect(250);
    const keywords = ehlo.raw.slice(1).map((l) => l.slice(4));
    expect(keywords).toEqual(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'DSN', 'ENHANCEDSTATUSCODES', 'SIZE 12345', 'CONNEG', 'DRUCOF', 'INLINE-DSN', 'PRDR']);
    expect(ehlo.raw[0]).toMatch(/^250-relay\.test /);
  });

  it.each([
    ['WIZ please', 500, '5.5.2'],
    ['SHELL', 500, '5.5.2'],
    ['KILL', 500, '5.5.2'],
    ['XCLIENT ADDR=1.2.3.4', 500, '5.5.2'],
    ['STARTTLS', 500, '5.5.2'], // not configured
    ['AUTH PLAIN AGFsaWNlAHNlY3JldA==', 500, '5.5.2'], // not configured
    ['BOGUS', 500, '5.5.2'],
    ['RCPT TO:<a@b.test>', 503, '5.5.1'],
    ['DATA', 503, '5.5.1'],
    ['MAIL FROM:<bad address>', 501, '5.1.7'],
    ['MAIL FROM:a@b.test', 501, '5.1.7'],
    ['NOOP', 250, '2.0.0'],
    ['RSET', 250, '2.0.0'],
    ['VRFY a@b.test', 252, '2.1.5'],
  ])('%s → %i %s', async (command, code, enhanced) => {
    const d = await connect(await start());
    await d.hello();
    await d.command(command, code, enhanced);
  });

  it('refuses MAIL before EHLO with 503 5.5.1 and a nested MAIL with 503 5.5.1', async () => {
    const d = await connect(await start());
    await d.expect(220);
    await d.command('MAIL FROM:<a@b.test>', 503, '5.5.1');
    await d.command('EHLO c.test', 250);
    await d.command('MAIL FROM:<a@b.test>', 250, '2.1.0');
    await d.command('MAIL FROM:<a@b.test>', 503, '5.5.1');
  });
});

describe('MAIL and RCPT parameters (RFC 3461, 1870, 6152, 6531)', () => {
  it.each([
    ['MAIL FROM:<s@a.test> RET=X', 501, '5.5.4'],
    ['MAIL FROM:<s@a.test> FOO=1', 555, '5.5.4'],
    ['MAIL FROM:<s@a.test> SIZE=1 SIZE=2', 501, '5.5.4'],
    [`MAIL FROM:<s@a.test> ENVID=${'e'.repeat(101)}`, 501, '5.5.4'],
    ['MAIL FROM:<s@a.test> ENVID=bad+zz', 501, '5.5.4'],
    ['MAIL FROM:<s@a.test> SIZE=999999999', 552, '5.3.4'],
    ['MAIL FROM:<s@a.test> BODY=BINARYMIME', 501, '5.5.4'],
    ['MAIL FROM:<s@a.test> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1', 250, '2.1.0'],
    ['MAIL FROM:<s@a.test>SIZE=100', 501, '5.1.7'], // no space before the parameter: not a path
    ['MAIL FROM:<s@a.test> ENVID=caf+C3+80', 250, '2.1.0'], // UTF-8 À: not a C1 control (smtp-server decodes xtext as latin1)
    ['MAIL FROM:<s@a.test> ENVID=a+0D+0AX-Injected:+20yes', 501, '5.5.4'],
  ])('%s → %i %s', async (command, code, enhanced) => {
    const d = await connect(await start({ limits: { maxMessageSize: 10000 } }));
    await d.hello();
    await d.command(command, code, enhanced);
  });

  it.each([
    ['RCPT TO:<r@b.test> NOTIFY=NEVER,SUCCESS', 501, '5.5.4'],
    ['RCPT TO:<r@b.test> NOTIFY=BOGUS', 501, '5.5.4'],
    ['RCPT TO:<r@b.test> ORCPT=rfc822;bad+zzxtext', 501, '5.5.4'],
    [`RCPT TO:<r@b.test> ORCPT=rfc822;${'o'.repeat(494)}`, 501, '5.5.4'],
    ['RCPT TO:<r@b.test> ORCPT=rfc822', 501, '5.5.4'],
    ['RCPT TO:<r@b.test> FOO=1', 555, '5.5.4'],
    ['RCPT TO:<r@b.test> NOTIFY=DELAY NOTIFY=DELAY', 501, '5.5.4'],
    ['RCPT TO:<r@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r+2Bx@b.test', 250, '2.1.5'],
    ['RCPT TO:<r@b.test> ORCPT=rfc822;r+0D+0Ax@b.test', 501, '5.5.4'],
    [`RCPT TO:<r@b.test> ${'K'.repeat(1000)}=1`, 555, '5.5.4'], // the echoed name is cut: the reply stays under 512 octets
    ['RCPT TO:<bad address>', 501, '5.1.3'],
  ])('%s → %i %s', async (command, code, enhanced) => {
    const d = await connect(await start());
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250, '2.1.0');
    await d.command(command, code, enhanced);
  });

  it('stores RET, ENVID, NOTIFY and ORCPT as given (xtext kept and decoded)', async () => {
    const d = await connect(await start());
    await d.hello();
    await d.command('MAIL FROM:<s@a.test> RET=HDRS ENVID=caf+C3+A9+2B1 BODY=8BITMIME', 250, '2.1.0');
    await d.command('RCPT TO:<r1@b.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;r1+2Btag@b.test', 250, '2.1.5');
    await d.command('RCPT TO:<r2@b.test> NOTIFY=NEVER', 250, '2.1.5');
    await d.command('RCPT TO:<r3@b.test>', 250, '2.1.5');
    await d.command('DATA', 354);
    d.write('Subject: p\r\n\r\nx\r\n.\r\n');
    const r = await d.expect(250, '2.0.0');
    const m = await store.load(r.reply!.tags!.queueId!);
    expect(m?.envelope).toMatchObject({ mailFrom: 's@a.test', ret: 'HDRS', envid: { xtext: 'caf+C3+A9+2B1', value: 'café+1' }, body: '8BITMIME', smtpUtf8: false });
    expect(m?.recipients).toEqual([
      { address: 'r1@b.test', drucof: false, status: 'queued', attempts: 0, notify: ['SUCCESS', 'DELAY'], orcpt: { addrType: 'rfc822', address: { xtext: 'r1+2Btag@b.test', value: 'r1+tag@b.test' } } },
      { address: 'r2@b.test', drucof: false, status: 'queued', attempts: 0, notify: 'NEVER' },
      { address: 'r3@b.test', drucof: false, status: 'queued', attempts: 0 },
    ]);
  });
});

describe('limits', () => {
  it('refuses a message over maxMessageSize after the data with 552 5.3.4 and stores nothing', async () => {
    const d = await connect(await start({ limits: { maxMessageSize: 1000 } }));
    await d.hello();
    const before = await messageKeys();
    const jobsBefore = await store.queue.count();
    const big = 'Subject: big\r\n\r\n' + ('x'.repeat(78) + '\r\n').repeat(40) + '.\r\n';
    const r = await transaction(d, 's@a.test', ['r@b.test'], big);
    expect(r.code).toBe(552);
    expect(r.reply?.enhanced).toBe('5.3.4');
    expect(await messageKeys()).toBe(before);
    expect(await store.queue.count()).toBe(jobsBefore);
    // The session goes on: the next message fits.
    const ok = await transaction(d, 's@a.test', ['r@b.test'], 'Subject: small\r\n\r\nx\r\n.\r\n');
    expect(ok.code).toBe(250);
  });

  it('answers 452 4.5.3 past maxRecipients, and a repeated recipient is accepted but stored once', async () => {
    const d = await connect(await start({ limits: { maxRecipients: 2 } }));
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250, '2.1.0');
    await d.command('RCPT TO:<one@b.test>', 250, '2.1.5');
    await d.command('RCPT TO:<two@b.test>', 250, '2.1.5');
    const refused = await d.command('RCPT TO:<three@b.test>', 452, '4.5.3');
    expect(refused.text).toBe('452 4.5.3 too many recipients');
    await d.command('RCPT TO:<ONE@b.test>', 250, '2.1.5'); // a repeat is not a new recipient
    await d.command('DATA', 354);
    d.write('Subject: d\r\n\r\nx\r\n.\r\n');
    const r = await d.expect(250, '2.0.0');
    const m = await store.load(r.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => x.address)).toEqual(['one@b.test', 'two@b.test']);
  });

  it('answers 421 4.4.5 past maxConnections', async () => {
    const port = await start({ limits: { maxConnections: 1 } });
    const first = await connect(port);
    await first.expect(220);
    const second = await connect(port);
    await second.expect(421, '4.4.5');
    await second.closed();
    await first.command('NOOP', 250);
  });

  it('closes an idle session after idleTimeout with 421', async () => {
    const d = await connect(await start({ limits: { idleTimeout: '300ms' } }));
    await d.hello();
    await d.expect(421, '4.4.2', 3000);
    await d.closed();
  });
});

describe('the 250 promise: stored byte-intact, queue id in the reply', () => {
  it('stores exactly the received bytes (dot-unstuffed) under one Received: header, with the 250 queue id', async () => {
    const d = await connect(await start());
    await d.hello('sender.example');
    const original = Buffer.concat([
      Buffer.from('From: a@a.test\r\nTo: r@b.test\r\nSubject: bytes\r\n\r\n'),
      Buffer.from('.leading dot\r\n..two dots\r\n.\r\nend of dot line above\r\n'),
      Buffer.from([0xc3, 0xa9, 0xff, 0x00, 0x0d, 0x0a]), // 8-bit, NUL
      Buffer.from('bare\nLF and bare\rCR kept\r\n'),
      Buffer.from('trailing spaces   \r\n\tand a tab\r\n'),
    ]);
    // Dot-stuff for the wire (RFC 5321 §4.5.2).
    const stuffed = Buffer.from(original.toString('latin1').replace(/^\./gm, '..'), 'latin1');
    await d.command('MAIL FROM:<a@a.test> BODY=8BITMIME', 250, '2.1.0');
    await d.command('RCPT TO:<r@b.test>', 250, '2.1.5');
    await d.command('DATA', 354);
    d.write(Buffer.concat([stuffed, Buffer.from('.\r\n')]));
    const r = await d.expect(250, '2.0.0');
    expect(r.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/);
    const id = r.reply!.tags!.queueId!;

    const m = await store.load(id);
    expect(m?.envelope.id).toBe(id);
    expect(await store.queue.getJobState(id)).toMatch(/waiting|prioritized|active|delayed/);
    const body = m!.body;
    const text = body.toString('latin1');
    // One Received: header, folded, first; then the message exactly.
    const headerEnd = /\r\n(?![ \t])/.exec(text)!.index + 2;
    const received = text.slice(0, headerEnd);
    expect(received).toMatch(/^Received: from sender\.example \((\S+ )?\[127\.0\.0\.1\]\)\r\n\tby relay\.test with ESMTP id [0-9A-Z]+\r\n\tfor <r@b\.test>;\r\n\t\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n$/);
    expect(received).toContain(`id ${id}`);
    expect(body.subarray(headerEnd).equals(original)).toBe(true);
    expect(m?.envelope.size).toBe(body.length);
    expect(m?.envelope.client).toMatchObject({ address: '127.0.0.1', helo: 'sender.example' });
  });

  it('omits "for" with more than one recipient', async () => {
    const d = await connect(await start());
    await d.hello();
    const r = await transaction(d, 's@a.test', ['a@b.test', 'b@b.test'], 'Subject: x\r\n\r\nx\r\n.\r\n');
    const m = await store.load(r.reply!.tags!.queueId!);
    const head = m!.body.toString().split('\r\nSubject')[0]!;
    expect(head).not.toMatch(/\bfor </);
  });

  it('takes several messages on one connection, after RSET only the new transaction counts', async () => {
    const d = await connect(await start());
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command('RCPT TO:<dropped@b.test>', 250);
    await d.command('RSET', 250, '2.0.0');
    const r1 = await transaction(d, 'null-test@a.test', ['kept@b.test'], 'Subject: 1\r\n\r\n1\r\n.\r\n');
    const r2 = await transaction(d, '', ['second@b.test'], 'Subject: 2\r\n\r\n2\r\n.\r\n');
    const m1 = await store.load(r1.reply!.tags!.queueId!);
    const m2 = await store.load(r2.reply!.tags!.queueId!);
    expect(m1?.recipients.map((x) => x.address)).toEqual(['kept@b.test']);
    expect(m2?.envelope.mailFrom).toBe(''); // the null sender <>
    expect(m2?.recipients.map((x) => x.address)).toEqual(['second@b.test']);
    await d.quit();
  });

  it('accepts a pipelined transaction (PIPELINING) and answers every command in order', async () => {
    const d = await connect(await start());
    await d.hello();
    d.write('MAIL FROM:<s@a.test>\r\nRCPT TO:<a@b.test>\r\nRCPT TO:<b@b.test> FOO=1\r\nRCPT TO:<c@b.test>\r\nDATA\r\n');
    await d.expect(250, '2.1.0');
    await d.expect(250, '2.1.5');
    await d.expect(555, '5.5.4');
    await d.expect(250, '2.1.5');
    await d.expect(354);
    d.write('Subject: p\r\n\r\nx\r\n.\r\nQUIT\r\n');
    const r = await d.expect(250, '2.0.0');
    await d.expect(221);
    const m = await store.load(r.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => x.address)).toEqual(['a@b.test', 'c@b.test']);
  });

  it('takes mail from nodemailer, and the 250 it reads carries the queue id of the stored message', async () => {
    const port = await start();
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
    const raw = 'From: a@a.test\r\nTo: r@b.test\r\nSubject: via nodemailer\r\n\r\nHello.\r\n';
    const info = await transport.sendMail({
      envelope: { from: 'a@a.test', to: ['r@b.test', 'q@b.test'] },
      raw,
      dsn: { id: 'env-1', return: 'headers', notify: ['success', 'failure'], recipient: 'a@a.test' },
    });
    transport.close();
    const r = parseReply(info.response);
    expect(r).toMatchObject({ code: 250, enhanced: '2.0.0', lines: ['queued'] });
    const m = await store.load(r!.tags!.queueId!);
    expect(m?.envelope).toMatchObject({ mailFrom: 'a@a.test', ret: 'HDRS', envid: { value: 'env-1' } });
    expect(m?.recipients.map((x) => [x.address, x.notify])).toEqual([
      ['r@b.test', ['SUCCESS', 'FAILURE']],
      ['q@b.test', ['SUCCESS', 'FAILURE']],
    ]);
    expect(m?.body.toString().endsWith('\r\n\r\nHello.\r\n')).toBe(true);
  });
});

describe('access: allowNetworks and AUTH', () => {
  const outside = { allowNetworks: ['10.9.9.0/24'] };

  it('refuses a client outside allowNetworks at connect with 554 5.7.1 when AUTH is not configured', async () => {
    const d = await connect(await start(outside));
    const r = await d.expect(554, '5.7.1');
    expect(r.text).toMatch(/^554 5\.7\.1 relay access denied/);
    await d.closed();
  });

  it('with AUTH configured: 550 5.7.1 at RCPT until the client authenticates, then accepts', async () => {
    const d = await connect(await start({ ...outside, auth: { users: { alice: 's3cret' }, allowInsecure: true } }));
    const ehlo = await d.hello();
    expect(ehlo.raw.map((l) => l.slice(4))).toContain('AUTH PLAIN LOGIN');
    await d.command('MAIL FROM:<s@a.test>', 250, '2.1.0');
    await d.command('RCPT TO:<r@b.test>', 550, '5.7.1');
    await d.command('RSET', 250);
    await d.command(`AUTH PLAIN ${Buffer.from('\0alice\0wrong').toString('base64')}`, 535, '5.7.8');
    await d.command(`AUTH PLAIN ${Buffer.from('\0nobody\0s3cret').toString('base64')}`, 535, '5.7.8');
    await d.command(`AUTH PLAIN ${Buffer.from('\0alice\0s3cret').toString('base64')}`, 235, '2.7.0');
    const r = await transaction(d, 's@a.test', ['r@b.test'], 'Subject: a\r\n\r\nx\r\n.\r\n');
    expect(r.code).toBe(250);
    const m = await store.load(r.reply!.tags!.queueId!);
    expect(m?.envelope.client.user).toBe('alice');
    expect(m?.body.toString()).toMatch(/with ESMTPA id/);
  });

  it('AUTH LOGIN through nodemailer relays from outside allowNetworks', async () => {
    const port = await start({ ...outside, auth: { users: { bob: 'pw' }, allowInsecure: true } });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, auth: { user: 'bob', pass: 'pw', method: 'LOGIN' } });
    const info = await transport.sendMail({ envelope: { from: 's@a.test', to: ['r@b.test'] }, raw: 'Subject: l\r\n\r\nx\r\n' });
    transport.close();
    expect(parseReply(info.response)?.tags?.queueId).toBeTruthy();
  });

  it('a client inside allowNetworks relays without AUTH even when AUTH is configured', async () => {
    const d = await connect(await start({ auth: { users: { alice: 'x' }, allowInsecure: true } }));
    await d.hello();
    const r = await transaction(d, 's@a.test', ['r@b.test'], 'Subject: a\r\n\r\nx\r\n.\r\n');
    expect(r.code).toBe(250);
  });
});

describe('STARTTLS and AUTH over TLS', () => {
  const certificate = selfSignedCert();
  const { key, cert } = certificate ?? { key: '', cert: '' };

  it.skipIf(!certificate)('advertises STARTTLS, withholds AUTH before TLS (538 5.7.11), relays after STARTTLS + AUTH', async () => {
    const port = await start({ allowNetworks: ['10.9.9.0/24'], tls: { key, cert }, auth: { users: { carol: 'pw' } } });
    const d = await connect(port);
    const ehlo = await d.hello();
    const keywords = ehlo.raw.slice(1).map((l) => l.slice(4));
    expect(keywords).toContain('STARTTLS');
    expect(keywords.some((k) => k.startsWith('AUTH'))).toBe(false);
    await d.command(`AUTH PLAIN ${Buffer.from('\0carol\0pw').toString('base64')}`, 538, '5.7.11');

    const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'carol', pass: 'pw' } });
    const info = await transport.sendMail({ envelope: { from: 's@a.test', to: ['r@b.test'] }, raw: 'Subject: tls\r\n\r\nx\r\n' });
    transport.close();
    const m = await store.load(parseReply(info.response)!.tags!.queueId!);
    expect(m?.envelope.client.user).toBe('carol');
    expect(m?.envelope.client.tls).toMatch(/TLS/);
    expect(m?.body.toString()).toMatch(/with ESMTPSA id/);
  });
});

describe('close()', () => {
  it('ends idle sessions with 421 4.4.2 and lets a transaction in flight finish', async () => {
    const config = parseConfig({ listen: '127.0.0.1:0' });
    const inbound = createInbound({ config, store, log: silentLogger, hostname: 'relay.test' });
    const { port } = await inbound.listen();
    const idle = await connect(port);
    await idle.hello();
    const busy = await connect(port);
    await busy.hello();
    await busy.command('MAIL FROM:<s@a.test>', 250);
    await busy.command('RCPT TO:<r@b.test>', 250);

    const closing = inbound.close(5000);
    await idle.expect(421, '4.4.2');
    await busy.command('DATA', 354);
    busy.write('Subject: late\r\n\r\nx\r\n.\r\n');
    const r = await busy.expect(250, '2.0.0');
    expect(await store.load(r.reply!.tags!.queueId!)).toBeDefined();
    // Between transactions the busy session is ended too; QUIT would still get 221.
    await busy.expect(421, '4.4.2', 3000);
    await closing;
    await expect(Dialog.connect(port, '127.0.0.1', 1000)).rejects.toThrow();
  });

  it('ends a transaction that outlives the timeout with 421', async () => {
    const config = parseConfig({ listen: '127.0.0.1:0' });
    const inbound = createInbound({ config, store, log: silentLogger, hostname: 'relay.test' });
    const { port } = await inbound.listen();
    const d = await connect(port);
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250);
    const started = Date.now();
    await inbound.close(300);
    await d.expect(421, '4.4.2', 3000);
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
