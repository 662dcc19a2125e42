/**
 * relay/fail-fast.ts: the DRUCOF fail-fast verdict source (issue 6 item 5) with
 * a fake capability cache and a real conversion engine (built-in converters,
 * real images). It refuses only when the worker's decide() is certain to fail,
 * with decide()'s own reply; everything else is no opinion.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { CachedKeywords } from '../../src/capabilities/cache.ts';
import { parseFeatureSet } from '../../src/capabilities/feature-set/index.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createConversionEngine, loadConverters, type ConversionEngine } from '../../src/conversion/index.ts';
import { VerdictEngine, type MessageFacts, type RecipientFacts } from '../../src/inbound/verdicts.ts';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import type { Reply } from '../../src/model/reply.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { decide } from '../../src/relay/decide.ts';
import { drucofFailFast, type FailFastOptions } from '../../src/relay/fail-fast.ts';
import { compose, image } from '../fixtures/images/mail.ts';

const TEXT_ONLY = '(type="text/plain")';
const TEXT_OR_JPEG = '(| (type="text/plain") (type="image/jpeg"))';

const config = parseConfig({
  routes: { 'example.net': 'mx.example.net:2525', 'pass.test': 'drucof-hop.test:25', 'nokw.test': 'unknown-hop.test:25', 'stale.test': 'stale-hop.test:25' },
  mx: true,
  capabilities: {
    'text@example.net': TEXT_ONLY,
    'jpeg@example.net': TEXT_OR_JPEG,
    'bad@example.net': '(type="text/plain"',
    '*@pass.test': TEXT_ONLY,
    '*@nokw.test': TEXT_ONLY,
    '*@stale.test': TEXT_ONLY,
    'mx@elsewhere.test': TEXT_ONLY,
  },
});

const EHLO_TTL = 3_600_000;

/** An in-memory CapabilityCache (the fields the source uses). */
function fakeCache(answers: Record<string, CapabilityAnswer> = {}, hops: Record<string, CachedKeywords> = {}) {
  const calls = { get: 0, hopKeywords: 0 };
  return {
    calls,
    ehloTtl: EHLO_TTL,
    get: async (r: string) => {
      calls.get++;
      return answers[r];
    },
    hopKeywords: async (key: string) => {
      calls.hopKeywords++;
      return hops[key];
    },
  };
}

const kw = (words: string[], at = Date.now()): CachedKeywords => ({ keywords: new Set(words), at });
const HOPS: Record<string, CachedKeywords> = {
  'route:mx.example.net:2525': kw(['PIPELINING', 'CONNEG', 'ENHANCEDSTATUSCODES']),
  'route:drucof-hop.test:25': kw(['CONNEG', 'DRUCOF']),
  'route:stale-hop.test:25': kw(['PIPELINING'], Date.now() - EHLO_TTL - 1000),
  'smarthost:smart.test:587': kw(['PIPELINING']),
};

let engine: ConversionEngine;
let withPng: Buffer;
let prohibitedPng: Buffer;
let textOnly: Buffer;

beforeAll(async () => {
  const builtins = await loadConverters({ converters: { builtin: true, dirs: [], packages: [] } });
  engine = await createConversionEngine(parseConfig({ hostname: 'relay.example.net' }), silentLogger, { converters: builtins });
  withPng = await compose({ text: 'see the picture', attachments: [{ filename: 'p.png', content: image('photo.png'), contentType: 'image/png' }] });
  prohibitedPng = await compose({
    text: 'see the picture',
    attachments: [{ filename: 'p.png', content: image('photo.png'), contentType: 'image/png', headers: { 'Content-Conversion': 'prohibited' } }],
  });
  textOnly = await compose({ text: 'just words' });
});

const facts = (raw: Buffer): MessageFacts => ({ raw, size: raw.length, texts: [], types: [] });
const rcpt = (address: string, drucof = true): RecipientFacts => ({ address, drucof });
const show = (r: Reply | undefined) => r && [r.code, r.enhanced, ...r.lines].filter(Boolean).join(' ');

function source(over: Partial<FailFastOptions> = {}, cache = fakeCache({}, HOPS)) {
  return drucofFailFast({ config, cache, engine, log: silentLogger, ...over });
}

