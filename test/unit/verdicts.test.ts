/**
 * inbound/verdicts.ts: the per-recipient verdict engine and the config policies
 * as a source (protocols.md A4, A10). Table-driven, no I/O.
 */
import { describe, expect, it } from 'vitest';
import {
  VerdictEngine,
  containsWord,
  policySource,
  refusalReply,
  typeMatches,
  type MessageFacts,
  type VerdictSource,
} from '../../src/inbound/verdicts.ts';
import { reply } from '../../src/model/reply.ts';

const policies = {
  'postmaster@example.net': { acceptAll: true },
  'old-user@example.net': { refuse: '550 5.1.1 this recipient no longer exists' },
  'fighter@example.net': { refuseWords: ['fight'] },
  '*@example.net': { maxSize: 1000, refuseTypes: ['application/x-msdownload', 'video/*'] },
  'both@example.net': { acceptAll: true, refuseWords: ['x'] },
  'empty@example.net': {},
  'refuse-first@example.net': { refuse: '450 4.2.1 mailbox busy', acceptAll: true },
};
const engine = new VerdictEngine([policySource(policies)]);
const r = (address: string, drucof = false) => ({ address, drucof });
const facts = (over: Partial<MessageFacts> = {}): MessageFacts => ({ raw: Buffer.alloc(0), size: 100, texts: ['hello world'], types: ['text/plain'], ...over });
const show = (x: { code: number; enhanced?: string; lines: readonly string[] }) => [x.code, x.enhanced, ...x.lines].filter(Boolean).join(' ');

describe('atRcpt', () => {
  it.each([
    ['postmaster@example.net', 'accept', '250 2.1.5 this recipient accepts all messages', false],
    ['old-user@example.net', 'refuse', '550 5.1.1 this recipient no longer exists', undefined],
    ['fighter@example.net', 'accept', '250 2.1.5 recipient ok', true],
    ['lover@example.net', 'accept', '250 2.1.5 recipient ok', true], // *@example.net has content rules
    ['someone@example.com', 'accept', '250 2.1.5 recipient ok', false], // no entry
    ['both@example.net', 'accept', '250 2.1.5 this recipient accepts all messages', false], // acceptAll wins
    ['empty@example.net', 'accept', '250 2.1.5 recipient ok', false], // an exact entry without rules replaces the domain's
    ['refuse-first@example.net', 'refuse', '450 4.2.1 mailbox busy', undefined],
  ])('%s → %s %s (depends on content: %s)', async (address, kind, text, depends) => {
    const d = await engine.atRcpt(r(address));
    expect(d.kind).toBe(kind);
    expect(show(d.reply)).toBe(text);
    if (d.kind === 'accept') expect(d.dependsOnContent).toBe(depends);
  });

  it('the first refusing source decides; content from any source; accept text from the first that has one', async () => {
    const a: VerdictSource = { name: 'a', atRcpt: () => ({ kind: 'accept', text: 'from a' }), afterData: () => undefined };
    const c: VerdictSource = { name: 'c', atRcpt: () => ({ kind: 'content' }), afterData: () => undefined };
    const no: VerdictSource = { name: 'no', atRcpt: () => ({ kind: 'refuse', reply: reply(550, 7, 1, 'no') }), afterData: () => undefined };
    expect(await new VerdictEngine([a, c]).atRcpt(r('x@y'))).toEqual({ kind: 'accept', reply: reply(250, 1, 5, 'from a'), dependsOnContent: true });
    expect(await new VerdictEngine([a, c, no]).atRcpt(r('x@y'))).toEqual({ kind: 'refuse', reply: reply(550, 7, 1, 'no') });
    expect(await new VerdictEngine([]).atRcpt(r('x@y'))).toEqual({ kind: 'accept', reply: reply(250, 1, 5, 'recipient ok'), dependsOnContent: false });
  });
});

