/**
 * The inbound stage's extensions over real sockets and real Redis (protocols.md
 * A1–A4b, A10): EHLO keywords and their switches, 504/555 for parameters not
 * advertised, CONNEG answers in both request forms (RFC 4141 shape), probe-only
 * sessions, DRUCOF stored, INLINE-DSN's 352/353 (and its single-reply collapse),
 * the old way without it (a failed recipient with its report owed), and PRDR's
 * sequences. Driven by the wire-level Dialog, pipelined where it matters.
 */
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { type InboundOptions } from '../../src/inbound/index.ts';
import type { VerdictSource } from '../../src/inbound/verdicts.ts';
import type { CapabilityLookup } from '../../src/model/capability.ts';
import { reply } from '../../src/model/reply.ts';
import { Dialog, type WireReply } from '../helpers/dialog.ts';
import { inboundBed, pipelined } from '../helpers/inbound.ts';

const bed = inboundBed('inbound-extensions');
const { store } = bed;

/** The A10 example policies and capabilities. */
const A10 = {
  capabilities: {
    'fax@example.net': '(& (type="image/tiff") (color=binary))',
    '*@example.org': '(type="text/plain")',
  },
  policies: {
    'postmaster@example.net': { acceptAll: true },
    'old-user@example.net': { refuse: '550 5.1.1 this recipient no longer exists' },
    'fighter@example.net': { refuseWords: ['fight'] },
    'fighter2@example.net': { refuseWords: ['fight'] },
    '*@example.net': { maxSize: 1048576, refuseTypes: ['application/x-msdownload'] },
    'small@example.com': { maxSize: 100 },
    'gone@example.com': { refuse: 'no longer here' },
  },
};

/** A verdict source that defers `slow*@example.net` (a transient verdict, as DRUCOF fail-fast may give). */
const deferSlow: VerdictSource = {
  name: 'test-defer',
  atRcpt: (r) => (r.address.startsWith('slow') ? { kind: 'content' } : undefined),
  afterData: (r) => (r.address.startsWith('slow') ? reply(451, 3, 0, 'cannot judge the content now') : undefined),
};

async function start(raw: Record<string, unknown> = {}, extra: Partial<InboundOptions> = {}): Promise<number> {
  const config = parseConfig({ listen: '127.0.0.1:0', ...A10, ...raw });
  return bed.listen({ config, verdictSources: [deferSlow], ...extra });
}

async function connect(port: number): Promise<Dialog> {
  const d = await bed.connect(port);
  await d.hello();
  return d;
}

const { messageKeys } = bed;
const jobs = () => store.queue.count();
const codes = (rs: readonly WireReply[]) => rs.map((r) => r.code);
const FIGHT = 'From: s@example.com\r\nSubject: round two\r\n\r\nLet us fight about it.\r\n.\r\n';
const PEACE = 'From: s@example.com\r\nSubject: hello\r\n\r\nLet us talk about it.\r\n.\r\n';


describe('EHLO keywords (A1)', () => {
  const keywords = async (extensions?: InboundOptions['extensions']) => {
    const d = await bed.connect(await start({}, extensions ? { extensions } : {}));
    const ehlo = await d.hello();
    return ehlo.raw.slice(1).map((l) => l.slice(4));
  };

  it('advertises CONNEG DRUCOF INLINE-DSN PRDR after the standard ones, never CHUNKING', async () => {
    const kw = await keywords();
    expect(kw.slice(-4)).toEqual(['CONNEG', 'DRUCOF', 'INLINE-DSN', 'PRDR']);
    expect(kw).not.toContain('CHUNKING');
    expect(kw).not.toContain('CONPERM');
  });

  it.each([
    [{ conneg: false }, ['DRUCOF', 'INLINE-DSN', 'PRDR']],
    [{ drucof: false }, ['CONNEG', 'INLINE-DSN', 'PRDR']],
    [{ inlineDsn: false }, ['CONNEG', 'DRUCOF', 'PRDR']],
    [{ prdr: false }, ['CONNEG', 'DRUCOF', 'INLINE-DSN']],
    [{ conneg: false, drucof: false, inlineDsn: false, prdr: false }, []],
  ])('switched off %j → %j', async (extensions, expected) => {
    const kw = await keywords(extensions);
    expect(kw.filter((k) => ['CONNEG', 'DRUCOF', 'INLINE-DSN', 'PRDR'].includes(k))).toEqual(expected);
  });
});

