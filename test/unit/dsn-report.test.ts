/**
 * dsn/report: RFC 3464 / RFC 6522 reports, parsed back with mailparser and checked
 * field by field (rfc-digest.md §2), plus the raw bytes where exactness matters.
 */
import { describe, expect, it } from 'vitest';
import { simpleParser, type Attachment, type ParsedMail } from 'mailparser';
import type { Envelope } from '../../src/model/envelope.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { reply, type Reply } from '../../src/model/reply.ts';
import { parseReply } from '../../src/smtp/reply-format.ts';
import { renderReport, statusCode, type ReportInput } from '../../src/dsn/report.ts';
import type { DsnAction, ReportItem } from '../../src/dsn/notify.ts';

const NOW = new Date('2026-11-23T12:00:00Z');
const HEADERS = 'Received: from client.test by relay.test; Mon, 23 Nov 2026 10:52:37 +0000\r\nFrom: Sender <sender@example.com>\r\nTo: a@example.org\r\nSubject: quarterly report\r\nMessage-ID: <orig-1@example.com>\r\n';
const ORIGINAL = Buffer.from(`${HEADERS}\r\nHello,\r\nthe numbers are attached.\r\n`, 'latin1');

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'Q01J0ABCDEF',
    mailFrom: 'sender@example.com',
    body: '7BIT',
    smtpUtf8: false,
    client: { address: '127.0.0.1', helo: 'client.test' },
    receivedAt: '2026-11-23T10:52:37.000Z',
    size: ORIGINAL.length,
    ...over,
  };
}

function rcpt(over: Partial<RecipientState> = {}): RecipientState {
  return { address: 'a@example.org', drucof: false, status: 'failed', attempts: 1, ...over };
}

function items(action: DsnAction, ...recipients: RecipientState[]): ReportItem[] {
  return recipients.map((recipient, index) => ({ index, recipient, action }));
}

function input(over: Partial<ReportInput> & Pick<ReportInput, 'items'>): ReportInput {
  return { reportingMta: 'relay.example.net', envelope: envelope(), originalMessage: ORIGINAL, now: NOW, ...over };
}

const parse = (raw: Buffer): Promise<ParsedMail> => simpleParser(raw, { keepDeliveryStatus: true });

function part(mail: ParsedMail, contentType: string): Attachment | undefined {
  return mail.attachments.find((a) => a.contentType === contentType);
}

/** The delivery-status body as blocks of [name, unfolded value] (RFC 3464 §2.1, RFC 5322 unfolding). */
function dsBlocks(body: string): [string, string][][] {
  expect(body.endsWith('\r\n')).toBe(true);
  return body
    .replace(/\r\n$/, '')
    .split('\r\n\r\n')
    .map((block) =>
      block
        .replace(/\r\n(?=[ \t])/g, '\n') // keep continuation boundaries visible as \n
        .split('\r\n')
        .map((line) => {
          const colon = line.indexOf(':');
          return [line.slice(0, colon), line.slice(colon + 1).trimStart()] as [string, string];
        }),
    );
}

async function render(inp: ReportInput) {
  const report = await renderReport(inp);
  const mail = await parse(report.raw);
  const ds = part(mail, 'message/delivery-status');
  expect(ds, 'message/delivery-status part').toBeDefined();
  const dsText = ds!.content.toString('latin1');
  return { report, mail, dsText, blocks: dsBlocks(dsText) };
}

function noBareLf(raw: Buffer): void {
  expect(/(^|[^\r])\n/.test(raw.toString('latin1'))).toBe(false);
  expect(/\r(?!\n)/.test(raw.toString('latin1'))).toBe(false);
}

const multiLine: Reply = parseReply(['550-5.1.1 <a@example.org>: no such user here', '550-5.1.1 please check the address', '550 5.1.1 see https://mx.example.org/help'])!;