describe('afterData (policies)', () => {
  it.each([
    ['fighter@example.net', facts({ texts: ['We FIGHT!'] }), '550 5.6.0 <fighter@example.net> refuses the content'],
    ['fighter@example.net', facts({ texts: ['a fighter, fighting'] }), '250 2.1.5 <fighter@example.net> accepts the content'],
    ['fighter@example.net', facts({ size: 10_000_000, texts: ['peace'] }), '250 2.1.5 <fighter@example.net> accepts the content'], // exact entry: no domain maxSize
    ['lover@example.net', facts({ size: 1001 }), '552 5.2.3 <lover@example.net> refuses messages over 1000 bytes'],
    ['lover@example.net', facts({ size: 1000 }), '250 2.1.5 <lover@example.net> accepts the content'],
    ['lover@example.net', facts({ types: ['multipart/mixed', 'text/plain', 'application/x-msdownload'] }), '550 5.6.1 <lover@example.net> refuses content of type application/x-msdownload'],
    ['lover@example.net', facts({ types: ['video/mp4'] }), '550 5.6.1 <lover@example.net> refuses content of type video/mp4'],
    ['lover@example.net', facts({ texts: ['fight'] }), '250 2.1.5 <lover@example.net> accepts the content'],
    ['lover@example.net', facts({ size: 5000, types: ['video/mp4'] }), '552 5.2.3 <lover@example.net> refuses messages over 1000 bytes'], // size first
    ['postmaster@example.net', facts({ size: 1e9, types: ['video/mp4'] }), '250 2.1.5 <postmaster@example.net> accepts the content'],
    ['someone@example.com', facts(), '250 2.1.5 <someone@example.com> accepts the content'],
  ])('%s %j → %s', async (address, f, expected) => {
    expect(show((await engine.afterData([r(address)], f)).get(address)!)).toBe(expected);
  });

  it('keys the map by the address as given, one entry per recipient', async () => {
    const m = await engine.afterData([r('Fighter@Example.NET'), r('lover@example.net')], facts({ texts: ['fight'] }));
    expect([...m.keys()]).toEqual(['Fighter@Example.NET', 'lover@example.net']);
    expect(show(m.get('Fighter@Example.NET')!)).toBe('550 5.6.0 <Fighter@Example.NET> refuses the content');
  });

  it('needsFacts only when some recipient has a content rule (as its disposition at RCPT said)', async () => {
    // The transaction remembers each recipient's disposition; needsFacts reads only that.
    const judged = (address: string) => engine.atRcpt(r(address)).then((d) => ({ ...r(address), dependsOnContent: d.kind === 'accept' && d.dependsOnContent }));
    expect(engine.needsFacts(await Promise.all([judged('postmaster@example.net'), judged('someone@example.com')]))).toBe(false);
    expect(engine.needsFacts(await Promise.all([judged('postmaster@example.net'), judged('fighter@example.net')]))).toBe(true);
    expect(engine.needsFacts([r('fighter@example.net')])).toBe(false); // not remembered as such: no source is asked again
  });
});