describe('parameters of extensions not advertised (A1: 504 for CONNEG/CONPERM, else 555)', () => {
  it.each([
    [{}, 'MAIL FROM:<s@a.test> CONPERM', 504, '5.5.4'],
    [{}, 'MAIL FROM:<s@a.test> CONNEG', 504, '5.5.4'],
    [{}, 'MAIL FROM:<s@a.test> INLINE-DSN=yes', 501, '5.5.4'],
    [{}, 'MAIL FROM:<s@a.test> PRDR=1', 501, '5.5.4'],
    [{}, 'MAIL FROM:<s@a.test> DRUCOF', 555, '5.5.4'],
    [{ inlineDsn: false }, 'MAIL FROM:<s@a.test> INLINE-DSN', 555, '5.5.4'],
    [{ prdr: false }, 'MAIL FROM:<s@a.test> PRDR', 555, '5.5.4'],
    [{}, 'MAIL FROM:<s@a.test> INLINE-DSN PRDR', 250, '2.1.0'],
  ])('extensions %j: %s → %i %s', async (extensions, command, code, enhanced) => {
    const d = await connect(await start({}, { extensions }));
    await d.command(command, code, enhanced);
  });

  it.each([
    [{}, 'RCPT TO:<r@b.test> CONPERM', 504, '5.5.4'],
    [{ conneg: false }, 'RCPT TO:<r@b.test> CONNEG', 504, '5.5.4'],
    [{ conneg: false }, 'RCPT TO:<r@b.test> CONNEG=OPTIONAL', 504, '5.5.4'],
    [{}, 'RCPT TO:<r@b.test> CONNEG=MANDATORY', 501, '5.5.4'],
    [{ drucof: false }, 'RCPT TO:<r@b.test> DRUCOF', 555, '5.5.4'],
    [{}, 'RCPT TO:<r@b.test> DRUCOF=YES', 501, '5.5.4'],
    [{}, 'RCPT TO:<r@b.test> INLINE-DSN', 555, '5.5.4'],
    [{}, 'RCPT TO:<r@b.test> XFOO', 555, '5.5.4'],
    [{}, 'RCPT TO:<r@b.test> DRUCOF CONNEG NOTIFY=FAILURE', 250, '2.1.5'],
  ])('extensions %j: %s → %i %s', async (extensions, command, code, enhanced) => {
    const d = await connect(await start({}, { extensions }));
    await d.command('MAIL FROM:<s@a.test>', 250, '2.1.0');
    await d.command(command, code, enhanced);
  });
});

