/**
 * inbound/data-replies.ts: the two wire forms of per-recipient verdicts and the
 * old way (protocols.md A4, A4b) — which replies follow the dot and what is
 * stored. Literal tables, no I/O.
 */
import { describe, expect, it } from 'vitest';
import { noneAccepted, planData, type AcceptedRcpt, type TransactionMode } from '../../src/inbound/data-replies.ts';
import { reply, type Reply } from '../../src/model/reply.ts';
import { formatReply } from '../../src/smtp/reply-format.ts';

const ok = (a: string) => reply(250, 1, 5, `<${a}> accepts the content`);
const no = (a: string) => reply(550, 6, 0, `<${a}> refuses the content`);
const big = (a: string) => reply(552, 2, 3, `<${a}> refuses messages over 10 bytes`);
const later = (a: string) => reply(451, 3, 0, `<${a}> later`);

type V = 'ok' | 'no' | 'big' | 'later';
const make: Record<V, (a: string) => Reply> = { ok, no, big, later };

/** `['p', 250]` = RCPT p answered 250; `['f', 352]` = answered 352. */
function run(mode: TransactionMode, rcpts: [string, 250 | 352][], verdicts: Record<string, V>) {
  const accepted: AcceptedRcpt[] = rcpts.map(([a, c]) => ({ key: a.toLowerCase(), address: a, deferred: c === 352 }));
  const map = new Map(Object.entries(verdicts).map(([a, v]) => [a, make[v](a)]));
  const plan = planData(mode, accepted, map);
  return {
    wire: plan.replies('QID').map((r) => formatReply(r).trimEnd()),
    store: Object.fromEntries([...plan.store].map(([k, s]) => [k, s.kind])),
  };
}

describe('INLINE-DSN (A4)', () => {
  it('the seed dialog: 353, fighter, lover (acceptance order), final 250; postmaster and lover stored', () => {
    expect(run('inline-dsn', [['postmaster', 250], ['fighter', 352], ['lover', 352]], { postmaster: 'ok', fighter: 'no', lover: 'ok' })).toEqual({
      wire: [
        '353 data looks okay but wait for confirmation',
        '550 5.6.0 <fighter> refuses the content',
        '250 2.1.5 <lover> accepts the content',
        '250 2.0.0 [QUEUEID QID] data accepted by some users',
      ],
      store: { postmaster: 'queue', lover: 'queue' },
    });
  });

  it.each([
    // every 352 recipient accepts → one 250
    [[['f', 352], ['l', 352]], { f: 'ok', l: 'ok' }, ['250 2.0.0 [QUEUEID QID] queued'], { f: 'queue', l: 'queue' }],
    [[['p', 250], ['l', 352]], { p: 'ok', l: 'ok' }, ['250 2.0.0 [QUEUEID QID] queued'], { p: 'queue', l: 'queue' }],
    // nobody 250 at RCPT, every 352 one the same verdict → that one reply
    [[['f', 352]], { f: 'no' }, ['550 5.6.0 <f> refuses the content'], {}],
    [[['f', 352], ['g', 352]], { f: 'no', g: 'no' }, ['550 5.6.0 refused by every recipient'], {}],
    [[['f', 352], ['g', 352]], { f: 'later', g: 'later' }, ['451 4.3.0 refused by every recipient'], {}],
    // a 250-at-RCPT recipient forbids the collapse of refusals
    [[['p', 250], ['f', 352]], { p: 'ok', f: 'no' }, ['353 data looks okay but wait for confirmation', '550 5.6.0 <f> refuses the content', '250 2.0.0 [QUEUEID QID] data accepted by some users'], { p: 'queue' }],
    // different verdicts, none accepted: final 550 (all permanent) or 450 (some transient)
    [[['f', 352], ['s', 352]], { f: 'no', s: 'big' }, ['353 data looks okay but wait for confirmation', '550 5.6.0 <f> refuses the content', '552 5.2.3 <s> refuses messages over 10 bytes', '550 5.0.0 no recipient accepted the message'], {}],
    [[['f', 352], ['t', 352]], { f: 'no', t: 'later' }, ['353 data looks okay but wait for confirmation', '550 5.6.0 <f> refuses the content', '451 4.3.0 <t> later', '450 4.3.0 no recipient accepted the message now, try again later'], {}],
    // no 352 given: plain
    [[['p', 250]], { p: 'ok' }, ['250 2.0.0 [QUEUEID QID] queued'], { p: 'queue' }],
  ] as const)('%j with %j → %j', (rcpts, verdicts, wire, store) => {
    expect(run('inline-dsn', rcpts as unknown as [string, 250 | 352][], verdicts)).toEqual({ wire, store });
  });

  it('a recipient answered 250 at RCPT that a source refuses after all is stored failed (its DSN), not itemised', () => {
    expect(run('inline-dsn', [['p', 250], ['f', 352], ['l', 352]], { p: 'no', f: 'no', l: 'ok' })).toEqual({
      wire: ['353 data looks okay but wait for confirmation', '550 5.6.0 <f> refuses the content', '250 2.1.5 <l> accepts the content', '250 2.0.0 [QUEUEID QID] data accepted by some users'],
      store: { p: 'failed', l: 'queue' },
    });
  });

  it('itemises a repeated 352 recipient once per 352, with its first verdict', () => {
    const { wire } = run('inline-dsn', [['f', 352], ['l', 352], ['F', 352]], { f: 'no', l: 'ok' });
    expect(wire).toEqual(['353 data looks okay but wait for confirmation', '550 5.6.0 <f> refuses the content', '250 2.1.5 <l> accepts the content', '550 5.6.0 <f> refuses the content', '250 2.0.0 [QUEUEID QID] data accepted by some users']);
  });
});

