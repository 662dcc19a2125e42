/** smtp/reply-format.ts: Reply ⇄ wire lines (RFC 5321 §4.2, RFC 2034, protocols.md A9 tags). */
import { describe, expect, it } from 'vitest';
import { reply, withTags, type Reply } from '../../src/model/reply.ts';
import { formatReply, formatTextLines, parseReply } from '../../src/smtp/reply-format.ts';
import { status } from '../../src/smtp/status.ts';

describe('formatReply', () => {
  it.each<[string, Reply, string]>([
    ['single line', reply(250, 1, 5, 'recipient ok'), '250 2.1.5 recipient ok\r\n'],
    ['queue id tag', status.queued('01ABC'), '250 2.0.0 [QUEUEID 01ABC] queued\r\n'],
    ['retry-after tag', status.storageUnavailable(), '451 4.3.0 [RETRY-AFTER 60] queue storage unavailable, try again later\r\n'],
    ['both tags, fixed order', withTags(reply(451, 3, 0, 'x'), { retryAfter: 5, queueId: 'Q' }), '451 4.3.0 [QUEUEID Q] [RETRY-AFTER 5] x\r\n'],
    ['multi-line repeats the enhanced code (RFC 2034 §3)', reply(250, 1, 5, 'a', 'b', 'c'), '250-2.1.5 a\r\n250-2.1.5 b\r\n250 2.1.5 c\r\n'],
    ['tags only on the first line', withTags(reply(250, 0, 0, 'a', 'b'), { queueId: 'Q' }), '250-2.0.0 [QUEUEID Q] a\r\n250 2.0.0 b\r\n'],
    ['3xx has no enhanced code', reply(354, 0, 0, 'go ahead'), '354 go ahead\r\n'],
    ['352 multi-line', reply(352, 0, 0, 'wait', 'for it'), '352-wait\r\n352 for it\r\n'],
    ['empty text', reply(250, 0, 0), '250 2.0.0\r\n'],
    ['no enhanced code (peer reply)', { code: 220, lines: ['hello'] }, '220 hello\r\n'],
  ])('%s', (_name, r, wire) => {
    expect(formatReply(r)).toBe(wire);
  });

  it('formatTextLines gives the text after the basic code, per line', () => {
    expect(formatTextLines(status.queued('X'))).toEqual(['2.0.0 [QUEUEID X] queued']);
    expect(formatTextLines(reply(550, 7, 1, 'a', 'b'))).toEqual(['5.7.1 a', '5.7.1 b']);
  });
});

describe('parseReply', () => {
  it.each<[string, string | string[], Reply | undefined]>([
    ['plain', '250 ok', { code: 250, lines: ['ok'] }],
    ['enhanced', '550 5.7.1 relay denied', { code: 550, enhanced: '5.7.1', lines: ['relay denied'] }],
    ['queue id', '250 2.0.0 [QUEUEID 01J9] queued', { code: 250, enhanced: '2.0.0', lines: ['queued'], tags: { queueId: '01J9' } }],
    ['retry-after', '451 4.3.0 [RETRY-AFTER 60] later', { code: 451, enhanced: '4.3.0', lines: ['later'], tags: { retryAfter: 60 } }],
    ['tags case-insensitive, any order', '451 4.3.0 [retry-after 7] [queueid q] x', { code: 451, enhanced: '4.3.0', lines: ['x'], tags: { retryAfter: 7, queueId: 'q' } }],
    ['non-numeric retry-after ignored', '451 4.3.0 [RETRY-AFTER soon] x', { code: 451, enhanced: '4.3.0', lines: ['x'] }],
    ['tag without enhanced code', '250 [QUEUEID Z] ok', { code: 250, lines: ['ok'], tags: { queueId: 'Z' } }],
    ['multi-line with CRLF', '250-2.1.5 a\r\n250-2.1.5 b\r\n250 2.1.5 c\r\n', { code: 250, enhanced: '2.1.5', lines: ['a', 'b', 'c'] }],
    ['multi-line as array', ['250-first', '250 last'], { code: 250, lines: ['first', 'last'] }],
    ['a tag on a later line is text', ['250-2.0.0 a', '250 2.0.0 [QUEUEID Q] b'], { code: 250, enhanced: '2.0.0', lines: ['a', '[QUEUEID Q] b'] }],
    ['enhanced of the wrong class is text', '250 5.1.1 odd', { code: 250, lines: ['5.1.1 odd'] }],
    ['enhanced normalised', '250 2.01.005 x', { code: 250, enhanced: '2.1.5', lines: ['x'] }],
    ['3xx enhanced-looking text stays text', '354 2.0.0 go', { code: 354, lines: ['2.0.0 go'] }],
    ['bare code', '250', { code: 250, lines: [''] }],
    ['mixed codes', ['250-a', '251 b'], undefined],
    ['continuation missing', ['250 a', '250 b'], undefined],
    ['no code', 'hello', undefined],
    ['code out of range', '199 x', undefined],
    ['empty', '', undefined],
  ])('%s', (_name, wire, expected) => {
    expect(parseReply(wire)).toEqual(expected);
  });
});

describe('format ∘ parse = identity', () => {
  it.each<[string, Reply]>([
    ['queued', status.queued('01J9ZZ')],
    ['storage unavailable', status.storageUnavailable(120)],
    ['relay denied', status.relayDenied(550)],
    ['multi-line', reply(250, 1, 5, '<a@x> recipient ok', 'CONNEG (type="text/plain")')],
    ['352', reply(352, 0, 0, 'recipient looks okay but wait for confirmation')],
    ['353', reply(353, 0, 0, 'data looks okay but wait for confirmation')],
    ['empty text', reply(221, 0, 0)],
  ])('%s', (_name, r) => {
    expect(parseReply(formatReply(r))).toEqual(r);
  });

  // A small deterministic generator instead of a property-test library.
  function rng(seed: number): () => number {
    let s = seed >>> 0;
    return () => {
      s = (s * 1664525 + 1013904223) >>> 0;
      return s / 2 ** 32;
    };
  }
  const words = ['ok', 'queued', 'user', '<a@b.test>', 'x=y', '(paren)', 'über', 'trailing ', 'a  b', '[bracket]', 'CONNEG', '5', '-'];

  it('holds for 500 generated replies, and the enhanced class always equals the basic class', () => {
    const rand = rng(42);
    const pick = <T,>(a: readonly T[]): T => a[Math.floor(rand() * a.length)]!;
    for (let n = 0; n < 500; n++) {
      const code = pick([211, 214, 220, 221, 235, 250, 251, 252, 334, 352, 353, 354, 421, 450, 451, 452, 454, 500, 501, 503, 504, 530, 535, 550, 552, 553, 554, 555]);
      const lines = Array.from({ length: 1 + Math.floor(rand() * 3) }, () =>
        Array.from({ length: Math.floor(rand() * 4) }, () => pick(words)).join(' ').replace(/^[\s[]+/, ''),
      );
      let r = reply(code, Math.floor(rand() * 8), Math.floor(rand() * 20), ...lines);
      if (code >= 400 && rand() < 0.3) r = withTags(r, { retryAfter: Math.floor(rand() * 1000) });
      if (code === 250 && rand() < 0.3) r = withTags(r, { queueId: `Q${n}` });
      const wire = formatReply(r);
      const back = parseReply(wire);
      expect(back, wire).toEqual(r);
      if (back?.enhanced) expect(Number(back.enhanced[0])).toBe(Math.floor(back.code / 100));
    }
  });
});
