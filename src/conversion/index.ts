/**
 * The conversion stage's one entry (architecture.md "plan + convert"). A
 * ConversionEngine holds the validated converters and the limits from the
 * config; `plan()` measures every body part, reads its markings and runs the
 * pure planner; `convert()` executes a plan with per-part isolation and records.
 *
 *   const engine = await createConversionEngine(config, log);
 *   const plan = await engine.plan(raw, target, { drucof: true });
 *   if (plan.possible) { const r = await engine.convert(raw, plan); if (r.ok) send(r.message); }
 */
import { availableParallelism, hostname as osHostname } from 'node:os';
import type { RelayConfig } from '../config/schema.ts';
import type { FeatureSet, PartFeatures } from '../model/feature-set.ts';
import type { ConversionPlan } from '../model/plan.ts';
import type { Logger } from '../ops/log.ts';
import type { Converter } from './api.ts';
import { measurePart, SHARP_INPUT_TYPES } from './features.ts';
import { effectiveMarking } from './markings.ts';
import { decodeBody, decodedLength, encodedBody, scanMessage, walkMessage, type MimeLeaf, type WalkResult } from './mime.ts';
import { conversionFailed, conversionUnsupported, planMessage, type PlannerOptions, type PlannerPart } from './planner.ts';
import { loadConverters, type RegisteredConverter } from './registry.ts';
import { runPlan, type RunResult } from './run.ts';

export type { Converter, ConvertContext, PartInput, PartOutput, Reach } from './api.ts';
export type { RegisteredConverter } from './registry.ts';
export type { RunResult } from './run.ts';
export { ConverterLoadError, loadConverters } from './registry.ts';
export { planMessage, planPart } from './planner.ts';

export interface PlanOptions {
  /** Whether the sender asked for DRUCOF for this recipient (without it nothing is converted, A5). */
  readonly drucof: boolean;
}

export interface ConvertOptions {
  /** Converting host for the records (default: config.hostname, else the machine's name). */
  readonly host?: string;
  readonly date?: Date;
}

export interface ConversionEngine {
  /** Every loaded converter, built-ins first (for `drucof-relay converters`). */
  readonly converters: readonly RegisteredConverter[];
  /** Measures, reads markings, plans. Never throws for a bad message: unreadable parts are planned as such. */
  plan(message: Buffer, target: FeatureSet, opts: PlanOptions): Promise<ConversionPlan>;
  /** Executes a plan from `plan()` on the same message. Never throws: failures are `ok: false` with a 5.6.x reply. */
  convert(message: Buffer, plan: ConversionPlan, opts?: ConvertOptions): Promise<RunResult>;
}

export interface EngineOptions {
  /** Working directory for relative `converters.dirs` (default: process.cwd()). */
  readonly cwd?: string;
  /** Pre-loaded converters (tests); skips loading from the config. */
  readonly converters?: readonly RegisteredConverter[];
  readonly planner?: PlannerOptions;
  /**
   * Messages converted at once in this process (default: the number of CPUs).
   * Others wait their turn, so fifty queued deliveries never hold fifty decoded
   * images in memory together.
   */
  readonly maxConcurrent?: number;
}

/** A counting semaphore: at most `n` holders at a time, the rest queue in order. */
function limiter(n: number): <T>(work: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async (work) => {
    if (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await work();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** Loads and validates the configured converters (start-up error on a bad plug-in) and returns the engine. */
export async function createConversionEngine(config: RelayConfig, log: Logger, opts: EngineOptions = {}): Promise<ConversionEngine> {
  const converters = opts.converters ?? (await loadConverters(config, opts.cwd !== undefined ? { cwd: opts.cwd } : {}));
  const byName = new Map<string, Converter>(converters.map((r) => [r.converter.name, r.converter]));
  const limits = { maxPixels: config.conversion.maxPixels, maxOutputBytes: config.conversion.maxOutputBytes };
  const stageLog = log.child({ stage: 'conversion' });
  // The structure found by plan(), reused by convert() on the same Buffer (one walk per message).
  const scans = new WeakMap<Buffer, WalkResult>();
  const turn = limiter(Math.max(1, opts.maxConcurrent ?? availableParallelism()));

  return {
    converters,
    async plan(message, target, planOpts) {
      let scan: WalkResult;
      try {
        scan = await scanMessage(message);
      } catch (err) {
        // mailsplit refuses the structure (a header block over 1 MB, over 1000 parts): nothing can be converted.
        const why = `the message structure cannot be read: ${(err as Error).message}`;
        stageLog.warn({ err: (err as Error).message }, 'unreadable message structure');
        if (!planOpts.drucof) return { target: target.expression, parts: [], loss: 0, possible: true };
        return { target: target.expression, parts: [], loss: 0, possible: false, reply: conversionUnsupported(why) };
      }
      scans.set(message, scan);
      const measured: { path: string; features: PartFeatures; filename?: string }[] = [];
      if (scan.exact) {
        for (const leaf of scan.leaves) measured.push({ path: leaf.path, features: await measureLeaf(message, leaf, limits), ...(leaf.filename && { filename: leaf.filename }) });
      } else {
        // The splitter did not reproduce the bytes (never seen on the corpus): measure from a decoding walk instead.
        await walkMessage(message, {
          select: () => true,
          visit: async (leaf, body) => {
            measured.push({ path: leaf.path, features: await measurePart(leaf.type, leaf.params, body, limits), ...(leaf.filename && { filename: leaf.filename }) });
            return undefined;
          },
        });
      }
      // Markings need the top-level RFC 2156 fields, known once the walk is done.
      const parts: PlannerPart[] = measured.map((m, i) => ({ ...m, marking: effectiveMarking(scan.leaves[i]?.declared, scan.message, planOpts.drucof) }));
      return planMessage(parts, target, converters, opts.planner);
    },
    convert(message, plan, convertOpts = {}) {
      return turn(() => runPlan(message, plan, scans.get(message), {
        converters: byName,
        host: convertOpts.host ?? config.hostname ?? osHostname(),
        ...(convertOpts.date && { date: convertOpts.date }),
        timeoutMs: config.conversion.timeout,
        limits,
        log: stageLog,
      })).catch((err: unknown): RunResult => {
        // Per-part failures are results already; this is the message itself (its structure) failing.
        stageLog.warn({ err: (err as Error)?.message }, 'conversion failed');
        return { ok: false, reply: conversionFailed(`the message could not be converted: ${(err as Error)?.message ?? String(err)}`), plan };
      });
    },
  };
}

/** Decoded bytes read to measure an image (its header is near the start; else the whole body is read). */
const IMAGE_PREFIX = 128 * 1024;

/** Measures one leaf from its span: images from their first 128 KB, other parts by decoded size. */
async function measureLeaf(raw: Buffer, leaf: MimeLeaf, limits: { readonly maxPixels: number }): Promise<PartFeatures> {
  const encoded = encodedBody(raw, leaf);
  if (leaf.type.startsWith('text/')) return measurePart(leaf.type, leaf.params, decodeBody(encoded, leaf.encoding), limits);
  const size = decodedLength(encoded, leaf.encoding);
  if (!SHARP_INPUT_TYPES.has(leaf.type)) return measurePart(leaf.type, leaf.params, Buffer.alloc(0), { ...limits, size });
  const prefix = decodeBody(encoded, leaf.encoding, IMAGE_PREFIX);
  const first = await measurePart(leaf.type, leaf.params, prefix, { ...limits, size });
  if (!first.unmeasured || prefix.length >= size) return first;
  return measurePart(leaf.type, leaf.params, decodeBody(encoded, leaf.encoding), { ...limits, size });
}
