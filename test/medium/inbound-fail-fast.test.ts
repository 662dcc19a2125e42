/**
 * DRUCOF fail-fast at the inbound (issue 6 item 5) over real sockets, real Redis
 * (message store and capability cache) and a real conversion engine: a DRUCOF
 * recipient whose section-4 decision is certain to fail is refused after the
 * data with decide()'s reply — inline under INLINE-DSN (352 at RCPT, its line
 * after 353) and PRDR, the old way (stored failed, report owed) otherwise. Only
 * accepted recipients are stored. Transactions are pipelined (RFC 2920): the
 * verdict sources answer asynchronously at RCPT.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { CapabilityCache } from '../../src/capabilities/cache.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createConversionEngine, loadConverters, type ConversionEngine } from '../../src/conversion/index.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { drucofFailFast } from '../../src/relay/fail-fast.ts';
import { compose, image } from '../fixtures/images/mail.ts';
import { Dialog, type WireReply } from '../helpers/dialog.ts';
import { inboundBed, pipelined } from '../helpers/inbound.ts';

const bed = inboundBed('inbound-fail-fast');
const { store, messageKeys } = bed;
const cache = new CapabilityCache(bed.redis, { prefix: bed.prefix });

const config = parseConfig({
  listen: '127.0.0.1:0',
  routes: { 'example.net': '127.0.0.1:1', 'pass.test': '127.0.0.2:1' },
  capabilities: {
    'text@example.net': '(type="text/plain")',
    'jpeg@example.net': '(| (type="text/plain") (type="image/jpeg"))',
    '*@pass.test': '(type="text/plain")',
  },
});

let engine: ConversionEngine;
/** A text/plain part and an image/png part, as DATA (dot-stuffed, final dot). */
let PNG: string;
/** The same with the image marked `Content-Conversion: prohibited`. */
let PROHIBITED: string;
const NO_CONVERSION = '554 5.6.3 <text@example.net> no conversion makes part 2 (image/png, "p.png") usable by the recipient';

const asData = (raw: Buffer) => {
  const s = raw.toString('latin1').replace(/^\./gm, '..');
  return s + (s.endsWith('\r\n') ? '' : '\r\n') + '.\r\n';
};

beforeAll(async () => {
  const builtins = await loadConverters({ converters: { builtin: true, dirs: [], packages: [] } });
  engine = await createConversionEngine(config, silentLogger, { converters: builtins });
  PNG = asData(await compose({ text: 'see the picture', attachments: [{ filename: 'p.png', content: image('photo.png'), contentType: 'image/png' }] }));
  PROHIBITED = asData(
    await compose({
      text: 'see the picture',
      attachments: [{ filename: 'p.png', content: image('photo.png'), contentType: 'image/png', headers: { 'Content-Conversion': 'prohibited' } }],
    }),
  );
  // The next hops as the worker last saw them: example.net's lacks DRUCOF, pass.test's has it.
  await cache.setHopKeywords('route:127.0.0.1:1', ['PIPELINING', 'CONNEG', 'ENHANCEDSTATUSCODES']);
  await cache.setHopKeywords('route:127.0.0.2:1', ['PIPELINING', 'CONNEG', 'DRUCOF']);
  await cache.set('cached@example.net', { kind: 'known', expression: '(type="text/plain")', source: 'conneg' });
});

async function connect(): Promise<Dialog> {
  const d = await bed.connect(await bed.listen({ config, verdictSources: [drucofFailFast({ config, cache, engine, log: silentLogger })] }));
  await d.hello();
  return d;
}

/** Sends a whole transaction pipelined (RFC 2920) and reads `n` replies after the data. */

const wire = (rs: readonly WireReply[]) => rs.map((r) => r.raw.join('|'));