describe('CONNEG answers (A3, RFC 4141 shape)', () => {
  it.each(['CONNEG', 'CONNEG=OPTIONAL', 'conneg=optional'])('RCPT … %s: the RCPT text, then CONNEG lines carrying the expression', async (param) => {
    const d = await connect(await start());
    await d.command('MAIL FROM:<s@a.test>', 250);
    const r = await d.command(`RCPT TO:<fax@example.net> ${param}`, 250, '2.1.5');
    expect(r.raw).toEqual(['250-2.1.5 <fax@example.net> recipient ok', '250 2.1.5 CONNEG (& (type="image/tiff") (color=binary))']);
    const dom = await d.command(`RCPT TO:<anyone@EXAMPLE.org> ${param}`, 250, '2.1.5');
    expect(dom.raw).toEqual(['250-2.1.5 <anyone@EXAMPLE.org> recipient ok', '250 2.1.5 CONNEG (type="text/plain")']);
  });

  it('not known: an ordinary positive reply without capability lines', async () => {
    const d = await connect(await start());
    await d.command('MAIL FROM:<s@a.test>', 250);
    const r = await d.command('RCPT TO:<nobody@example.com> CONNEG', 250, '2.1.5');
    expect(r.raw).toEqual(['250 2.1.5 <nobody@example.com> recipient ok']);
    // Without CONNEG the reply stays the plain one.
    const plain = await d.command('RCPT TO:<fax@example.net>', 250, '2.1.5');
    expect(plain.raw).toEqual(['250 2.1.5 recipient ok']);
  });

  it('a long expression is split over several CONNEG lines, each well under 512 octets', async () => {
    const long = `(| ${Array.from({ length: 40 }, (_, i) => `(& (type="image/x-kind-${i}") (pix-x<=${1000 + i}))`).join(' ')})`;
    const d = await connect(await start({ capabilities: { 'big@example.net': long } }));
    await d.command('MAIL FROM:<s@a.test>', 250);
    const r = await d.command('RCPT TO:<big@example.net> CONNEG', 250, '2.1.5');
    expect(r.raw.length).toBeGreaterThan(3);
    expect(r.raw.every((l) => l.length < 512)).toBe(true);
    expect(r.raw.slice(1).every((l) => /^250[- ]2\.1\.5 CONNEG /.test(l))).toBe(true);
    expect(r.reply?.lines.slice(1).map((l) => l.replace(/^CONNEG /, '')).join(' ')).toBe(long);
  });

  it('takes answers from the injected lookup (cached hop answers); a failure or a throw is "not known"', async () => {
    const lookup: CapabilityLookup = async (rcpt) => {
      if (rcpt === 'cached@hop.test') return { kind: 'known', expression: '(type="text/html")', source: 'cache' };
      if (rcpt === 'failed@hop.test') return { kind: 'query-failed', reason: 'timeout', source: 'conneg' };
      throw new Error('lookup broke');
    };
    const d = await connect(await start({}, { capabilities: lookup }));
    await d.command('MAIL FROM:<s@a.test>', 250);
    expect((await d.command('RCPT TO:<cached@hop.test> CONNEG', 250)).raw).toEqual(['250-2.1.5 <cached@hop.test> recipient ok', '250 2.1.5 CONNEG (type="text/html")']);
    expect((await d.command('RCPT TO:<failed@hop.test> CONNEG', 250)).raw).toEqual(['250 2.1.5 <failed@hop.test> recipient ok']);
    expect((await d.command('RCPT TO:<broken@hop.test> CONNEG', 250)).raw).toEqual(['250 2.1.5 <broken@hop.test> recipient ok']);
  });

  it('a slow lookup is answered "not known" after the timeout', async () => {
    const never: CapabilityLookup = () => new Promise(() => {});
    const d = await connect(await start({}, { capabilities: never, capabilityTimeoutMs: 200 }));
    await d.command('MAIL FROM:<s@a.test>', 250);
    expect((await d.command('RCPT TO:<x@hop.test> CONNEG', 250)).raw).toEqual(['250 2.1.5 <x@hop.test> recipient ok']);
  });

  it('a refused recipient gets its refusal and no capabilities', async () => {
    const d = await connect(await start({ capabilities: { 'old-user@example.net': '(type="text/plain")' } }));
    await d.command('MAIL FROM:<s@a.test>', 250);
    const r = await d.command('RCPT TO:<old-user@example.net> CONNEG', 550, '5.1.1');
    expect(r.raw).toEqual(['550 5.1.1 this recipient no longer exists']);
  });

  it('a probe-only session (MAIL FROM:<>, CONNEG RCPTs, RSET, again, QUIT) works pipelined and queues nothing', async () => {
    const keysBefore = await messageKeys();
    const jobsBefore = await jobs();
    const d = await connect(await start());
    d.write(
      'MAIL FROM:<>\r\nRCPT TO:<fax@example.net> CONNEG\r\nRCPT TO:<who@example.org> CONNEG=OPTIONAL\r\nRCPT TO:<nobody@example.com> CONNEG\r\nRSET\r\n' +
        'MAIL FROM:<>\r\nRCPT TO:<fax@example.net> CONNEG\r\nQUIT\r\n',
    );
    const rs: WireReply[] = [];
    for (let i = 0; i < 8; i++) rs.push(await d.read());
    expect(codes(rs)).toEqual([250, 250, 250, 250, 250, 250, 250, 221]);
    expect(rs[1]!.raw).toHaveLength(2);
    expect(rs[2]!.raw).toEqual(['250-2.1.5 <who@example.org> recipient ok', '250 2.1.5 CONNEG (type="text/plain")']);
    expect(rs[3]!.raw).toHaveLength(1);
    await d.closed();
    expect(await messageKeys()).toBe(keysBefore);
    expect(await jobs()).toBe(jobsBefore);
  });
});

