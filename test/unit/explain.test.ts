/** `drucof-relay explain`: the pure formatter, state → lines, for every branch, source, plan action and record. */
import { describe, expect, it } from 'vitest';
import {
  BRANCH_EXPLANATIONS,
  NO_DRUCOF,
  SOURCE_NAMES,
  capabilitiesText,
  conversionLines,
  explainMessage,
  explainRecipient,
  planLines,
} from '../../src/cli/explain.ts';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import type { DecisionBranch } from '../../src/model/decision.ts';
import type { Envelope } from '../../src/model/envelope.ts';
import type { ConversionRecord, PlanSummary } from '../../src/model/plan.ts';
import type { DrucofTrace, RecipientState } from '../../src/model/recipient.ts';
import { reply } from '../../src/model/reply.ts';

const AT = '2026-11-23T10:00:00.000Z';
const EXPR = '(& (type="image/jpeg") (pix-x<=1024))';
const known = (source: 'config' | 'conneg' | 'srv' | 'cache'): CapabilityAnswer => ({ kind: 'known', expression: EXPR, source });

const usablePlan: PlanSummary = {
  target: EXPR,
  possible: true,
  loss: 32,
  parts: [
    { path: '1', type: 'text/plain', action: 'keep', usable: true },
    { path: '2', type: 'image/png', action: 'convert', chain: ['sharp/png-to-jpeg'], loss: 32 },
  ],
};

const record: ConversionRecord = {
  host: 'relay.test',
  date: 'Mon, 23 Nov 2026 10:00:00 +0000',
  loss: 32,
  parts: [
    {
      path: '2',
      before: { type: 'image/png', 'pix-x': 2048, 'pix-y': 1536, color: 'full' },
      after: { type: 'image/jpeg', 'pix-x': 1024, 'pix-y': 768, color: 'full' },
      chain: ['sharp/png-to-jpeg'],
      loss: 32,
    },
  ],
};

function trace(branch: DecisionBranch, over: Partial<DrucofTrace> = {}): DrucofTrace {
  return { branch, hop: 'route:example.net', hopExtensions: ['CONNEG', 'DRUCOF'], capabilities: { kind: 'unknown' }, at: AT, ...over };
}

function rcpt(over: Partial<RecipientState> = {}): RecipientState {
  return {
    address: 'fax@example.net',
    drucof: true,
    status: 'relayed-with-drucof',
    attempts: 1,
    lastAttemptAt: AT,
    lastReply: reply(250, 0, 0, 'ok'),
    remoteMta: 'mx.example.net',
    ...over,
  };
}