describe('renderReport: failure, RET=HDRS, ENVID and ORCPT echoed', () => {
  const failedRcpt = rcpt({
    address: 'a@example.org',
    orcpt: { addrType: 'rfc822', address: { xtext: 'Alice+2Bsales@example.org', value: 'Alice+sales@example.org' } },
    notify: ['FAILURE'],
    remoteMta: 'mx.example.org',
    lastReply: multiLine,
    lastAttemptAt: '2026-11-23T11:58:00Z',
  });
  const inp = input({
    envelope: envelope({ ret: 'HDRS', envid: { xtext: 'QQ314159+2Bx+3D1', value: 'QQ314159+x=1' } }),
    items: items('failed', failedRcpt),
  });

  it('is a multipart/report of type delivery-status from MAILER-DAEMON to the sender', async () => {
    const { report, mail } = await render(inp);
    const ct = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
    expect(ct.value).toBe('multipart/report');
    expect(ct.params['report-type']).toBe('delivery-status');
    expect(ct.params['boundary']).toBeTruthy();
    expect(mail.from?.value).toEqual([{ address: 'MAILER-DAEMON@relay.example.net', name: 'Mail Delivery System' }]);
    expect(mail.to && !Array.isArray(mail.to) ? mail.to.value.map((a) => a.address) : []).toEqual(['sender@example.com']);
    expect(mail.subject).toBe('Delivery Status Notification (Failure)');
    expect(mail.headers.get('auto-submitted')).toBe('auto-replied');
    expect(mail.date?.toISOString()).toBe(NOW.toISOString());
    expect(mail.messageId).toBe(report.messageId);
    expect(report.messageId).toMatch(/^<[^<>@\s]+@relay\.example\.net>$/);
    expect(report).toMatchObject({ from: '', to: 'sender@example.com', body: '7BIT', smtpUtf8: false });
    expect(report.raw.toString('latin1')).toMatch(/\r\nDate: Mon, 23 Nov 2026 12:00:00 \+0000\r\n/);
    noBareLf(report.raw);
  });

  it('orders the parts: text, delivery-status, headers', async () => {
    const { report } = await render(inp);
    const types = [...report.raw.toString('latin1').matchAll(/^Content-Type: ([^;\r\n]+)/gm)].map((m) => m[1]);
    expect(types).toEqual(['multipart/report', 'text/plain', 'message/delivery-status', 'text/rfc822-headers']);
  });

  it('has the per-message and per-recipient fields, decoded, in RFC 3464 order', async () => {
    const { blocks } = await render(inp);
    expect(blocks).toEqual([
      [
        ['Reporting-MTA', 'dns; relay.example.net'],
        ['Original-Envelope-Id', 'QQ314159+x=1'],
        ['Arrival-Date', 'Mon, 23 Nov 2026 10:52:37 +0000'],
      ],
      [
        ['Original-Recipient', 'rfc822;Alice+sales@example.org'],
        ['Final-Recipient', 'rfc822;a@example.org'],
        ['Action', 'failed'],
        ['Status', '5.1.1'],
        ['Remote-MTA', 'dns; mx.example.org'],
        ['Diagnostic-Code', 'smtp; 550-5.1.1 <a@example.org>: no such user here\n 550-5.1.1 please check the address\n 550 5.1.1 see https://mx.example.org/help'],
        ['Last-Attempt-Date', 'Mon, 23 Nov 2026 11:58:00 +0000'],
      ],
    ]);
  });

  it('writes a multi-line Diagnostic-Code as continuation lines that read back as the same reply', async () => {
    const { dsText, report } = await render(inp);
    expect(dsText).toContain(
      'Diagnostic-Code: smtp; 550-5.1.1 <a@example.org>: no such user here\r\n 550-5.1.1 please check the address\r\n 550 5.1.1 see https://mx.example.org/help\r\n',
    );
    const folded = /Diagnostic-Code: smtp; (.*(?:\r\n .*)*)/.exec(dsText)![1]!;
    expect(parseReply(folded.split('\r\n').map((l) => l.trimStart()))).toEqual(multiLine);
    // the delivery-status part is 7bit and reaches the wire byte for byte
    expect(report.raw.toString('latin1')).toContain(`Content-Type: message/delivery-status\r\nContent-Description: Delivery report\r\nContent-Transfer-Encoding: 7bit\r\n\r\n${dsText}\r\n--`);
  });

  it('returns the headers only, as text/rfc822-headers', async () => {
    const { mail } = await render(inp);
    expect(part(mail, 'message/rfc822')).toBeUndefined();
    expect(part(mail, 'text/rfc822-headers')?.content.toString('latin1')).toBe(HEADERS);
  });

  it('explains in plain English, per recipient, with the remote reply', async () => {
    const { mail } = await render(inp);
    const text = mail.text ?? '';
    expect(text).toContain('could not be delivered');
    expect(text).toContain('<a@example.org> (originally <Alice+sales@example.org>):');
    expect(text).toContain('mx.example.org said:');
    expect(text).toContain('550-5.1.1 <a@example.org>: no such user here');
    expect(text).toContain('550 5.1.1 see https://mx.example.org/help');
    expect(text).toContain('Queue ID: Q01J0ABCDEF');
    expect(text).toContain('headers of your message are attached');
  });
});

