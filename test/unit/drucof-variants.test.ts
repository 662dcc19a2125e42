/**
 * Section 4 over one transaction (relay/drucof.ts): which recipients get which
 * body, when conversions run, and what each decision records — over fake ports
 * (plans and conversions are data here; the e2e tests run the real engine).
 */
import { describe, expect, it } from 'vitest';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import type { ConversionPlan, ConversionRecord } from '../../src/model/plan.ts';
import { newRecipient, type RecipientState } from '../../src/model/recipient.ts';
import { reply } from '../../src/model/reply.ts';
import { chooseVariants, MessageVariants, ORIGINAL, relayedStatus, variantKey, type DrucofPorts } from '../../src/relay/drucof.ts';
import { createLogger } from '../../src/ops/log.ts';

const log = createLogger('silent');
const body = Buffer.from('Subject: x\r\n\r\nhello\r\n');
const hop = { key: 'route:x.test', hosts: [{ host: '127.0.0.1', port: 25 }] };

const JPEG = '(& (type="image/jpeg") (pix-x<=800))';
const JPEG_TOO = '(| (type="text/plain") (& (type="image/jpeg") (pix-x<=800)))';
const PNG = '(type="image/png")';
const TEXT = '(type="text/plain")';

const toJpeg: ConversionPlan = {
  target: JPEG,
  loss: 32,
  possible: true,
  parts: [
    { path: '1', features: { type: 'text/plain' }, marking: { conversion: 'permitted', critical: true, source: 'default' }, action: { kind: 'keep', usable: true } },
    {
      path: '2',
      features: { type: 'image/png', 'pix-x': 2000 },
      marking: { conversion: 'permitted', critical: true, source: 'default' },
      action: { kind: 'convert', chain: ['sharp/png-to-jpeg'], steps: [{ converter: 'sharp/png-to-jpeg', from: 'image/png', to: 'image/jpeg', aim: { type: 'image/jpeg', 'pix-x': 800 }, loss: 32 }], loss: 32, features: { type: 'image/jpeg', 'pix-x': 800 } },
    },
  ],
};
const asIs: ConversionPlan = { target: PNG, loss: 0, possible: true, parts: [{ ...toJpeg.parts[1]!, action: { kind: 'keep', usable: true } }] };
const impossible: ConversionPlan = { target: TEXT, loss: 0, possible: false, reply: reply(554, 6, 3, 'no conversion to text/plain'), parts: [{ ...toJpeg.parts[1]!, action: { kind: 'impossible', reply: reply(554, 6, 3, 'x'), reasons: ['no converter'] } }] };
const record: ConversionRecord = { host: 'relay.test', date: 'Mon, 23 Nov 2026 10:00:00 +0000', loss: 32, parts: [{ path: '2', before: { type: 'image/png' }, after: { type: 'image/jpeg' }, chain: ['sharp/png-to-jpeg'], loss: 32 }] };

function ports(answers: Record<string, CapabilityAnswer>, opts: { convertFails?: boolean } = {}) {
  const calls = { capabilities: [] as string[][], plan: [] as string[], convert: 0 };
  const p: DrucofPorts = {
    capabilities: async (_hop, _ehlo, rs) => (calls.capabilities.push([...rs]), new Map(rs.map((r) => [r, answers[r] ?? { kind: 'unknown' }] as const))),
    plan: async (_m, target) => {
      calls.plan.push(target.expression);
      return ({ [JPEG]: toJpeg, [JPEG_TOO]: { ...toJpeg, target: JPEG_TOO }, [PNG]: asIs, [TEXT]: impossible } as Record<string, ConversionPlan>)[target.expression]!;
    },
    convert: async (_m, plan) => {
      calls.convert++;
      return opts.convertFails ? { ok: false, plan, reply: reply(554, 6, 5, 'sharp failed') } : { ok: true, plan, message: Buffer.from('converted'), record };
    },
  };
  return { p, calls };
}

const known = (expression: string, source: 'conneg' | 'config' = 'conneg'): CapabilityAnswer => ({ kind: 'known', expression, source });
const rcpt = (address: string, drucof = true): RecipientState => newRecipient(address, { drucof });

async function choose(states: RecipientState[], ehlo: string[], answers: Record<string, CapabilityAnswer>, opts: { convertFails?: boolean } = {}) {
  const { p, calls } = ports(answers, opts);
  const message = new MessageVariants('Q1', body, p, log);
  const choice = await chooseVariants({ hop, hopEhlo: new Set(ehlo), indices: states.map((_, i) => i) }, states, message, p, log);
  return { choice, calls, message, p };
}