/** What the worker would decide from the same inputs (the reply the source must give). */
async function workerReply(raw: Buffer, expression: string, hopEhlo: ReadonlySet<string>): Promise<Reply | undefined> {
  const f = parseFeatureSet(expression);
  if (!f.ok) throw new Error(f.error);
  const plan = await engine.plan(raw, f.features, { drucof: true });
  const d = decide({ drucof: true, hopEhlo, capability: { kind: 'known', expression, source: 'config' }, plan: plan.possible ? { possible: true, plan } : { possible: false, reply: plan.reply! } });
  return d.action === 'fail' ? d.reply : undefined;
}

describe('refuses when the outcome is certain', () => {
  it('registry-known, plan impossible, hop without DRUCOF → 554 5.6.3, the reply decide() gives', async () => {
    const s = source();
    expect(await s.atRcpt(rcpt('text@example.net'))).toEqual({ kind: 'content' });
    const v = await s.afterData(rcpt('text@example.net'), facts(withPng));
    expect(show(v)).toBe('554 5.6.3 no conversion makes part 2 (image/png, "p.png") usable by the recipient');
    expect(v).toEqual(await workerReply(withPng, TEXT_ONLY, HOPS['route:mx.example.net:2525']!.keywords));
  });

  it('a prohibited part → 554 5.6.2', async () => {
    const s = source();
    const v = await s.afterData(rcpt('jpeg@example.net'), facts(prohibitedPng));
    expect(v?.code).toBe(554);
    expect(v?.enhanced).toBe('5.6.2');
    expect(v).toEqual(await workerReply(prohibitedPng, TEXT_OR_JPEG, HOPS['route:mx.example.net:2525']!.keywords));
  });

  it('capabilities known from the cache count as well', async () => {
    const cache = fakeCache({ 'cached@example.net': { kind: 'known', expression: TEXT_ONLY, source: 'conneg' } }, HOPS);
    const s = source({}, cache);
    expect(await s.atRcpt(rcpt('cached@example.net'))).toEqual({ kind: 'content' });
    expect(show(await s.afterData(rcpt('cached@example.net'), facts(withPng)))).toMatch(/^554 5\.6\.3 /);
  });

  it('the smarthost is a static route too', async () => {
    const smart = parseConfig({ smarthost: 'smart.test:587', capabilities: { 'a@anywhere.test': TEXT_ONLY } });
    const s = source({ config: smart });
    expect(await s.atRcpt(rcpt('a@anywhere.test'))).toEqual({ kind: 'content' });
    expect((await s.afterData(rcpt('a@anywhere.test'), facts(withPng)))?.enhanced).toBe('5.6.3');
  });

  it('through the verdict engine: the recipient named first, as A4 wants', async () => {
    const e = new VerdictEngine([source()]);
    const m = await e.afterData([rcpt('text@example.net'), rcpt('jpeg@example.net')], facts(withPng));
    expect(show(m.get('text@example.net'))).toBe('554 5.6.3 <text@example.net> no conversion makes part 2 (image/png, "p.png") usable by the recipient');
    expect(show(m.get('jpeg@example.net'))).toBe('250 2.1.5 <jpeg@example.net> accepts the content');
  });
});