describe('explain: one sentence per section-4 branch', () => {
  it.each([
    ['conneg-ok/usable', trace('conneg-ok/usable', { capabilities: known('conneg'), plan: usablePlan, conversion: record }), 'converted-and-relayed', 'made the content usable'],
    ['conneg-ok/pass-on', trace('conneg-ok/pass-on', { capabilities: known('conneg') }), 'relayed-with-drucof', 'passed on for a later hop'],
    ['conneg-ok/no-way', trace('conneg-ok/no-way', { hopExtensions: ['CONNEG'], capabilities: known('conneg') }), 'failed', 'cannot carry the DRUCOF request'],
    ['conneg-failed/pass-on', trace('conneg-failed/pass-on', { capabilities: { kind: 'query-failed', reason: 'timeout', source: 'conneg' } }), 'relayed-with-drucof', 'could not be learned'],
    ['conneg-failed/no-way', trace('conneg-failed/no-way', { hopExtensions: ['CONNEG'] }), 'failed', 'could not be learned'],
    ['drucof-only', trace('drucof-only', { hopExtensions: ['DRUCOF'] }), 'relayed-with-drucof', 'supports DRUCOF but not CONNEG'],
    ['neither', trace('neither', { hopExtensions: [] }), 'failed', 'supports neither CONNEG nor DRUCOF'],
    ['no-drucof', trace('no-drucof'), 'relayed', 'did not ask for DRUCOF'],
  ] as const)('%s', (branch, decision, status, phrase) => {
    const lines = explainRecipient(rcpt({ status, decision }));
    expect(lines[0]).toBe(`<fax@example.net>  ${status}  (attempt 1, ${AT})`);
    expect(lines[1]).toBe(`  DRUCOF: yes — branch ${branch}: ${BRANCH_EXPLANATIONS[branch]}`);
    expect(lines[1]).toContain(phrase);
    expect(lines).toContain(`  next hop: route:example.net (${decision.hopExtensions.length ? `advertises ${decision.hopExtensions.join(', ')}` : 'advertises neither CONNEG nor DRUCOF'})`);
  });

  it('has a sentence for all eight branches, each different', () => {
    const sentences = Object.values(BRANCH_EXPLANATIONS);
    expect(sentences).toHaveLength(8);
    expect(new Set(sentences).size).toBe(8);
  });

  it('a recipient without DRUCOF: relayed unchanged, never converted', () => {
    const lines = explainRecipient(rcpt({ drucof: false, status: 'relayed' }));
    expect(lines).toEqual(['<fax@example.net>  relayed  (attempt 1, 2026-11-23T10:00:00.000Z)', `  ${NO_DRUCOF}`, '  outcome: 250 2.0.0 ok (relayed by mx.example.net)']);
    expect(NO_DRUCOF).toBe('no DRUCOF: relayed as the sender wrote it, never converted');
  });

  it('a DRUCOF recipient not yet attempted: not decided yet', () => {
    const r: RecipientState = { address: 'fax@example.net', drucof: true, status: 'queued', attempts: 0 };
    expect(explainRecipient(r)).toEqual(['<fax@example.net>  queued  (not attempted yet)', '  DRUCOF: yes — not decided yet', '  outcome: queued, not attempted yet']);
  });

  it('an older record holding only the branch name is explained as far as it goes', () => {
    const r = rcpt({ status: 'failed', decision: 'neither' as unknown as DrucofTrace, lastReply: reply(550, 3, 3, 'no way') });
    const lines = explainRecipient(r);
    expect(lines[1]).toBe(`  DRUCOF: yes — branch neither: ${BRANCH_EXPLANATIONS.neither}`);
    expect(lines.some((l) => l.startsWith('  next hop:') || l.startsWith('  capabilities:'))).toBe(false);
    expect(lines.at(-1)).toBe('  outcome: failed: 550 5.3.3 no way (from mx.example.net)');
  });
});

describe('explain: capabilities and where they came from', () => {
  it.each([
    ['config', "the relay's own registry (capabilities:)"],
    ['conneg', "the next hop's CONNEG answer"],
    ['srv', "the domain's capability server (SRV _conneg._tcp)"],
    ['cache', 'the capability cache (an earlier answer)'],
  ] as const)('known, from %s', (source, name) => {
    expect(SOURCE_NAMES[source]).toBe(name);
    expect(capabilitiesText(known(source))).toBe(`capabilities: ${EXPR}  [from ${name}]`);
  });

  it.each([
    [{ kind: 'query-failed', reason: 'timeout after 5 s', source: 'conneg' }, 'capabilities: query failed: timeout after 5 s  [asked the next hop (CONNEG)]'],
    [
      { kind: 'query-failed', reason: 'the hop refused the query', source: 'conneg', reply: reply(451, 4, 0, 'try later') },
      'capabilities: query failed: the hop refused the query (reply: 451 4.4.0 try later)  [asked the next hop (CONNEG)]',
    ],
    [{ kind: 'query-failed', reason: 'connection refused', source: 'srv' }, "capabilities: query failed: connection refused  [asked the domain's capability server (SRV _conneg._tcp)]"],
    [{ kind: 'unknown' }, 'capabilities: unknown (no source had any for this recipient)'],
  ] as [CapabilityAnswer, string][])('%o', (answer, line) => {
    expect(capabilitiesText(answer)).toBe(line);
  });

  it('the capabilities line sits in the recipient block', () => {
    const lines = explainRecipient(rcpt({ decision: trace('conneg-ok/pass-on', { capabilities: known('cache') }) }));
    expect(lines).toContain(`  capabilities: ${EXPR}  [from the capability cache (an earlier answer)]`);
  });
});

