/**
 * The MIME layer and the whole pipeline over the shared real-world corpus
 * (../shared/corpus/mail-gem: broken boundaries, odd encodings, Japanese and
 * Korean charsets, bounces): the walk re-serialises every message byte for byte;
 * planning and converting never throw; converted messages keep every part they
 * do not convert byte-identical. Without the corpus this file prints one line.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseFeatureSet, type FeatureSet } from '../../src/capabilities/feature-set/index.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createConversionEngine, type ConversionEngine } from '../../src/conversion/index.ts';
import { walkMessage } from '../../src/conversion/mime.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { rawLeaves } from '../fixtures/images/mail.ts';

const CORPUS = new URL('../../../shared/corpus/mail-gem/', import.meta.url).pathname;
const files = existsSync(CORPUS)
  ? readdirSync(CORPUS, { recursive: true }).map(String).filter((f) => f.endsWith('.eml')).sort()
  : [];
if (files.length === 0) console.log(`corpus: ${CORPUS} not present, conversion corpus test skipped`);

const fs = (e: string): FeatureSet => {
  const r = parseFeatureSet(e);
  if (!r.ok) throw new Error(r.error);
  return r.features;
};

describe.runIf(files.length > 0)('conversion over the corpus', () => {
  let engine: ConversionEngine;
  beforeAll(async () => {
    engine = await createConversionEngine(parseConfig({ hostname: 'relay.test' }), silentLogger);
  });

  it.each(files)('%s: walk round trip is byte-identical', async (file) => {
    const raw = readFileSync(join(CORPUS, file));
    const walked = await walkMessage(raw, { select: () => false, visit: async () => undefined, output: true });
    expect(Buffer.concat([...(walked.chunks ?? [])]).equals(raw)).toBe(true);
    // Decoding every leaf (what planning does) must not throw either.
    const full = await walkMessage(raw, { select: () => true, visit: async () => undefined });
    // The structure-only walk that leaves out the inside of bodies finds the same parts at the same offsets.
    const elided = await walkMessage(raw, { select: () => false, visit: async () => undefined, elide: 0 });
    expect(elided.exact).toBe(true);
    expect(elided.leaves.map((l) => [l.path, l.type, l.span])).toEqual(full.leaves.map((l) => [l.path, l.type, l.span]));
    for (const l of full.leaves) expect(raw.subarray(l.span.start, l.span.bodyStart).equals(l.header)).toBe(true);
  });

  it.each(files)('%s: plan + convert never crash, untouched parts stay byte-identical', async (file) => {
    const raw = readFileSync(join(CORPUS, file));
    for (const target of [fs('(& (type="text/plain") (charset=utf-8))'), fs('(| (type="text/plain") (& (type="image/jpeg") (pix-x<=64)))')]) {
      const plan = await engine.plan(raw, target, { drucof: true });
      const relaxed = { ...plan, possible: true, parts: plan.parts.map((p) => (p.action.kind === 'impossible' ? { ...p, action: { kind: 'keep' as const, usable: false } } : p)) };
      const result = await engine.convert(raw, relaxed, { date: new Date(0) });
      if (!result.ok) {
        expect(result.reply.enhanced).toMatch(/^5\.6\.[25]$/);
        continue;
      }
      const before = await rawLeaves(raw);
      const after = await rawLeaves(result.message);
      for (const p of result.plan.parts) {
        if (p.action.kind !== 'keep') continue;
        expect(after.get(p.path)?.raw.equals(before.get(p.path)!.raw), `${file} part ${p.path}`).toBe(true);
      }
    }
    // Without DRUCOF nothing changes.
    const off = await engine.plan(raw, fs('(type="x/none")'), { drucof: false });
    expect(off.possible).toBe(true);
    const same = await engine.convert(raw, off);
    expect(same.ok && same.message.equals(raw)).toBe(true);
  });
});