describe('DRUCOF (A2)', () => {
  it('is accepted on RCPT and stored in the recipient state', async () => {
    const d = await connect(await start());
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command('RCPT TO:<d1@b.test> DRUCOF NOTIFY=FAILURE', 250, '2.1.5');
    await d.command('RCPT TO:<d2@b.test>', 250, '2.1.5');
    await d.command('RCPT TO:<d3@example.org> DRUCOF CONNEG', 250, '2.1.5');
    await d.command('DATA', 354);
    d.write(PEACE);
    const r = await d.expect(250, '2.0.0');
    const m = await store.load(r.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => [x.address, x.drucof])).toEqual([
      ['d1@b.test', true],
      ['d2@b.test', false],
      ['d3@example.org', true],
    ]);
    expect(m?.recipients[0]).toMatchObject({ status: 'queued', notify: ['FAILURE'] });
  });
});

describe('INLINE-DSN (A4)', () => {
  it('352 for recipients with content rules, the configured refusal, 250 for acceptAll and no entry; then 353 and one line per 352 recipient', async () => {
    const d = await connect(await start());
    const { before, after } = await pipelined(
      d,
      [
        'MAIL FROM:<s@example.com> INLINE-DSN',
        'RCPT TO:<postmaster@example.net>',
        'RCPT TO:<fighter@example.net>',
        'RCPT TO:<someone@example.com>',
        'RCPT TO:<lover@example.net>',
        'RCPT TO:<old-user@example.net>',
        'DATA',
      ],
      FIGHT,
      4,
    );
    expect(before.map((r) => r.raw.join('|'))).toEqual([
      '250 2.1.0 sender ok, INLINE-DSN requested',
      '250 2.1.5 this recipient accepts all messages',
      '352 recipient looks okay but wait for confirmation',
      '250 2.1.5 recipient ok',
      '352 recipient looks okay but wait for confirmation',
      '550 5.1.1 this recipient no longer exists',
      before[6]!.raw.join('|'),
    ]);
    expect(before[6]!.code).toBe(354);
    expect(after[0]!.raw).toEqual(['353 data looks okay but wait for confirmation']);
    expect(after[1]!.raw).toEqual(['550 5.6.0 <fighter@example.net> refuses the content']);
    expect(after[2]!.raw).toEqual(['250 2.1.5 <lover@example.net> accepts the content']);
    expect(after[3]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] data accepted by some users$/);
    const m = await store.load(after[3]!.reply!.tags!.queueId!);
    // Refused recipients are never queued; the accepted ones in one message.
    expect(m?.recipients.map((x) => [x.address, x.status])).toEqual([
      ['postmaster@example.net', 'queued'],
      ['someone@example.com', 'queued'],
      ['lover@example.net', 'queued'],
    ]);
    await d.quit();
  });

  it('collapses to one 250 when every 352 recipient accepts', async () => {
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<fighter@example.net>', 'RCPT TO:<lover@example.net>', 'DATA'], PEACE, 1);
    expect(after[0]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/);
    d.send('NOOP');
    await d.expect(250); // nothing else was sent before the NOOP's reply
    const m = await store.load(after[0]!.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => x.address)).toEqual(['fighter@example.net', 'lover@example.net']);
  });

  it('collapses to the one verdict when no recipient got 250 at RCPT and every 352 one got the same; nothing queued', async () => {
    const keysBefore = await messageKeys();
    const d = await connect(await start());
    const one = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<fighter@example.net>', 'DATA'], FIGHT, 1);
    expect(one.after[0]!.raw).toEqual(['550 5.6.0 <fighter@example.net> refuses the content']);
    const two = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<fighter@example.net>', 'RCPT TO:<fighter2@example.net>', 'DATA'], FIGHT, 1);
    expect(two.after[0]!.raw).toEqual(['550 5.6.0 refused by every recipient']);
    d.send('NOOP');
    await d.expect(250);
    expect(await messageKeys()).toBe(keysBefore);
  });

  it('does not collapse when a recipient got 250 at RCPT: 353, the refusal, final 250', async () => {
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<postmaster@example.net>', 'RCPT TO:<fighter@example.net>', 'DATA'], FIGHT, 3);
    expect(codes(after)).toEqual([353, 550, 250]);
    expect(after[2]!.reply?.tags?.queueId).toBeTruthy();
  });

  it('different verdicts and nobody accepted: 353, each line, final 550; size and type rules use 552 5.2.3 and 550 5.6.1', async () => {
    const d = await connect(await start());
    const attachment =
      'From: s@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached, and fight\r\n' +
      '--b\r\nContent-Type: application/x-msdownload\r\nContent-Transfer-Encoding: base64\r\n\r\nTVo=\r\n--b--\r\n.\r\n';
    const { after } = await pipelined(
      d,
      ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<fighter@example.net>', 'RCPT TO:<small@example.com>', 'RCPT TO:<other@example.net>', 'DATA'],
      attachment,
      5,
    );
    expect(after.map((r) => r.raw.join('|'))).toEqual([
      '353 data looks okay but wait for confirmation',
      '550 5.6.0 <fighter@example.net> refuses the content',
      '552 5.2.3 <small@example.com> refuses messages over 100 bytes',
      '550 5.6.1 <other@example.net> refuses content of type application/x-msdownload',
      '550 5.0.0 no recipient accepted the message',
    ]);
  });

  it('finds words in base64 and quoted-printable text parts, in any case, as whole words only', async () => {
    const d = await connect(await start());
    const b64 = Buffer.from('Time to FIGHT, now.').toString('base64');
    const msg =
      'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="q"\r\n\r\n--q\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nfighting is not fight=\r\ners\r\n' +
      `--q\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n--q--\r\n.\r\n`;
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<fighter@example.net>', 'DATA'], msg, 1);
    expect(after[0]!.raw).toEqual(['550 5.6.0 <fighter@example.net> refuses the content']);
    const { after: ok } = await pipelined(
      d,
      ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<fighter@example.net>', 'DATA'],
      'Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nfighting and fight=\r\ners only\r\n.\r\n',
      1,
    );
    expect(ok[0]!.code).toBe(250);
  });

  it('a repeated 352 recipient is itemised once per 352 given', async () => {
    const d = await connect(await start());
    const { before, after } = await pipelined(
      d,
      ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<fighter@example.net>', 'RCPT TO:<lover@example.net>', 'RCPT TO:<FIGHTER@example.net>', 'DATA'],
      FIGHT,
      5,
    );
    expect(codes(before)).toEqual([250, 352, 352, 352, 354]);
    expect(after.map((r) => r.raw.join('|'))).toEqual([
      '353 data looks okay but wait for confirmation',
      '550 5.6.0 <fighter@example.net> refuses the content',
      '250 2.1.5 <lover@example.net> accepts the content',
      '550 5.6.0 <fighter@example.net> refuses the content',
      after[4]!.raw.join('|'),
    ]);
    expect(after[4]!.code).toBe(250);
  });
});