describe('renderReport: what a failure returns', () => {
  it('RET=FULL attaches the whole original as message/rfc822, byte for byte', async () => {
    const original = Buffer.concat([Buffer.from(`${HEADERS}\r\nCaf`, 'latin1'), Buffer.from([0xc3, 0xa9]), Buffer.from('\r\n.leading dot\r\n', 'latin1')]);
    const { report, mail } = await render(
      input({ envelope: envelope({ ret: 'FULL', body: '8BITMIME' }), originalMessage: original, items: items('failed', rcpt({ lastReply: reply(550, 1, 1, 'no such user') })) }),
    );
    expect(part(mail, 'text/rfc822-headers')).toBeUndefined();
    const att = part(mail, 'message/rfc822');
    expect(att?.content.equals(original)).toBe(true);
    expect(report.raw.includes(Buffer.concat([Buffer.from('Content-Transfer-Encoding: 8bit\r\n\r\n'), original]))).toBe(true);
    expect(report.body).toBe('8BITMIME');
    expect(mail.text).toContain('A copy of your message is attached.');
  });

  it('RET=FULL with a 7-bit original says 7bit and keeps the report 7BIT', async () => {
    const { report, mail } = await render(input({ envelope: envelope({ ret: 'FULL' }), items: items('failed', rcpt()) }));
    expect(part(mail, 'message/rfc822')?.content.equals(ORIGINAL)).toBe(true);
    expect(report.raw.toString('latin1')).toContain('Content-Type: message/rfc822\r\nContent-Description: Undelivered Message\r\nContent-Transfer-Encoding: 7bit\r\n');
    expect(report.body).toBe('7BIT');
  });

  it('no RET returns the headers only (our documented choice)', async () => {
    const { mail } = await render(input({ items: items('failed', rcpt()) }));
    expect(part(mail, 'message/rfc822')).toBeUndefined();
    expect(part(mail, 'text/rfc822-headers')?.content.toString('latin1')).toBe(HEADERS);
  });

  it('RET=FULL above fullReturnLimit returns the headers and says why', async () => {
    const { mail } = await render(input({ envelope: envelope({ ret: 'FULL' }), fullReturnLimit: 100, items: items('failed', rcpt()) }));
    expect(part(mail, 'message/rfc822')).toBeUndefined();
    expect(part(mail, 'text/rfc822-headers')?.content.toString('latin1')).toBe(HEADERS);
    expect(mail.text).toContain('too large to return whole');
  });

  it('headers with 8-bit bytes or long lines are QP-encoded and decode to the exact bytes', async () => {
    const headers = Buffer.concat([Buffer.from(`X-Long: ${'y'.repeat(200)}\r\nSubject: Gr`, 'latin1'), Buffer.from([0xc3, 0xbc, 0xdf]), Buffer.from('e\r\n', 'latin1')]);
    const original = Buffer.concat([headers, Buffer.from('\r\nbody\r\n')]);
    const { report, mail } = await render(input({ envelope: envelope({ ret: 'HDRS' }), originalMessage: original, items: items('failed', rcpt()) }));
    expect(report.raw.toString('latin1')).toContain('Content-Type: text/rfc822-headers\r\nContent-Description: Undelivered Message Headers\r\nContent-Transfer-Encoding: quoted-printable\r\n');
    expect(part(mail, 'text/rfc822-headers')?.content.equals(headers)).toBe(true);
    expect(report.raw.some((b) => b >= 0x80)).toBe(false);
    expect(report.body).toBe('7BIT');
  });

  it('turns bare LF in the stored message into CRLF', async () => {
    const lf = Buffer.from('Subject: lf\nFrom: s@example.com\n\nline\n', 'latin1');
    const { report, mail } = await render(input({ envelope: envelope({ ret: 'FULL' }), originalMessage: lf, items: items('failed', rcpt()) }));
    noBareLf(report.raw);
    expect(part(mail, 'message/rfc822')?.content.toString('latin1')).toBe('Subject: lf\r\nFrom: s@example.com\r\n\r\nline\r\n');
  });
});