describe('more sources (the DRUCOF fail-fast hook of issue 6)', () => {
  const failFast: VerdictSource = {
    name: 'drucof',
    atRcpt: (x) => (x.drucof ? { kind: 'content' } : undefined),
    afterData: (x) => (x.drucof ? reply(554, 6, 3, 'conversion required but not supported') : undefined),
  };
  const transient: VerdictSource = { name: 't', atRcpt: () => undefined, afterData: () => reply(451, 3, 0, 'later') };

  it('a DRUCOF recipient depends on the content and gets the source verdict', async () => {
    const e = new VerdictEngine([policySource(policies), failFast]);
    const d = await e.atRcpt(r('someone@example.com', true));
    expect(d).toMatchObject({ kind: 'accept', dependsOnContent: true });
    expect(show((await e.afterData([r('someone@example.com', true)], facts())).get('someone@example.com')!)).toBe(
      '554 5.6.3 <someone@example.com> conversion required but not supported',
    );
  });

  it('a permanent refusal beats a transient one whichever comes first; between equals the first wins', async () => {
    const e = new VerdictEngine([transient, policySource(policies)]);
    expect(show((await e.afterData([r('fighter@example.net')], facts({ texts: ['fight'] }))).get('fighter@example.net')!)).toBe('550 5.6.0 <fighter@example.net> refuses the content');
    expect(show((await e.afterData([r('someone@example.com')], facts())).get('someone@example.com')!)).toBe('451 4.3.0 <someone@example.com> later');
    const e2 = new VerdictEngine([policySource(policies), failFast]);
    expect(show((await e2.afterData([r('fighter@example.net', true)], facts({ texts: ['fight'] }))).get('fighter@example.net')!)).toBe('550 5.6.0 <fighter@example.net> refuses the content');
  });

  it('asynchronous sources: answers in promises, weighed in source order whatever order they arrive in', async () => {
    const later = <T>(ms: number, v: T) => new Promise<T>((resolve) => setTimeout(() => resolve(v), ms));
    const slowNo: VerdictSource = { name: 'slow', atRcpt: () => later(20, { kind: 'content' as const }), afterData: () => later(20, reply(554, 6, 3, 'slow says no')) };
    const fastNo: VerdictSource = { name: 'fast', atRcpt: () => later(1, undefined), afterData: () => later(1, reply(550, 6, 0, 'fast says no')) };
    const e = new VerdictEngine([slowNo, fastNo]);
    expect(await e.atRcpt(r('x@y'))).toEqual({ kind: 'accept', reply: reply(250, 1, 5, 'recipient ok'), dependsOnContent: true });
    const m = await e.afterData([r('x@y'), r('z@y')], facts());
    expect([...m.values()].map(show)).toEqual(['554 5.6.3 <x@y> slow says no', '554 5.6.3 <z@y> slow says no']);
    const refusing = new VerdictEngine([{ ...fastNo, atRcpt: () => later(1, { kind: 'refuse' as const, reply: reply(550, 7, 1, 'no') }) }, slowNo]);
    expect(await refusing.atRcpt(r('x@y'))).toEqual({ kind: 'refuse', reply: reply(550, 7, 1, 'no') });
  });

  it('a source that rejects makes the engine reject (the caller answers 451)', async () => {
    const broken: VerdictSource = { name: 'broken', atRcpt: () => Promise.reject(new Error('down')), afterData: () => Promise.reject(new Error('down')) };
    const e = new VerdictEngine([policySource(policies), broken]);
    await expect(e.atRcpt(r('x@y'))).rejects.toThrow('down');
    await expect(e.afterData([r('x@y')], facts())).rejects.toThrow('down');
  });
});

describe('refusalReply (the configured `refuse`)', () => {
  it.each([
    ['550 5.1.1 this recipient no longer exists', '550 5.1.1 this recipient no longer exists'],
    ['  450 4.2.1 busy  ', '450 4.2.1 busy'],
    ['550 gone', '550 5.7.1 gone'],
    ['553 4.1.1 class mismatch', '553 5.7.1 4.1.1 class mismatch'], // an enhanced code of the wrong class is text
    ['no longer here', '550 5.7.1 no longer here'],
    ['250 2.0.0 ok', '550 5.7.1 250 2.0.0 ok'], // a positive reply is no refusal
    ['', '550 5.7.1 recipient refused'],
  ])('%j → %s', (text, expected) => {
    expect(show(refusalReply(text))).toBe(expected);
  });
});

describe('word and type matching', () => {
  it.each([
    ['fight', 'Fight!', true],
    ['fight', 'a FIGHT.', true],
    ['fight', 'fighter', false],
    ['fight', 'prefight', false],
    ['fight', 'fight_club', false],
    ['fight', 'no-fight-zone', true],
    ['café', 'un CAFÉ noir', true],
    ['café', 'cafés', false],
    ['a.b', 'aXb', false], // regex characters are literal
    ['a.b', 'x a.b y', true],
    ['', 'anything', false],
  ])('containsWord(%j in %j) = %s', (word, text, hit) => {
    expect(containsWord(text, word)).toBe(hit);
  });

  it.each([
    ['application/x-msdownload', 'Application/X-MSDownload', true],
    ['image/png', 'image/*', true],
    ['imagex/png', 'image/*', false],
    ['image/png', 'image/jpeg', false],
  ])('typeMatches(%s, %s) = %s', (type, pattern, hit) => {
    expect(typeMatches(type, pattern)).toBe(hit);
  });
});