describe('without INLINE-DSN or PRDR: the old way (issue 4 item 4)', () => {
  it('never sends 352; a recipient refused after the data is stored failed with its report owed, the others queued', async () => {
    const d = await connect(await start());
    const { before, after } = await pipelined(
      d,
      [
        'MAIL FROM:<s@example.com>',
        'RCPT TO:<fighter@example.net> NOTIFY=FAILURE',
        'RCPT TO:<lover@example.net>',
        'RCPT TO:<fighter2@example.net> NOTIFY=NEVER',
        'DATA',
      ],
      FIGHT,
      1,
    );
    expect(codes(before)).toEqual([250, 250, 250, 250, 354]);
    expect(after[0]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/);
    const m = await store.load(after[0]!.reply!.tags!.queueId!);
    expect(m?.recipients).toEqual([
      expect.objectContaining({
        address: 'fighter@example.net',
        status: 'failed',
        reportOwed: 'failed',
        lastReply: { code: 550, enhanced: '5.6.0', lines: ['<fighter@example.net> refuses the content'] },
      }),
      { address: 'lover@example.net', drucof: false, status: 'queued', attempts: 0 },
      expect.objectContaining({ address: 'fighter2@example.net', status: 'failed', notify: 'NEVER' }),
    ]);
    expect(m?.recipients[2]?.reportOwed).toBeUndefined();
    // The trace header names no recipient (two were stored) and the message is byte-intact.
    expect(m?.body.toString()).toMatch(/\r\n\r\nLet us fight about it\.\r\n$/);
  });

  it('owes no report for a message from <>', async () => {
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<>', 'RCPT TO:<fighter@example.net>', 'RCPT TO:<lover@example.net>', 'DATA'], FIGHT, 1);
    const m = await store.load(after[0]!.reply!.tags!.queueId!);
    expect(m?.recipients[0]).toMatchObject({ status: 'failed' });
    expect(m?.recipients[0]?.reportOwed).toBeUndefined();
  });

  it('when every recipient refuses, answers the data with the refusal and stores nothing', async () => {
    const keysBefore = await messageKeys();
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com>', 'RCPT TO:<fighter@example.net>', 'DATA'], FIGHT, 1);
    expect(after[0]!.raw).toEqual(['550 5.6.0 <fighter@example.net> refuses the content']);
    expect(await messageKeys()).toBe(keysBefore);
  });

  it('a refuse policy without a code answers 550 5.7.1 with its text', async () => {
    const d = await connect(await start());
    await d.command('MAIL FROM:<s@example.com>', 250);
    expect((await d.command('RCPT TO:<gone@example.com>', 550, '5.7.1')).raw).toEqual(['550 5.7.1 no longer here']);
  });
});