describe('renderReport: relayed', () => {
  it('reports relayed with 2.x.x, no ENVID/ORCPT fields when none arrived, headers only even with RET=FULL', async () => {
    const r = rcpt({ status: 'relayed', notify: ['SUCCESS'], remoteMta: 'legacy.example.org', lastReply: reply(250, 0, 0, 'ok queued as 4F2A'), lastAttemptAt: '2026-11-23T11:59:30Z' });
    const { mail, blocks } = await render(input({ envelope: envelope({ ret: 'FULL' }), items: items('relayed', r) }));
    expect(mail.subject).toBe('Delivery Status Notification (Relayed)');
    expect(blocks).toEqual([
      [
        ['Reporting-MTA', 'dns; relay.example.net'],
        ['Arrival-Date', 'Mon, 23 Nov 2026 10:52:37 +0000'],
      ],
      [
        ['Final-Recipient', 'rfc822;a@example.org'],
        ['Action', 'relayed'],
        ['Status', '2.0.0'],
        ['Remote-MTA', 'dns; legacy.example.org'],
        ['Diagnostic-Code', 'smtp; 250 2.0.0 ok queued as 4F2A'],
        ['Last-Attempt-Date', 'Mon, 23 Nov 2026 11:59:30 +0000'],
      ],
    ]);
    expect(part(mail, 'message/rfc822')).toBeUndefined();
    const hdrs = part(mail, 'text/rfc822-headers');
    expect(hdrs?.content.toString('latin1')).toBe(HEADERS);
    expect(mail.text).toContain('passed on to the next mail system');
    expect(mail.text).not.toMatch(/\bdelivered\b/);
  });

  it('a 250 without an enhanced code still gives Status 2.0.0; a 2.x.x code is kept', async () => {
    const plain = await render(input({ items: items('relayed', rcpt({ status: 'relayed', lastReply: { code: 250, lines: ['ok'] } })) }));
    expect(plain.blocks[1]).toContainEqual(['Status', '2.0.0']);
    expect(plain.blocks[1]).toContainEqual(['Diagnostic-Code', 'smtp; 250 ok']);
    const enh = await render(input({ items: items('relayed', rcpt({ status: 'relayed', lastReply: reply(250, 1, 5, 'recipient ok') })) }));
    expect(enh.blocks[1]).toContainEqual(['Status', '2.1.5']);
  });
});

describe('renderReport: delayed', () => {
  it('reports delayed with Will-Retry-Until and the transient status, headers only', async () => {
    const r = rcpt({ status: 'deferred', notify: ['DELAY'], remoteMta: 'mx.example.org', lastReply: reply(451, 4, 1, 'greylisted, try again later'), lastAttemptAt: '2026-11-23T11:30:00Z' });
    const until = new Date('2026-11-28T10:52:37Z');
    const { mail, blocks } = await render(input({ envelope: envelope({ ret: 'FULL' }), items: items('delayed', r), willRetryUntil: until }));
    expect(mail.subject).toBe('Delivery Status Notification (Delay)');
    expect(blocks[1]).toEqual([
      ['Final-Recipient', 'rfc822;a@example.org'],
      ['Action', 'delayed'],
      ['Status', '4.4.1'],
      ['Remote-MTA', 'dns; mx.example.org'],
      ['Diagnostic-Code', 'smtp; 451 4.4.1 greylisted, try again later'],
      ['Last-Attempt-Date', 'Mon, 23 Nov 2026 11:30:00 +0000'],
      ['Will-Retry-Until', 'Sat, 28 Nov 2026 10:52:37 +0000'],
    ]);
    expect(part(mail, 'message/rfc822')).toBeUndefined();
    expect(part(mail, 'text/rfc822-headers')?.content.toString('latin1')).toBe(HEADERS);
    expect(mail.text).toContain('not yet been delivered');
    expect(mail.text).toContain('until Sat, 28 Nov 2026 10:52:37 +0000');
  });

  it('Will-Retry-Until appears in delayed reports only', async () => {
    const { dsText } = await render(input({ items: items('failed', rcpt()), willRetryUntil: new Date('2026-11-28T10:52:37Z') }));
    expect(dsText).not.toContain('Will-Retry-Until');
  });
});