describe('INLINE-DSN (A4)', () => {
  it('352 for a DRUCOF recipient that may be refused; after the data 353, its 554 5.6.3, the other 352 one 250, final 250; only the accepted stored', async () => {
    const d = await connect();
    const { before, after } = await pipelined(
      d,
      [
        'MAIL FROM:<s@example.com> INLINE-DSN',
        'RCPT TO:<text@example.net> DRUCOF NOTIFY=FAILURE',
        'RCPT TO:<plain@example.net>',
        'RCPT TO:<jpeg@example.net> DRUCOF CONNEG',
        'RCPT TO:<x@pass.test> DRUCOF',
        'DATA',
      ],
      PNG,
      4,
    );
    expect(wire(before)).toEqual([
      '250 2.1.0 sender ok, INLINE-DSN requested',
      '352 recipient looks okay but wait for confirmation',
      '250 2.1.5 recipient ok', // no DRUCOF: nothing to decide
      '352-<jpeg@example.net> recipient looks okay but wait for confirmation|352 CONNEG (| (type="text/plain") (type="image/jpeg"))',
      '250 2.1.5 recipient ok', // its hop carries DRUCOF: passed on later, never refused here
      wire([before[5]!])[0],
    ]);
    expect(before[5]!.code).toBe(354);
    expect(wire(after.slice(0, 3))).toEqual([
      '353 data looks okay but wait for confirmation',
      NO_CONVERSION,
      '250 2.1.5 <jpeg@example.net> accepts the content',
    ]);
    expect(after[3]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] data accepted by some users$/);
    const m = await store.load(after[3]!.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => [x.address, x.status, x.drucof])).toEqual([
      ['plain@example.net', 'queued', false],
      ['jpeg@example.net', 'queued', true],
      ['x@pass.test', 'queued', true],
    ]);
    await d.quit();
  });

  it('the only recipient refused: one reply, nothing stored; a prohibited part is 5.6.2', async () => {
    const keysBefore = await messageKeys();
    const d = await connect();
    const one = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<text@example.net> DRUCOF', 'DATA'], PNG, 1);
    expect(one.before.map((r) => r.code)).toEqual([250, 352, 354]);
    expect(wire(one.after)).toEqual([NO_CONVERSION]);
    const two = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<jpeg@example.net> DRUCOF', 'DATA'], PROHIBITED, 1);
    expect(wire(two.after)).toEqual(['554 5.6.2 <jpeg@example.net> part 2 (image/png, "p.png") cannot be used by the recipient and conversion of this part is prohibited']);
    d.send('NOOP');
    await d.expect(250); // nothing else was sent
    expect(await messageKeys()).toBe(keysBefore);
  });

  it('capabilities from the cache count; a message the recipient can use is accepted', async () => {
    const d = await connect();
    const refused = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<cached@example.net> DRUCOF', 'RCPT TO:<plain@example.net>', 'DATA'], PNG, 3);
    expect(refused.before.map((r) => r.code)).toEqual([250, 352, 250, 354]);
    expect(wire(refused.after.slice(0, 2))).toEqual([
      '353 data looks okay but wait for confirmation',
      '554 5.6.3 <cached@example.net> no conversion makes part 2 (image/png, "p.png") usable by the recipient',
    ]);
    const text = asData(await compose({ text: 'just words' }));
    const ok = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<text@example.net> DRUCOF', 'DATA'], text, 1);
    expect(ok.after[0]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/);
    const m = await store.load(ok.after[0]!.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => [x.address, x.status])).toEqual([['text@example.net', 'queued']]);
  });

  it('no certainty (capabilities unknown): an ordinary 250, and the worker decides later', async () => {
    const d = await connect();
    const { before, after } = await pipelined(d, ['MAIL FROM:<s@example.com> INLINE-DSN', 'RCPT TO:<nobody@example.net> DRUCOF', 'DATA'], PNG, 1);
    expect(before.map((r) => r.code)).toEqual([250, 250, 354]);
    expect(after[0]!.text).toMatch(/\] queued$/);
  });
});

describe('PRDR (A4b)', () => {
  it('250 at RCPT; 353, a line for every accepted RCPT (the DRUCOF one 554 5.6.3), final 250; only the accepted stored', async () => {
    const d = await connect();
    const { before, after } = await pipelined(
      d,
      ['MAIL FROM:<s@example.com> PRDR', 'RCPT TO:<text@example.net> DRUCOF', 'RCPT TO:<jpeg@example.net> DRUCOF', 'RCPT TO:<plain@example.net>', 'DATA'],
      PNG,
      5,
    );
    expect(wire(before.slice(0, 4))).toEqual(['250 2.1.0 sender ok, PRDR requested', '250 2.1.5 recipient ok', '250 2.1.5 recipient ok', '250 2.1.5 recipient ok']);
    expect(wire(after.slice(0, 4))).toEqual([
      '353 PRDR content analysis beginning',
      NO_CONVERSION,
      '250 2.1.5 <jpeg@example.net> accepts the content',
      '250 2.1.5 <plain@example.net> accepts the content',
    ]);
    expect(after[4]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] accepted for some recipients$/);
    const m = await store.load(after[4]!.reply!.tags!.queueId!);
    expect(m?.recipients.map((x) => [x.address, x.status])).toEqual([
      ['jpeg@example.net', 'queued'],
      ['plain@example.net', 'queued'],
    ]);
  });

  it('one recipient: one ordinary reply, nothing stored', async () => {
    const keysBefore = await messageKeys();
    const d = await connect();
    const { after } = await pipelined(d, ['MAIL FROM:<s@example.com> PRDR', 'RCPT TO:<text@example.net> DRUCOF', 'DATA'], PNG, 1);
    expect(wire(after)).toEqual([NO_CONVERSION]);
    d.send('NOOP');
    await d.expect(250);
    expect(await messageKeys()).toBe(keysBefore);
  });
});

describe('neither: the old way', () => {
  it('the refused DRUCOF recipient is stored already failed with its report owed; the other queued', async () => {
    const d = await connect();
    const { before, after } = await pipelined(
      d,
      ['MAIL FROM:<s@example.com>', 'RCPT TO:<text@example.net> DRUCOF NOTIFY=FAILURE', 'RCPT TO:<plain@example.net>', 'DATA'],
      PNG,
      1,
    );
    expect(before.map((r) => r.code)).toEqual([250, 250, 250, 354]);
    expect(after[0]!.text).toMatch(/^250 2\.0\.0 \[QUEUEID [0-9A-Z]+\] queued$/);
    const m = await store.load(after[0]!.reply!.tags!.queueId!);
    expect(m?.recipients).toEqual([
      expect.objectContaining({
        address: 'text@example.net',
        drucof: true,
        status: 'failed',
        reportOwed: 'failed',
        lastReply: { code: 554, enhanced: '5.6.3', lines: ['<text@example.net> no conversion makes part 2 (image/png, "p.png") usable by the recipient'] },
      }),
      expect.objectContaining({ address: 'plain@example.net', status: 'queued' }),
    ]);
  });
});