describe('PRDR (A4b)', () => {
  it('250 at every RCPT not refused outright; 353, one line per accepted RCPT in RCPT order, final 250; only accepted queued', async () => {
    const d = await connect(await start());
    const { before, after } = await pipelined(
      d,
      [
        'MAIL FROM:<s@example.com> PRDR',
        'RCPT TO:<postmaster@example.net>',
        'RCPT TO:<fighter@example.net>',
        'RCPT TO:<old-user@example.net>',
        'RCPT TO:<lover@example.net>',
        'DATA',
      ],
      FIGHT,
      5,
    );
    expect(before.map((r) => r.raw.join('|')).slice(0, 5)).toEqual([
      '250 2.1.0 sender ok, PRDR requested',
      '250 2.1.5 this recipient accepts all messages',
      '250 2.1.5 recipient ok',
      '550 5.1.1 this recipient no longer exists',
      '250 2.1.5 recipient ok',
    ]);
    expect(after.map((r) => r.raw.join('|')).slice(0, 4)).toEqual([
      '353 PRDR content analysis beginning',
      '250 2.1.5 <postmaster@example.net> accepts the content',
      '550 5.6.0 <fighter@example.net> refuses the content',
      '250 2.1.5 <lover@example.net> accepts the content',
    ]);
    expect(after[4]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] accepted for some recipients$/);
    const m = await store.load(after[4]!.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => [x.address, x.status])).toEqual([
      ['postmaster@example.net', 'queued'],
      ['lover@example.net', 'queued'],
    ]);
  });

  it('every recipient accepts: still the sequence (two or more), final 250', async () => {
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> PRDR', 'RCPT TO:<a@b.test>', 'RCPT TO:<lover@example.net>', 'DATA'], PEACE, 4);
    expect(codes(after)).toEqual([353, 250, 250, 250]);
    expect(after[3]!.text).toMatch(/\] accepted for all recipients$/);
  });

  it.each([
    [['lover@example.net'], PEACE, /^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/, true],
    [['fighter@example.net'], FIGHT, /^550 5\.6\.0 <fighter@example\.net> refuses the content$/, false],
    [['fighter@example.net', 'old-user@example.net'], FIGHT, /^550 5\.6\.0 <fighter@example\.net> refuses the content$/, false],
  ])('one recipient accepted at RCPT %j: one ordinary reply', async (rcpts, data, expected, stored) => {
    const keysBefore = await messageKeys();
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> PRDR', ...rcpts.map((r) => `RCPT TO:<${r}>`), 'DATA'], data, 1);
    expect(after[0]!.text).toMatch(expected);
    d.send('NOOP');
    await d.expect(250);
    expect(await messageKeys()).toBe(keysBefore + (stored ? 1 : 0));
  });

  it('all refused: 353, every line, final 550; nothing queued', async () => {
    const keysBefore = await messageKeys();
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> PRDR', 'RCPT TO:<fighter@example.net>', 'RCPT TO:<fighter2@example.net>', 'DATA'], FIGHT, 4);
    expect(after.map((r) => r.raw.join('|'))).toEqual([
      '353 PRDR content analysis beginning',
      '550 5.6.0 <fighter@example.net> refuses the content',
      '550 5.6.0 <fighter2@example.net> refuses the content',
      '550 5.6.0 no recipient accepted the message',
    ]);
    expect(await messageKeys()).toBe(keysBefore);
  });

  it('none accepted and some deferred: final 450; nothing queued', async () => {
    const keysBefore = await messageKeys();
    const d = await connect(await start());
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> PRDR', 'RCPT TO:<slow@example.net>', 'RCPT TO:<fighter@example.net>', 'DATA'], FIGHT, 4);
    expect(after.map((r) => r.raw.join('|'))).toEqual([
      '353 PRDR content analysis beginning',
      '451 4.3.0 <slow@example.net> cannot judge the content now',
      '550 5.6.0 <fighter@example.net> refuses the content',
      '450 4.3.0 no recipient accepted the message now, try again later',
    ]);
    expect(await messageKeys()).toBe(keysBefore);
  });

  it('MAIL with both INLINE-DSN and PRDR speaks INLINE-DSN (it carries 352)', async () => {
    const d = await connect(await start());
    const { before, after } = await pipelined(d, ['MAIL FROM:<s@example.com> PRDR INLINE-DSN', 'RCPT TO:<postmaster@example.net>', 'RCPT TO:<fighter@example.net>', 'DATA'], FIGHT, 3);
    expect(codes(before)).toEqual([250, 250, 352, 354]);
    expect(after.map((r) => r.raw[0])).toEqual(['353 data looks okay but wait for confirmation', '550 5.6.0 <fighter@example.net> refuses the content', expect.stringMatching(/^250 2\.0\.0 \[QUEUEID/)]);
  });

  it('a later transaction on the same connection starts plain again', async () => {
    const d = await connect(await start());
    const first = await pipelined(d, ['MAIL FROM:<s@example.com> PRDR', 'RCPT TO:<a@b.test>', 'RCPT TO:<c@b.test>', 'DATA'], PEACE, 4);
    expect(codes(first.after)).toEqual([353, 250, 250, 250]);
    const second = await pipelined(d, ['MAIL FROM:<s@example.com>', 'RCPT TO:<a@b.test>', 'RCPT TO:<c@b.test>', 'DATA'], PEACE, 1);
    expect(second.after[0]!.text).toMatch(/\] queued$/);
    d.send('NOOP');
    await d.expect(250);
  });
});