describe('no opinion when anything is uncertain or fine', () => {
  it('hop advertises DRUCOF (pass on) → none, already at RCPT', async () => {
    const s = source();
    expect(await s.atRcpt(rcpt('x@pass.test'))).toBeUndefined();
    expect(await s.afterData(rcpt('x@pass.test'), facts(withPng))).toBeUndefined();
  });

  it('plan possible → none (a refusal was possible at RCPT)', async () => {
    const s = source();
    expect(await s.atRcpt(rcpt('jpeg@example.net'))).toEqual({ kind: 'content' });
    expect(await s.afterData(rcpt('jpeg@example.net'), facts(withPng))).toBeUndefined();
    expect(await s.afterData(rcpt('text@example.net'), facts(textOnly))).toBeUndefined();
  });

  it('capabilities unknown, or a cached failed query → none', async () => {
    const cache = fakeCache({ 'failed@example.net': { kind: 'query-failed', reason: 'timeout', source: 'conneg' } }, HOPS);
    const s = source({}, cache);
    for (const a of ['nobody@example.net', 'failed@example.net']) {
      expect(await s.atRcpt(rcpt(a))).toBeUndefined();
      expect(await s.afterData(rcpt(a), facts(withPng))).toBeUndefined();
    }
  });

  it('an MX route is not decided inbound', async () => {
    const cache = fakeCache({}, { ...HOPS, 'mx:elsewhere.test': kw(['PIPELINING']) });
    const s = source({}, cache);
    expect(await s.atRcpt(rcpt('mx@elsewhere.test'))).toBeUndefined();
    expect(await s.afterData(rcpt('mx@elsewhere.test'), facts(withPng))).toBeUndefined();
    expect(cache.calls).toEqual({ get: 0, hopKeywords: 0 }); // decided before any lookup
  });

  it('hop keywords not cached, or older than ehloTtl → none', async () => {
    const s = source();
    for (const a of ['x@nokw.test', 'x@stale.test']) {
      expect(await s.atRcpt(rcpt(a))).toBeUndefined();
      expect(await s.afterData(rcpt(a), facts(withPng))).toBeUndefined();
    }
  });

  it('no cache at all: nothing is certain', async () => {
    const s = drucofFailFast({ config, engine, log: silentLogger });
    expect(await s.atRcpt(rcpt('text@example.net'))).toBeUndefined();
    expect(await s.afterData(rcpt('text@example.net'), facts(withPng))).toBeUndefined();
  });

  it('an unparsable expression → none', async () => {
    const s = source();
    expect(await s.atRcpt(rcpt('bad@example.net'))).toBeUndefined();
    expect(await s.afterData(rcpt('bad@example.net'), facts(withPng))).toBeUndefined();
  });

  it('a recipient without DRUCOF never, and no lookup is made for it', async () => {
    const cache = fakeCache({}, HOPS);
    const s = source({}, cache);
    expect(await s.atRcpt(rcpt('text@example.net', false))).toBeUndefined();
    expect(await s.afterData(rcpt('text@example.net', false), facts(withPng))).toBeUndefined();
    expect(cache.calls).toEqual({ get: 0, hopKeywords: 0 });
  });
});

describe('never throws, plans once', () => {
  it('a planning error is no opinion', async () => {
    const s = source({ engine: { plan: () => Promise.reject(new Error('sharp exploded')) } });
    expect(await s.atRcpt(rcpt('text@example.net'))).toEqual({ kind: 'content' });
    expect(await s.afterData(rcpt('text@example.net'), facts(withPng))).toBeUndefined();
  });

  it('a failing cache is no opinion', async () => {
    const broken = { ehloTtl: EHLO_TTL, get: () => Promise.reject(new Error('redis down')), hopKeywords: () => Promise.reject(new Error('redis down')) };
    const s = source({}, broken as unknown as ReturnType<typeof fakeCache>);
    expect(await s.atRcpt(rcpt('text@example.net'))).toBeUndefined();
    expect(await s.afterData(rcpt('text@example.net'), facts(withPng))).toBeUndefined();
  });

  it('plans once per distinct capability expression per message', async () => {
    const targets: string[] = [];
    const counting: FailFastOptions['engine'] = {
      plan: (message, target, o) => {
        targets.push(target.expression);
        return engine.plan(message, target, o);
      },
    };
    const cfg = parseConfig({ routes: { 'example.net': 'mx.example.net:2525' }, capabilities: { 'a@example.net': TEXT_ONLY, 'b@example.net': TEXT_ONLY, 'c@example.net': TEXT_OR_JPEG } });
    const e = new VerdictEngine([source({ config: cfg, engine: counting })]);
    const all = ['a@example.net', 'b@example.net', 'c@example.net'].map((a) => rcpt(a));
    const m = await e.afterData(all, facts(withPng));
    expect([...m.values()].map((r) => r.code)).toEqual([554, 554, 250]);
    expect(targets.sort()).toEqual([TEXT_ONLY, TEXT_OR_JPEG].sort());
    // Another message is planned afresh.
    await e.afterData(all, facts(Buffer.from(withPng)));
    expect(targets).toHaveLength(4);
  });
});
