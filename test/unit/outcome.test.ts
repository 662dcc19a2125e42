import { describe, expect, it } from 'vitest';
import { reply } from '../../src/model/reply.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import { afterAttempt, expired } from '../../src/relay/outcome.ts';

const facts = { now: '2026-11-23T10:00:00.000Z', remoteMta: 'hop.test', dsnPassedOn: true };

describe('afterAttempt', () => {
  it.each([
    [reply(250, 0, 0, 'ok'), 'relayed'],
    [reply(251, 1, 5, 'will forward'), 'relayed'],
    [reply(451, 4, 3, 'try later'), 'deferred'],
    [{ code: 421, lines: ['closing'] }, 'deferred'],
    [reply(550, 1, 1, 'no such user'), 'failed'],
    [{ code: 554, lines: ['no'] }, 'failed'],
  ] as const)('%o → %s', (r, status) => {
    const s = afterAttempt(newRecipient('a@b.test'), r, facts);
    expect(s.status).toBe(status);
    expect(s.attempts).toBe(1);
    expect(s.lastReply).toEqual(r);
    expect(s.remoteMta).toBe('hop.test');
  });

  it('clears the retry time once final', () => {
    const deferred = { ...newRecipient('a@b.test'), status: 'deferred' as const, nextAttemptAt: 'x', attempts: 2 };
    const s = afterAttempt(deferred, reply(250, 0, 0, 'ok'), facts);
    expect(s.nextAttemptAt).toBeUndefined();
    expect(s.attempts).toBe(3);
    expect(s.dsnPassedOn).toBe(true);
  });
});

describe('afterAttempt at a final hop (Maildir, LMTP)', () => {
  const final = { ...facts, dsnPassedOn: false, finalHop: true };
  it.each([
    [reply(250, 0, 0, 'delivered'), 'delivered'],
    [reply(452, 3, 1, 'mail system full'), 'deferred'],
    [reply(550, 1, 3, 'bad local part'), 'failed'],
  ] as const)('%o → %s', (r, status) => expect(afterAttempt(newRecipient('a@b.test'), r, final).status).toBe(status));

  it('delivered is final and keeps dsnPassedOn as the hop gave it', () => {
    const s = afterAttempt({ ...newRecipient('a@b.test'), status: 'deferred', nextAttemptAt: 'x', attempts: 1 }, reply(250, 0, 0, 'ok'), final);
    expect(s).toMatchObject({ status: 'delivered', attempts: 2, dsnPassedOn: false });
    expect(s.nextAttemptAt).toBeUndefined();
  });

  it('a hop that is not final still only relays', () => expect(afterAttempt(newRecipient('a@b.test'), reply(250, 0, 0, 'ok'), { ...facts, finalHop: false }).status).toBe('relayed'));
});

describe('expired', () => {
  it('fails with 4.4.7 and keeps the last reply in the text', () => {
    const s = expired({ ...newRecipient('a@b.test'), status: 'deferred', lastReply: reply(451, 4, 1, 'refused') }, '5 days');
    expect(s.status).toBe('failed');
    expect(s.lastReply?.enhanced).toBe('4.4.7');
    expect(s.lastReply?.lines.join(' ')).toContain('451 4.4.1 refused');
  });
});
