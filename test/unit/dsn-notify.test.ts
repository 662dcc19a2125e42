/** dsn/notify: which recipient states call for which report (RFC 3461 §5–6), one table row per rule. */
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/model/envelope.ts';
import type { RecipientState } from '../../src/model/recipient.ts';
import { reply } from '../../src/model/reply.ts';
import { actionOf, groupByAction, markDelayWarned, reportsDue, type DelayTracked, type DsnAction, type ReportItem } from '../../src/dsn/notify.ts';
import { renderReport } from '../../src/dsn/report.ts';
import { simpleParser } from 'mailparser';

const NOW = Date.parse('2026-11-23T12:00:00Z');
const HOUR = 3_600_000;

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'Q1',
    mailFrom: 'sender@example.com',
    body: '7BIT',
    smtpUtf8: false,
    client: { address: '127.0.0.1', helo: 'client.test' },
    receivedAt: new Date(NOW - 5 * HOUR).toISOString(),
    size: 100,
    ...over,
  };
}

function rcpt(over: Partial<DelayTracked> = {}): DelayTracked {
  return { address: 'r@example.org', drucof: false, status: 'queued', attempts: 0, ...over };
}

const ok = reply(250, 0, 0, 'ok');
const perm = reply(550, 1, 1, 'no such user');
const temp = reply(451, 4, 1, 'try later');

interface Row {
  readonly name: string;
  readonly before?: DelayTracked;
  readonly after: DelayTracked;
  readonly env?: Partial<Envelope>;
  readonly delayWarningMs?: number;
  readonly expected: DsnAction | undefined;
  /** The RFC 3464 action (`actionOf`) when it differs from the owed report kept in `reportOwed`. */
  readonly reported?: DsnAction;
}