describe('explain: plans', () => {
  it('keep and convert, possible', () => {
    expect(planLines(usablePlan, known('conneg'))).toEqual([
      'plan: possible, loss 32',
      '  part 1 text/plain: keep',
      '  part 2 image/png: convert via sharp/png-to-jpeg (loss 32)',
    ]);
  });

  it('names the target when it is not the capabilities shown', () => {
    expect(planLines({ ...usablePlan, target: '(type="text/plain")' }, known('conneg'))[0]).toBe('plan: possible, loss 32 for (type="text/plain")');
  });

  it('omit, keep-unusable, multi-step chains', () => {
    const plan: PlanSummary = {
      target: EXPR,
      possible: true,
      loss: 145,
      parts: [
        { path: '1', type: 'text/html', action: 'convert', chain: ['html-to-text', 'iconv/utf-8'], loss: 45 },
        { path: '2', type: 'image/svg+xml', action: 'keep', usable: false, reasons: ['type image/svg+xml not accepted'] },
        { path: '3', type: 'application/x-foo', action: 'omit', reasons: ['no converter from application/x-foo'] },
      ],
    };
    expect(planLines(plan, known('conneg'))).toEqual([
      'plan: possible, loss 145',
      '  part 1 text/html: convert via html-to-text, iconv/utf-8 (loss 45)',
      '  part 2 image/svg+xml: keep, not usable but not critical (type image/svg+xml not accepted)',
      '  part 3 application/x-foo: omit, replaced by a note (no converter from application/x-foo)',
    ]);
  });

  it.each([
    [reply(554, 6, 2, 'conversion required and prohibited'), 'plan: impossible — 554 5.6.2 conversion required and prohibited'],
    [reply(554, 6, 3, 'conversion required but not supported'), 'plan: impossible — 554 5.6.3 conversion required but not supported'],
    [reply(554, 6, 5, 'conversion failed'), 'plan: impossible — 554 5.6.5 conversion failed'],
  ])('impossible: %o', (why, head) => {
    const plan: PlanSummary = {
      target: EXPR,
      possible: false,
      loss: 0,
      reply: why,
      parts: [
        { path: '1', type: 'text/plain', action: 'keep', usable: true },
        { path: '2', type: 'image/png', action: 'impossible', reasons: ['Content-Convert: prohibited', 'pix-x 2048 > 1024'] },
      ],
    };
    expect(planLines(plan, known('config'))).toEqual([head, '  part 1 text/plain: keep', '  part 2 image/png: impossible (Content-Convert: prohibited; pix-x 2048 > 1024)']);
  });

  it('the plan appears in the recipient block, indented under it', () => {
    const lines = explainRecipient(rcpt({ decision: trace('conneg-ok/usable', { capabilities: known('conneg'), plan: usablePlan }) }));
    expect(lines).toContain('  plan: possible, loss 32');
    expect(lines).toContain('    part 2 image/png: convert via sharp/png-to-jpeg (loss 32)');
  });
});

describe('explain: conversion records', () => {
  it('one converted part: the path, types, chain, loss, host, date and the features before and after', () => {
    expect(conversionLines(record)).toEqual([
      'converted: part 2 image/png -> image/jpeg via sharp/png-to-jpeg (loss 32), by relay.test at Mon, 23 Nov 2026 10:00:00 +0000',
      '  before: (& (type="image/png") (pix-x=2048) (pix-y=1536) (color=full))',
      '  after:  (& (type="image/jpeg") (pix-x=1024) (pix-y=768) (color=full))',
    ]);
  });

  it('an omitted part and a total for several parts', () => {
    const rec: ConversionRecord = {
      ...record,
      loss: 132,
      parts: [...record.parts, { path: '3', before: { type: 'application/x-foo', size: 2000 }, chain: [], loss: 100, omitted: true }],
    };
    expect(conversionLines(rec).slice(3)).toEqual([
      'converted: part 3 application/x-foo omitted (loss 100), by relay.test at Mon, 23 Nov 2026 10:00:00 +0000',
      '  before: (& (type="application/x-foo") (size=2000))',
      'converted: total loss 132',
    ]);
  });
});