describe('chooseVariants', () => {
  it('sends recipients without DRUCOF the original and asks nothing about them', async () => {
    const { choice, calls } = await choose([rcpt('a@x.test', false), rcpt('b@x.test', false)], ['CONNEG', 'DRUCOF'], {});
    expect(choice.variants.map((v) => [v.key, v.indices, v.body === body])).toEqual([[ORIGINAL, [0, 1], true]]);
    expect(calls.capabilities).toEqual([]);
    expect(choice.traces.size).toBe(0);
  });

  it('asks capabilities once for all DRUCOF recipients, plans once per expression, converts once per variant', async () => {
    const { choice, calls } = await choose([rcpt('a@x.test'), rcpt('b@x.test'), rcpt('c@x.test', false)], ['CONNEG'], { 'a@x.test': known(JPEG), 'b@x.test': known(JPEG) });
    expect(calls.capabilities).toEqual([['a@x.test', 'b@x.test']]);
    expect(calls.plan).toEqual([JPEG]);
    expect(calls.convert).toBe(1);
    expect(choice.variants.map((v) => [v.key === ORIGINAL ? ORIGINAL : 'converted', v.indices])).toEqual([[ORIGINAL, [2]], ['converted', [0, 1]]]);
    expect(choice.traces.get(0)).toMatchObject({ branch: 'conneg-ok/usable', hop: hop.key, hopExtensions: ['CONNEG'], capabilities: known(JPEG), plan: { possible: true, loss: 32 }, conversion: record });
  });

  it('puts recipients whose different capabilities lead to the same conversion in one variant', async () => {
    const { choice, calls } = await choose([rcpt('a@x.test'), rcpt('b@x.test')], ['CONNEG'], { 'a@x.test': known(JPEG), 'b@x.test': known(JPEG_TOO) });
    expect(calls.plan.sort()).toEqual([JPEG, JPEG_TOO].sort());
    expect(calls.convert).toBe(1);
    expect(choice.variants).toHaveLength(1);
    expect(variantKey(toJpeg)).toBe(variantKey({ ...toJpeg, target: JPEG_TOO }));
  });

  it('gives recipients needing different forms different variants (usable as is: the original, relayed plainly)', async () => {
    const { choice, calls } = await choose([rcpt('a@x.test'), rcpt('b@x.test')], ['CONNEG', 'DRUCOF'], { 'a@x.test': known(JPEG), 'b@x.test': known(PNG) });
    expect(calls.convert).toBe(1);
    const byKey = new Map(choice.variants.map((v) => [v.key, v]));
    expect(byKey.get(ORIGINAL)?.indices).toEqual([1]);
    expect(byKey.get(ORIGINAL)?.passOn.size).toBe(0);
    expect(choice.traces.get(1)).toMatchObject({ branch: 'conneg-ok/usable' });
    expect(choice.traces.get(1)?.conversion).toBeUndefined();
  });

  it('passes the request on when the relay cannot make it usable and the hop has DRUCOF', async () => {
    const { choice } = await choose([rcpt('a@x.test')], ['CONNEG', 'DRUCOF'], { 'a@x.test': known(TEXT) });
    expect(choice.variants.map((v) => [v.key, [...v.passOn]])).toEqual([[ORIGINAL, ['a@x.test']]]);
    expect(choice.traces.get(0)).toMatchObject({ branch: 'conneg-ok/pass-on', plan: { possible: false } });
  });

  it('fails with the plan’s reply when it cannot and the hop lacks DRUCOF', async () => {
    const { choice } = await choose([rcpt('a@x.test')], ['CONNEG'], { 'a@x.test': known(TEXT) });
    expect(choice.variants).toEqual([]);
    expect(choice.unsent.get(0)?.enhanced).toBe('5.6.3');
    expect(choice.traces.get(0)?.branch).toBe('conneg-ok/no-way');
  });

  it('a converter that fails: 5.6.5, or the request passed on to a DRUCOF hop', async () => {
    const failed = await choose([rcpt('a@x.test')], ['CONNEG'], { 'a@x.test': known(JPEG) }, { convertFails: true });
    expect(failed.choice.unsent.get(0)?.enhanced).toBe('5.6.5');
    const passed = await choose([rcpt('a@x.test')], ['CONNEG', 'DRUCOF'], { 'a@x.test': known(JPEG) }, { convertFails: true });
    expect(passed.choice.traces.get(0)?.branch).toBe('conneg-ok/pass-on');
    expect([...passed.choice.variants[0]!.passOn]).toEqual(['a@x.test']);
  });

  it('a failed query with a transient reply defers instead of failing (the answer may come next time)', async () => {
    const transient: CapabilityAnswer = { kind: 'query-failed', reason: 'could not reach the next hop', source: 'conneg', reply: reply(451, 4, 1, 'no answer') };
    const permanent: CapabilityAnswer = { kind: 'query-failed', reason: 'not known', source: 'conneg' };
    const { choice } = await choose([rcpt('a@x.test'), rcpt('b@x.test')], ['CONNEG'], { 'a@x.test': transient, 'b@x.test': permanent });
    expect(choice.unsent.get(0)).toMatchObject({ code: 451, enhanced: '4.4.1' });
    expect(choice.unsent.get(1)).toMatchObject({ code: 550, enhanced: '5.3.3' });
    expect(choice.traces.get(1)?.branch).toBe('conneg-failed/no-way');
  });

  it('an unparsable registry expression is a failed query, never a crash', async () => {
    const { choice } = await choose([rcpt('a@x.test')], ['DRUCOF'], { 'a@x.test': known('(type=', 'config') });
    expect(choice.traces.get(0)).toMatchObject({ branch: 'drucof-only', capabilities: { kind: 'query-failed' } });
  });
});

describe('relayedStatus', () => {
  const v = (over: object) => ({ key: ORIGINAL, body, indices: [0], passOn: new Set<string>(), ...over });
  it('names what happened on the way', () => {
    expect(relayedStatus(v({ passOn: new Set(['a']) }), 'a', { drucofPassedOn: new Set(['a']) })).toBe('relayed-with-drucof');
    expect(relayedStatus(v({ conversion: record }), 'a', {})).toBe('converted-and-relayed');
    expect(relayedStatus(v({}), 'a', {})).toBe('relayed');
  });
});