const rows: Row[] = [
  // failed
  { name: 'failed: newly failed, no NOTIFY (default FAILURE)', after: rcpt({ status: 'failed', lastReply: perm }), expected: 'failed' },
  { name: 'failed: newly failed from deferred, NOTIFY=FAILURE', before: rcpt({ status: 'deferred', notify: ['FAILURE'] }), after: rcpt({ status: 'failed', notify: ['FAILURE'] }), expected: 'failed' },
  { name: 'failed: NOTIFY=SUCCESS,FAILURE', after: rcpt({ status: 'failed', notify: ['SUCCESS', 'FAILURE'] }), expected: 'failed' },
  { name: 'failed: NOTIFY=SUCCESS only → nothing', after: rcpt({ status: 'failed', notify: ['SUCCESS'] }), expected: undefined },
  { name: 'failed: NOTIFY=DELAY only → nothing', after: rcpt({ status: 'failed', notify: ['DELAY'] }), expected: undefined },
  { name: 'failed: NOTIFY=NEVER → nothing', after: rcpt({ status: 'failed', notify: 'NEVER' }), expected: undefined },
  { name: 'failed: already failed before this attempt → nothing', before: rcpt({ status: 'failed' }), after: rcpt({ status: 'failed' }), expected: undefined },
  { name: 'failed: dsnPassedOn does not matter (the hop refused in session)', after: rcpt({ status: 'failed', dsnPassedOn: true }), expected: 'failed' },
  { name: 'failed: no before entry counts as newly failed', before: undefined, after: rcpt({ status: 'failed' }), expected: 'failed' },
  { name: 'failed: null sender → nothing', after: rcpt({ status: 'failed' }), env: { mailFrom: '' }, expected: undefined },
  // delayed
  { name: 'delayed: deferred, NOTIFY=DELAY, old enough', after: rcpt({ status: 'deferred', notify: ['DELAY'], lastReply: temp }), expected: 'delayed' },
  { name: 'delayed: NOTIFY=FAILURE,DELAY', after: rcpt({ status: 'deferred', notify: ['FAILURE', 'DELAY'] }), expected: 'delayed' },
  { name: 'delayed: still deferred from an earlier attempt, not yet warned', before: rcpt({ status: 'deferred', notify: ['DELAY'] }), after: rcpt({ status: 'deferred', notify: ['DELAY'] }), expected: 'delayed' },
  { name: 'delayed: exactly at the warning age', after: rcpt({ status: 'deferred', notify: ['DELAY'] }), env: { receivedAt: new Date(NOW - HOUR).toISOString() }, delayWarningMs: HOUR, expected: 'delayed' },
  { name: 'delayed: younger than the warning age → nothing', after: rcpt({ status: 'deferred', notify: ['DELAY'] }), env: { receivedAt: new Date(NOW - HOUR + 1).toISOString() }, delayWarningMs: HOUR, expected: undefined },
  { name: 'delayed: no NOTIFY (DELAY not asked explicitly) → nothing', after: rcpt({ status: 'deferred' }), expected: undefined },
  { name: 'delayed: NOTIFY=FAILURE → nothing', after: rcpt({ status: 'deferred', notify: ['FAILURE'] }), expected: undefined },
  { name: 'delayed: NOTIFY=NEVER → nothing', after: rcpt({ status: 'deferred', notify: 'NEVER' }), expected: undefined },
  { name: 'delayed: already warned (after) → nothing', after: rcpt({ status: 'deferred', notify: ['DELAY'], delayWarned: true }), expected: undefined },
  { name: 'delayed: already warned (before) → nothing', before: rcpt({ status: 'deferred', notify: ['DELAY'], delayWarned: true }), after: rcpt({ status: 'deferred', notify: ['DELAY'] }), expected: undefined },
  { name: 'delayed: delayWarningMs 0 turns warnings off', after: rcpt({ status: 'deferred', notify: ['DELAY'] }), delayWarningMs: 0, expected: undefined },
  { name: 'delayed: delayWarningMs Infinity turns warnings off', after: rcpt({ status: 'deferred', notify: ['DELAY'] }), delayWarningMs: Infinity, expected: undefined },
  { name: 'delayed: unparsable receivedAt → nothing', after: rcpt({ status: 'deferred', notify: ['DELAY'] }), env: { receivedAt: 'yesterday' }, expected: undefined },
  { name: 'delayed: queued (not yet attempted) → nothing', after: rcpt({ status: 'queued', notify: ['DELAY'] }), expected: undefined },
  { name: 'delayed: null sender → nothing', after: rcpt({ status: 'deferred', notify: ['DELAY'] }), env: { mailFrom: '' }, expected: undefined },
  // relayed
  { name: 'relayed: newly relayed, SUCCESS, hop without DSN', after: rcpt({ status: 'relayed', notify: ['SUCCESS'], dsnPassedOn: false, lastReply: ok }), expected: 'relayed' },
  { name: 'relayed: dsnPassedOn absent counts as not passed on', after: rcpt({ status: 'relayed', notify: ['SUCCESS', 'FAILURE'] }), expected: 'relayed' },
  { name: 'relayed: request travelled on (hop has DSN) → nothing', after: rcpt({ status: 'relayed', notify: ['SUCCESS'], dsnPassedOn: true }), expected: undefined },
  { name: 'relayed: no NOTIFY → nothing', after: rcpt({ status: 'relayed', dsnPassedOn: false }), expected: undefined },
  { name: 'relayed: NOTIFY=FAILURE,DELAY → nothing', after: rcpt({ status: 'relayed', notify: ['FAILURE', 'DELAY'], dsnPassedOn: false }), expected: undefined },
  { name: 'relayed: NOTIFY=NEVER → nothing', after: rcpt({ status: 'relayed', notify: 'NEVER', dsnPassedOn: false }), expected: undefined },
  { name: 'relayed: already relayed before → nothing', before: rcpt({ status: 'relayed', notify: ['SUCCESS'] }), after: rcpt({ status: 'relayed', notify: ['SUCCESS'] }), expected: undefined },
  { name: 'relayed: from deferred', before: rcpt({ status: 'deferred', notify: ['SUCCESS'] }), after: rcpt({ status: 'relayed', notify: ['SUCCESS'] }), expected: 'relayed' },
  { name: 'relayed: relayed-with-drucof counts as relayed', after: rcpt({ status: 'relayed-with-drucof', notify: ['SUCCESS'] }), expected: 'relayed' },
  { name: 'relayed: converted-and-relayed counts as relayed', after: rcpt({ status: 'converted-and-relayed', notify: ['SUCCESS'] }), expected: 'relayed' },
  { name: 'relayed: converted-and-relayed is reported relayed, never delivered', after: rcpt({ status: 'converted-and-relayed', notify: ['SUCCESS'], dsnPassedOn: false }), expected: 'relayed', reported: 'relayed' },
  // delivered (the relay was the final hop: a Maildir, an LMTP agent): owed as the success report, reported as delivered
  { name: 'delivered: newly delivered, SUCCESS → a delivered report', after: rcpt({ status: 'delivered', notify: ['SUCCESS'], dsnPassedOn: false, lastReply: ok }), expected: 'relayed', reported: 'delivered' },
  { name: 'delivered: from deferred', before: rcpt({ status: 'deferred', notify: ['SUCCESS', 'FAILURE'] }), after: rcpt({ status: 'delivered', notify: ['SUCCESS', 'FAILURE'] }), expected: 'relayed', reported: 'delivered' },
  { name: 'delivered: an LMTP agent that took the DSN request on reports itself → nothing', after: rcpt({ status: 'delivered', notify: ['SUCCESS'], dsnPassedOn: true }), expected: undefined },
  { name: 'delivered: no NOTIFY → nothing', after: rcpt({ status: 'delivered' }), expected: undefined },
  { name: 'delivered: already delivered before → nothing', before: rcpt({ status: 'delivered', notify: ['SUCCESS'] }), after: rcpt({ status: 'delivered', notify: ['SUCCESS'] }), expected: undefined },
  { name: 'delivered: null sender → nothing', after: rcpt({ status: 'delivered', notify: ['SUCCESS'] }), env: { mailFrom: '' }, expected: undefined },
  { name: 'relayed: null sender → nothing', after: rcpt({ status: 'relayed', notify: ['SUCCESS'] }), env: { mailFrom: '' }, expected: undefined },
  // nothing happened
  { name: 'queued stays queued → nothing', after: rcpt({ notify: ['SUCCESS', 'FAILURE', 'DELAY'] }), expected: undefined },
];

