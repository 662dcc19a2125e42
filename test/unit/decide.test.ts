/** The section-4 table of protocols.md A8 as literal test data, one row per branch. */
import { describe, expect, it } from 'vitest';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import { reply } from '../../src/model/reply.ts';
import { decide, type PlanVerdict } from '../../src/relay/decide.ts';

const known: CapabilityAnswer = { kind: 'known', expression: '(type="text/plain")', source: 'conneg' };
const fromRegistry: CapabilityAnswer = { kind: 'known', expression: '(type="text/plain")', source: 'config' };
const failed: CapabilityAnswer = { kind: 'query-failed', reason: 'timeout', source: 'conneg' };
const unknown: CapabilityAnswer = { kind: 'unknown' };
const usable: PlanVerdict<string> = { possible: true, plan: 'the-plan' };
const prohibited: PlanVerdict<string> = { possible: false, reply: reply(554, 6, 2, 'conversion required and prohibited') };
const unsupported: PlanVerdict<string> = { possible: false, reply: reply(554, 6, 3, 'conversion required but not supported') };
const converterFailed: PlanVerdict<string> = { possible: false, reply: reply(554, 6, 5, 'conversion failed') };

const ehlo = (...k: string[]) => new Set(k);

describe('decide: section 4 of the DRUCOF outline (protocols.md A8)', () => {
  it.each([
    // [hop keywords, capability, plan, branch, action, enhanced code on fail]
    [['CONNEG', 'DRUCOF'], known, usable, 'conneg-ok/usable', 'convert-and-relay', undefined],
    [['CONNEG'], known, usable, 'conneg-ok/usable', 'convert-and-relay', undefined],
    [['CONNEG', 'DRUCOF'], known, unsupported, 'conneg-ok/pass-on', 'relay-with-drucof', undefined],
    [['CONNEG'], known, unsupported, 'conneg-ok/no-way', 'fail', '5.6.3'],
    [['CONNEG'], known, prohibited, 'conneg-ok/no-way', 'fail', '5.6.2'],
    [['CONNEG'], known, converterFailed, 'conneg-ok/no-way', 'fail', '5.6.5'],
    [['CONNEG', 'DRUCOF'], failed, undefined, 'conneg-failed/pass-on', 'relay-with-drucof', undefined],
    [['CONNEG'], failed, undefined, 'conneg-failed/no-way', 'fail', '5.3.3'],
    [['CONNEG'], unknown, undefined, 'conneg-failed/no-way', 'fail', '5.3.3'],
    [['DRUCOF'], unknown, undefined, 'drucof-only', 'relay-with-drucof', undefined],
    [['DRUCOF'], failed, undefined, 'drucof-only', 'relay-with-drucof', undefined],
    [[], unknown, undefined, 'neither', 'fail', '5.3.3'],
    // Our own registry is specific information: we decide without the hop's help.
    [[], fromRegistry, usable, 'conneg-ok/usable', 'convert-and-relay', undefined],
    [['DRUCOF'], fromRegistry, prohibited, 'conneg-ok/pass-on', 'relay-with-drucof', undefined],
    [[], fromRegistry, prohibited, 'conneg-ok/no-way', 'fail', '5.6.2'],
    [[], known, undefined, 'conneg-ok/no-way', 'fail', '5.6.3'],
  ] as const)('hop %j, capabilities %o, plan %o → %s', (keywords, capability, plan, branch, action, enhanced) => {
    const d = decide({ drucof: true, hopEhlo: ehlo(...keywords), capability, ...(plan && { plan }) });
    expect(d.branch).toBe(branch);
    expect(d.action).toBe(action);
    if (d.action === 'fail') expect(d.reply.enhanced).toBe(enhanced);
    if (d.action === 'convert-and-relay') expect(d.plan).toBe('the-plan');
  });

  it.each([[['CONNEG', 'DRUCOF']], [[]]] as const)('never converts without the sender’s request (hop %j)', (keywords) => {
    expect(decide({ drucof: false, hopEhlo: ehlo(...keywords), capability: known, plan: usable })).toEqual({ branch: 'no-drucof', action: 'relay' });
  });

  it('never converts without specific information about the recipient', () => {
    for (const capability of [failed, unknown]) {
      for (const keywords of [['CONNEG', 'DRUCOF'], ['CONNEG'], ['DRUCOF'], []]) {
        expect(decide({ drucof: true, hopEhlo: ehlo(...keywords), capability, plan: usable }).action).not.toBe('convert-and-relay');
      }
    }
  });
});