describe('renderReport: several recipients in one report', () => {
  it('gives each recipient its own block, in order, and lists them all in the text', async () => {
    const rs = [
      rcpt({ address: 'a@example.org', remoteMta: 'mx.example.org', lastReply: reply(550, 1, 1, 'no such user') }),
      rcpt({ address: 'b@example.org', remoteMta: 'mx.example.org', lastReply: reply(552, 2, 2, 'mailbox full') }),
      rcpt({ address: 'c@example.net', orcpt: { addrType: 'rfc822', address: { xtext: 'c@example.net', value: 'c@example.net' } }, lastReply: reply(451, 4, 7, 'message expired after 5d in queue') }),
    ];
    const { mail, blocks } = await render(input({ items: items('failed', ...rs) }));
    expect(blocks).toHaveLength(4);
    expect(blocks.slice(1).map((b) => Object.fromEntries(b))).toEqual([
      { 'Final-Recipient': 'rfc822;a@example.org', Action: 'failed', Status: '5.1.1', 'Remote-MTA': 'dns; mx.example.org', 'Diagnostic-Code': 'smtp; 550 5.1.1 no such user' },
      { 'Final-Recipient': 'rfc822;b@example.org', Action: 'failed', Status: '5.2.2', 'Remote-MTA': 'dns; mx.example.org', 'Diagnostic-Code': 'smtp; 552 5.2.2 mailbox full' },
      { 'Original-Recipient': 'rfc822;c@example.net', 'Final-Recipient': 'rfc822;c@example.net', Action: 'failed', Status: '4.4.7', 'Diagnostic-Code': 'smtp; 451 4.4.7 message expired after 5d in queue' },
    ]);
    const text = mail.text ?? '';
    for (const a of ['<a@example.org>:', '<b@example.org>:', '<c@example.net>:']) expect(text).toContain(a);
    expect(text.indexOf('<a@example.org>')).toBeLessThan(text.indexOf('<b@example.org>'));
    expect(text).toContain('the mail system said:');
  });
});

describe('renderReport: 7-bit safety of the delivery-status part', () => {
  it('escapes non-ASCII and control characters (RFC 6533 \\x{HEX}); a non-ASCII address takes the utf-8 type', async () => {
    const r = rcpt({
      address: 'jörg@example.org',
      orcpt: { addrType: 'rfc822', address: { xtext: 'j+C3+B6rg+2B1@example.org', value: 'jörg+1@example.org' } },
      remoteMta: 'mx.example.org',
      lastReply: { code: 550, enhanced: '5.1.1', lines: ['Empfänger unbekannt\u0007'] },
    });
    const { report, blocks } = await render(
      input({ envelope: envelope({ envid: { xtext: 'A+0D+0AX-Injected:+201', value: 'A\r\nX-Injected: 1' } }), items: items('failed', r) }),
    );
    expect(blocks[0]).toContainEqual(['Original-Envelope-Id', 'A+0D+0AX-Injected:+201']);
    expect(blocks[1]).toEqual(
      expect.arrayContaining([
        ['Original-Recipient', 'utf-8;j\\x{F6}rg\\x{2B}1@example.org'],
        ['Final-Recipient', 'utf-8;j\\x{F6}rg@example.org'],
        ['Diagnostic-Code', 'smtp; 550 5.1.1 Empf\\x{E4}nger unbekannt\\x{07}'],
      ]),
    );
    const dsStart = report.raw.indexOf('Content-Type: message/delivery-status');
    const dsEnd = report.raw.indexOf('\r\n--', dsStart);
    expect(report.raw.subarray(dsStart, dsEnd).some((b) => b >= 0x80)).toBe(false);
  });
});

describe('renderReport: refuses what must never be sent', () => {
  it.each([
    ['a report to the null sender', input({ envelope: envelope({ mailFrom: '' }), items: items('failed', rcpt()) }), /null sender/],
    ['a report without recipients', input({ items: [] }), /no recipients/],
    ['a report mixing actions', input({ items: [...items('failed', rcpt()), { index: 1, recipient: rcpt({ status: 'deferred' }), action: 'delayed' }] }), /share an action/],
  ])('%s', async (_name, inp, message) => {
    await expect(renderReport(inp)).rejects.toThrow(message);
  });
});

describe('statusCode', () => {
  it.each<[DsnAction, Reply | undefined, string]>([
    ['failed', reply(550, 1, 1, 'x'), '5.1.1'],
    ['failed', { code: 550, lines: ['no enhanced code'] }, '5.0.0'],
    ['failed', { code: 451, lines: ['transient, given up'] }, '4.0.0'],
    ['failed', reply(451, 4, 7, 'expired'), '4.4.7'],
    ['failed', undefined, '5.0.0'],
    ['failed', reply(250, 0, 0, 'odd'), '5.0.0'],
    ['delayed', reply(451, 4, 1, 'x'), '4.4.1'],
    ['delayed', { code: 421, lines: ['busy'] }, '4.0.0'],
    ['delayed', undefined, '4.0.0'],
    ['relayed', reply(250, 0, 0, 'ok'), '2.0.0'],
    ['relayed', reply(250, 1, 5, 'ok'), '2.1.5'],
    ['relayed', { code: 250, lines: ['ok'] }, '2.0.0'],
    ['relayed', undefined, '2.0.0'],
  ])('%s with %j → %s', (action, r, expected) => {
    expect(statusCode(action, r)).toBe(expected);
  });
});