describe('PRDR (A4b)', () => {
  it('two or more: 353, a line for every accepted RCPT in RCPT order, final reply', () => {
    expect(run('prdr', [['p', 250], ['f', 250], ['l', 250]], { p: 'ok', f: 'no', l: 'ok' })).toEqual({
      wire: ['353 PRDR content analysis beginning', '250 2.1.5 <p> accepts the content', '550 5.6.0 <f> refuses the content', '250 2.1.5 <l> accepts the content', '250 2.0.0 [QUEUEID QID] accepted for some recipients'],
      store: { p: 'queue', l: 'queue' },
    });
  });

  it.each([
    [[['a', 250], ['b', 250]], { a: 'ok', b: 'ok' }, '250 2.0.0 [QUEUEID QID] accepted for all recipients', { a: 'queue', b: 'queue' }],
    [[['a', 250], ['b', 250]], { a: 'no', b: 'big' }, '550 5.0.0 no recipient accepted the message', {}],
    [[['a', 250], ['b', 250]], { a: 'no', b: 'no' }, '550 5.6.0 no recipient accepted the message', {}],
    [[['a', 250], ['b', 250]], { a: 'later', b: 'no' }, '450 4.3.0 no recipient accepted the message now, try again later', {}],
    [[['a', 250], ['b', 250]], { a: 'later', b: 'ok' }, '250 2.0.0 [QUEUEID QID] accepted for some recipients', { b: 'queue' }],
  ] as const)('%j %j → final %s', (rcpts, verdicts, final, store) => {
    const out = run('prdr', rcpts as unknown as [string, 250 | 352][], verdicts);
    expect(out.wire).toHaveLength(4);
    expect(out.wire[3]).toBe(final);
    expect(out.store).toEqual(store);
  });

  it.each([
    [{ a: 'ok' }, ['250 2.0.0 [QUEUEID QID] queued'], { a: 'queue' }],
    [{ a: 'no' }, ['550 5.6.0 <a> refuses the content'], {}],
    [{ a: 'later' }, ['451 4.3.0 <a> later'], {}],
  ] as const)('one recipient %j: one ordinary reply', (verdicts, wire, store) => {
    expect(run('prdr', [['a', 250]], verdicts)).toEqual({ wire, store });
  });
});

describe('plain (neither): the old way', () => {
  it('queues the message when anyone accepts; the refused are stored failed', () => {
    expect(run('plain', [['f', 250], ['l', 250]], { f: 'no', l: 'ok' })).toEqual({ wire: ['250 2.0.0 [QUEUEID QID] queued'], store: { f: 'failed', l: 'queue' } });
  });

  it('refuses the data when nobody accepts, and stores nothing', () => {
    expect(run('plain', [['f', 250]], { f: 'no' })).toEqual({ wire: ['550 5.6.0 <f> refuses the content'], store: {} });
    expect(run('plain', [['f', 250], ['g', 250]], { f: 'no', g: 'big' })).toEqual({ wire: ['550 5.0.0 no recipient accepted the message'], store: {} });
  });

  it('a recipient without a verdict accepts', () => {
    expect(run('plain', [['x', 250]], {})).toEqual({ wire: ['250 2.0.0 [QUEUEID QID] queued'], store: { x: 'queue' } });
  });
});

describe('noneAccepted', () => {
  it('one verdict stands; same verdicts collapse; mixed: 450 when any transient, else 550', () => {
    expect(noneAccepted([no('a')])).toEqual(no('a'));
    expect(formatReply(noneAccepted([later('a'), no('b')]))).toBe('450 4.3.0 no recipient accepted the message now, try again later\r\n');
  });
});