describe('reportsDue', () => {
  it.each(rows)('$name', ({ before, after, env, delayWarningMs, expected, reported }) => {
    const items = reportsDue(envelope(env), before ? [before] : [], [after], { delayWarningMs: delayWarningMs ?? 4 * HOUR, now: NOW });
    if (expected === undefined) expect(items).toEqual([]);
    else {
      expect(items).toEqual([{ index: 0, recipient: after, action: expected }]);
      expect(actionOf(items[0]!)).toBe(reported ?? expected);
    }
  });

  it('reports each recipient with its index, in recipient order, across actions', () => {
    const before = [
      rcpt({ address: 'a@x.test' }),
      rcpt({ address: 'b@x.test', notify: ['SUCCESS'] }),
      rcpt({ address: 'c@x.test', notify: ['DELAY'] }),
      rcpt({ address: 'd@x.test', notify: 'NEVER' }),
      rcpt({ address: 'e@x.test' }),
    ];
    const after = [
      { ...before[0]!, status: 'failed', lastReply: perm },
      { ...before[1]!, status: 'relayed', dsnPassedOn: false },
      { ...before[2]!, status: 'deferred', lastReply: temp },
      { ...before[3]!, status: 'failed', lastReply: perm },
      { ...before[4]!, status: 'failed', lastReply: perm },
    ] satisfies RecipientState[];
    const items = reportsDue(envelope(), before, after, { delayWarningMs: HOUR, now: NOW });
    expect(items.map((i) => [i.index, i.recipient.address, i.action])).toEqual([
      [0, 'a@x.test', 'failed'],
      [1, 'b@x.test', 'relayed'],
      [2, 'c@x.test', 'delayed'],
      [4, 'e@x.test', 'failed'],
    ]);
    expect(groupByAction(items).map((g) => [g.action, g.items.map((i) => i.index)])).toEqual([
      ['failed', [0, 4]],
      ['delayed', [2]],
      ['relayed', [1]],
    ]);
  });

  it('delivered and relayed recipients of one message get separate success reports (delivered first)', () => {
    const before = [rcpt({ address: 'a@x.test', notify: ['SUCCESS'] }), rcpt({ address: 'b@x.test', notify: ['SUCCESS'] }), rcpt({ address: 'c@x.test', notify: ['SUCCESS'] })];
    const after = [
      { ...before[0]!, status: 'relayed', dsnPassedOn: false },
      { ...before[1]!, status: 'delivered', dsnPassedOn: false },
      { ...before[2]!, status: 'failed', lastReply: perm },
    ] satisfies RecipientState[];
    const items = reportsDue(envelope(), before, after, { delayWarningMs: HOUR, now: NOW });
    expect(items.map((i) => [i.index, i.action, actionOf(i)])).toEqual([
      [0, 'relayed', 'relayed'],
      [1, 'relayed', 'delivered'],
    ]);
    expect(groupByAction(items).map((g) => [g.action, g.items.map((i) => i.index)])).toEqual([
      ['delivered', [1]],
      ['relayed', [0]],
    ]);
  });

  it('renders a delivered report: Action delivered, Status 2.x.x, no Remote-MTA for a Maildir, headers returned', async () => {
    const r = rcpt({ status: 'delivered', notify: ['SUCCESS'], dsnPassedOn: false, lastReply: reply(250, 0, 0, '<r@example.org> delivered to its Maildir'), lastAttemptAt: '2026-11-23T11:59:00Z' });
    const original = Buffer.from('Subject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nbody\r\n');
    // As the worker hands it over: the owed report kept in reportOwed.
    const item: ReportItem = { index: 0, recipient: r, action: 'relayed' };
    const report = await renderReport({ reportingMta: 'relay.test', envelope: envelope(), items: [item], originalMessage: original, now: new Date(NOW) });
    const mail = await simpleParser(report.raw, { keepDeliveryStatus: true });
    expect(mail.subject).toBe('Delivery Status Notification (Success)');
    expect(mail.text).toContain('delivered to the mailbox');
    const ds = mail.attachments.find((a) => a.contentType === 'message/delivery-status')!.content.toString('latin1');
    expect(ds).toContain('Action: delivered\r\nStatus: 2.0.0\r\n');
    expect(ds).not.toContain('Remote-MTA');
    expect(mail.attachments.map((a) => a.contentType)).toEqual(['message/delivery-status', 'text/rfc822-headers']);
    // The item may also say delivered itself.
    const direct = await renderReport({ reportingMta: 'relay.test', envelope: envelope(), items: [{ ...item, action: 'delivered' }], originalMessage: original, now: new Date(NOW) });
    expect(direct.raw.toString('latin1')).toContain('Action: delivered');
    // A report does not mix actions.
    await expect(renderReport({ reportingMta: 'relay.test', envelope: envelope(), items: [item, { index: 1, recipient: rcpt({ status: 'relayed' }), action: 'relayed' }], originalMessage: original, now: new Date(NOW) })).rejects.toThrow(/share an action/);
  });

  it('warns of a delay only once: markDelayWarned sets the flag that stops the next warning', () => {
    const states = [rcpt({ address: 'a@x.test', status: 'deferred', notify: ['DELAY'] }), rcpt({ address: 'b@x.test', status: 'deferred' })];
    const first = reportsDue(envelope(), states, states, { delayWarningMs: HOUR, now: NOW });
    expect(first.map((i) => [i.index, i.action])).toEqual([[0, 'delayed']]);
    const marked = markDelayWarned(states, first);
    expect(marked[0]).toEqual({ ...states[0], delayWarned: true });
    expect(marked[1]).toBe(states[1]);
    expect(reportsDue(envelope(), marked, marked, { delayWarningMs: HOUR, now: NOW + HOUR })).toEqual([]);
  });

  it('a message from the null sender never gets a report, whatever happened', () => {
    const after = [
      rcpt({ status: 'failed', notify: ['FAILURE'] }),
      rcpt({ status: 'deferred', notify: ['DELAY'] }),
      rcpt({ status: 'relayed', notify: ['SUCCESS'] }),
    ];
    expect(reportsDue(envelope({ mailFrom: '' }), [], after, { delayWarningMs: HOUR, now: NOW })).toEqual([]);
  });
});