describe('explain: the whole block and the message', () => {
  const envelope: Envelope = {
    id: 'Q1',
    mailFrom: 'alice@example.com',
    body: '8BITMIME',
    smtpUtf8: false,
    client: { address: '127.0.0.1', helo: 'client.test' },
    receivedAt: '2026-11-23T09:59:00.000Z',
    size: 1234,
  };

  it('the converted-and-relayed example', () => {
    const r = rcpt({ status: 'converted-and-relayed', decision: trace('conneg-ok/usable', { capabilities: known('conneg'), plan: usablePlan, conversion: record }) });
    expect(explainRecipient(r)).toEqual([
      '<fax@example.net>  converted-and-relayed  (attempt 1, 2026-11-23T10:00:00.000Z)',
      "  DRUCOF: yes — branch conneg-ok/usable: the recipient's capabilities are known and the relay made the content usable",
      '  next hop: route:example.net (advertises CONNEG, DRUCOF)',
      `  capabilities: ${EXPR}  [from the next hop's CONNEG answer]`,
      '  plan: possible, loss 32',
      '    part 1 text/plain: keep',
      '    part 2 image/png: convert via sharp/png-to-jpeg (loss 32)',
      '  converted: part 2 image/png -> image/jpeg via sharp/png-to-jpeg (loss 32), by relay.test at Mon, 23 Nov 2026 10:00:00 +0000',
      '    before: (& (type="image/png") (pix-x=2048) (pix-y=1536) (color=full))',
      '    after:  (& (type="image/jpeg") (pix-x=1024) (pix-y=768) (color=full))',
      '  outcome: 250 2.0.0 ok (relayed by mx.example.net)',
    ]);
  });

  it.each([
    [{ status: 'relayed-with-drucof' }, '250 2.0.0 ok (relayed with DRUCOF by mx.example.net)'],
    [{ status: 'delivered' }, '250 2.0.0 ok (delivered by mx.example.net)'],
    [{ status: 'failed', lastReply: reply(550, 3, 3, 'no way to carry the DRUCOF request'), remoteMta: undefined }, 'failed: 550 5.3.3 no way to carry the DRUCOF request'],
    [
      { status: 'deferred', lastReply: reply(451, 4, 0, 'busy'), nextAttemptAt: '2026-11-23T10:05:00.000Z' },
      'deferred: 451 4.4.0 busy (from mx.example.net); next attempt 2026-11-23T10:05:00.000Z',
    ],
  ] as [Partial<RecipientState>, string][])('outcome for %o', (over, outcome) => {
    const r = { ...rcpt(over), ...over };
    expect(explainRecipient(r).at(-1)).toBe(`  outcome: ${outcome}`);
  });

  it('a header line with the queue id, sender and arrival, then one block per recipient', () => {
    const lines = explainMessage({ envelope, recipients: [rcpt({ drucof: false, status: 'relayed' }), rcpt({ address: 'b@example.net', status: 'queued', attempts: 0 })] });
    expect(lines[0]).toBe('Q1  from <alice@example.com>  arrived 2026-11-23T09:59:00.000Z  (2 recipients)');
    expect(lines[1]).toBe('');
    expect(lines[2]).toMatch(/^<fax@example\.net>  relayed/);
    expect(lines).toContain('<b@example.net>  queued  (not attempted yet)');
    expect(explainMessage({ envelope: { ...envelope, mailFrom: '' }, recipients: [] })[0]).toBe('Q1  from <>  arrived 2026-11-23T09:59:00.000Z  (0 recipients)');
  });
});
