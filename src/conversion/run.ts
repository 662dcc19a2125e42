/**
 * Executing a ConversionPlan on a message (layout.md §4 "Isolation"). Every
 * `convert()` runs under an AbortSignal with the configured time limit and the
 * pixel/output limits; a throw, a timeout, a malformed result or an output that
 * still does not fit the target fails that part only — 5.6.5 for a critical
 * part (the recipient fails), otherwise the part falls back to omission (where
 * permitted) or goes unconverted (critical=no). Never the process.
 *
 * The converted message keeps every untouched part byte-identical (mime.ts) and
 * carries the A6 records: Content-Previous / Content-Features per converted part,
 * one Content-Conversions trace field on top. A plan with nothing to convert
 * returns the input unchanged, without a trace field.
 */
import { parseFeatureSet } from '../capabilities/feature-set/index.ts';
import type { FeatureSet, PartFeatures } from '../model/feature-set.ts';
import { OMIT_LOSS, type ConversionPlan, type ConversionRecord, type PartAction, type PartPlan, type PartRecord } from '../model/plan.ts';
import type { Reply } from '../model/reply.ts';
import type { Logger } from '../ops/log.ts';
import type { ConvertContext, Converter, PartOutput } from './api.ts';
import { buildHeaderValue, decodeBody, encodedBody, formatField, scanMessage, spliceMessage, walkMessage, type LeafReplacement, type MimeLeaf, type WalkResult } from './mime.ts';
import { conversionFailed, conversionProhibited, conversionUnsupported } from './planner.ts';
import { contentConversions, contentFeatures, contentPrevious, rfc5322Date } from './record.ts';
import { parseHeaderValue } from 'nodemailer/lib/mime-funcs';

export interface RunOptions {
  readonly converters: ReadonlyMap<string, Converter>;
  /** The converting host (RFC 4141 `By`, trace field). */
  readonly host: string;
  readonly date?: Date;
  /** Time limit per convert() call, ms. */
  readonly timeoutMs: number;
  readonly limits: { readonly maxPixels: number; readonly maxOutputBytes: number };
  readonly log: Logger;
}

export type RunResult =
  | { readonly ok: true; readonly message: Buffer; readonly record: ConversionRecord; readonly plan: ConversionPlan }
  | { readonly ok: false; readonly reply: Reply; readonly plan: ConversionPlan; readonly record?: ConversionRecord };

/** A conversion failure: the reply the part gets. */
class PartFailure extends Error {
  constructor(readonly reply: Reply) {
    super(reply.lines.join(' '));
  }
}

/** Runs `work` under a time limit; a rejection or a timeout becomes a rejection, never a hang. */
export async function withTimeout<T>(work: (signal: AbortSignal) => Promise<T>, ms: number): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`timed out after ${ms} ms`)), ms);
  try {
    const aborted = new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason as Error), { once: true }));
    return await Promise.race([Promise.resolve().then(() => work(ac.signal)), aborted]);
  } finally {
    clearTimeout(timer);
  }
}

const EXTENSIONS: Readonly<Record<string, string>> = {
  'image/jpeg': 'jpg',
  'image/png': 'png',
  'image/webp': 'webp',
  'image/avif': 'avif',
  'image/gif': 'gif',
  'image/tiff': 'tif',
  'image/heif': 'heif',
  'text/plain': 'txt',
  'text/html': 'html',
};
const KNOWN_EXT = /\.(jpe?g|png|webp|avif|gif|tiff?|heic|heif|txt|html?)$/i;

/** `photo.png` → `photo.jpg` when the type changes. */
export function renameFor(filename: string, type: string): string {
  const ext = EXTENSIONS[type];
  if (!ext) return filename;
  return KNOWN_EXT.test(filename) ? filename.replace(KNOWN_EXT, `.${ext}`) : `${filename}.${ext}`;
}

function header(leaf: MimeLeaf, name: string): string | undefined {
  // Raw header block, unfolded, for the few fields rebuilt here.
  const text = leaf.header.toString('latin1').replace(/\r?\n[ \t]+/g, ' ');
  const m = new RegExp(`^${name}:(.*)$`, 'im').exec(text);
  return m ? m[1]!.trim() : undefined;
}

/** Content-Type / Content-Disposition / Content-Features / Content-Previous for a replaced part. */
function replacementHeaders(leaf: MimeLeaf, type: string, params: Readonly<Record<string, string>>, before: PartFeatures, after: PartFeatures, host: string, date: string) {
  const typeChanged = type !== leaf.type;
  const ctParams: Record<string, string> = typeChanged ? { ...params } : { ...leaf.params, ...params };
  const set: [string, string | undefined][] = [];
  const filename = leaf.filename && typeChanged ? renameFor(leaf.filename, type) : leaf.filename;
  if (leaf.params.name !== undefined && filename) ctParams.name = filename;
  set.push(['Content-Type', buildHeaderValue({ value: type, params: ctParams })]);
  const cd = header(leaf, 'content-disposition');
  if (cd !== undefined && typeChanged) {
    const parsed = parseHeaderValue(cd);
    const cdParams: Record<string, string> = {};
    for (const [k, v] of Object.entries(parsed.params)) if (!k.startsWith('filename')) cdParams[k] = v;
    if (filename && type !== 'text/plain') cdParams.filename = filename;
    set.push(['Content-Disposition', buildHeaderValue({ value: parsed.value || 'attachment', params: cdParams })]);
  }
  set.push(['Content-Features', contentFeatures(after)]);
  const add: [string, string][] = [['Content-Previous', contentPrevious(before, host, date)]];
  return { set, add };
}

async function runChain(part: PartPlan, leaf: MimeLeaf, body: Buffer, target: FeatureSet, opts: RunOptions): Promise<{ output: PartOutput; features: PartFeatures; loss: number; chain: string[] }> {
  if (part.action.kind !== 'convert') throw new Error('not a conversion');
  let current: PartOutput = { body, contentType: leaf.type, params: leaf.params, features: part.features };
  let loss = 0;
  for (const step of part.action.steps) {
    const converter = opts.converters.get(step.converter);
    if (!converter) throw new PartFailure(conversionFailed(`part ${part.path}: converter ${step.converter} is not loaded`));
    const input = { body: current.body, features: current.features, aim: step.aim, params: current.params ?? {} };
    let out: PartOutput;
    try {
      out = await withTimeout((signal) => {
        const ctx: ConvertContext = { signal, limits: opts.limits, log: opts.log.child({ converter: converter.name, part: part.path }) };
        return converter.convert(input, ctx);
      }, opts.timeoutMs);
    } catch (err) {
      throw new PartFailure(conversionFailed(`part ${part.path} (${current.contentType}): ${converter.name} failed: ${(err as Error)?.message ?? String(err)}`));
    }
    if (!out || !Buffer.isBuffer(out.body) || typeof out.contentType !== 'string' || typeof out.features !== 'object' || out.features === null) {
      throw new PartFailure(conversionFailed(`part ${part.path}: ${converter.name} returned a malformed result`));
    }
    if (out.body.length > opts.limits.maxOutputBytes) {
      throw new PartFailure(conversionFailed(`part ${part.path}: ${converter.name} produced ${out.body.length} bytes, over the limit of ${opts.limits.maxOutputBytes}`));
    }
    const type = out.contentType.toLowerCase();
    const params = type === current.contentType ? { ...current.params, ...out.params } : { ...out.params };
    current = { ...out, contentType: type, params, features: { ...out.features, type, size: out.body.length } };
    const stepLoss = typeof out.loss === 'number' && Number.isFinite(out.loss) && out.loss >= 0 ? out.loss : step.loss;
    loss += stepLoss;
  }
  const fit = target.matches(current.features);
  if (!fit.ok) throw new PartFailure(conversionFailed(`part ${part.path}: the converted form still does not fit (${fit.reasons.join('; ')})`));
  if (part.marking.allowedForms !== undefined) {
    const forms = parseFeatureSet(part.marking.allowedForms);
    if (!forms.ok || !forms.features.matches(current.features).ok) throw new PartFailure(conversionProhibited(`part ${part.path}: the converted form is not one its Content-Convert list allows`));
  }
  if (part.marking.lossless && loss > 0) throw new PartFailure(conversionProhibited(`part ${part.path}: the conversion lost content and the message forbids that (Conversion-With-Loss: Prohibited)`));
  return { output: current, features: current.features, loss: Math.round(loss * 1e6) / 1e6, chain: part.action.chain.slice() };
}

function omission(leaf: MimeLeaf, part: PartPlan, note: string, host: string, date: string): LeafReplacement {
  const after: PartFeatures = { type: 'text/plain', charset: 'utf-8' };
  const { set, add } = replacementHeaders({ ...leaf, filename: undefined } as MimeLeaf, 'text/plain', { charset: 'utf-8' }, part.features, after, host, date);
  const cd = header(leaf, 'content-disposition');
  if (cd !== undefined) set.push(['Content-Disposition', 'inline']);
  return { set, add, body: Buffer.from(note, 'utf8'), encoding: 'text' };
}

/**
 * Executes `plan` on `raw`. Parts fail independently; the result is `ok: false`
 * only when the plan was impossible or a critical part failed. `scan` is the
 * structure plan() found for the same buffer (scanned again when absent).
 */
export async function runPlan(raw: Buffer, plan: ConversionPlan, scan: WalkResult | undefined, opts: RunOptions): Promise<RunResult> {
  if (!plan.possible) return { ok: false, reply: plan.reply ?? conversionFailed('conversion plan is not possible'), plan };
  const byPath = new Map(plan.parts.map((p) => [p.path, p]));
  const work = plan.parts.filter((p) => p.action.kind === 'convert' || p.action.kind === 'omit');
  const date = rfc5322Date(opts.date ?? new Date());
  if (work.length === 0) return { ok: true, message: raw, record: { host: opts.host, date, parts: [], loss: 0 }, plan };

  const parsedTarget = parseFeatureSet(plan.target);
  if (!parsedTarget.ok) return { ok: false, reply: conversionFailed(`the plan's target cannot be read: ${parsedTarget.error}`), plan };
  const target = parsedTarget.features;
  const records: PartRecord[] = [];
  const actions = new Map<string, PartAction>();
  let failure: Reply | undefined;

  const handle = async (leaf: MimeLeaf, body: Buffer): Promise<LeafReplacement | undefined> => {
    const part = byPath.get(leaf.path);
    if (!part || failure) return undefined;
    if (part.action.kind === 'omit') {
      records.push({ path: part.path, before: part.features, chain: [], loss: OMIT_LOSS, omitted: true });
      return omission(leaf, part, part.action.note, opts.host, date);
    }
    try {
      const done = await runChain(part, leaf, body, target, opts);
      records.push({ path: part.path, before: part.features, after: done.features, chain: done.chain, loss: done.loss });
      const { set, add } = replacementHeaders(leaf, done.output.contentType, done.output.params ?? {}, part.features, done.features, opts.host, date);
      return { set, add, body: done.output.body, encoding: done.output.contentType.startsWith('text/') ? 'text' : 'base64' };
    } catch (err) {
      const reply = err instanceof PartFailure ? err.reply : conversionFailed(`part ${part.path}: ${(err as Error).message}`);
      opts.log.warn({ part: part.path, reply: reply.lines.join(' ') }, 'conversion failed');
      if (part.marking.conversion === 'omission-permitted' && !part.marking.critical) {
        const note = `[A ${part.features.type} part was removed here by the relay: converting it failed (${reply.lines.join(' ')}), and the sender permitted omitting it.]\r\n`;
        actions.set(part.path, { kind: 'omit', note, reasons: [reply.lines.join(' ')] });
        records.push({ path: part.path, before: part.features, chain: [], loss: OMIT_LOSS, omitted: true });
        return omission(leaf, part, note, opts.host, date);
      }
      if (!part.marking.critical) {
        actions.set(part.path, { kind: 'keep', usable: false, reasons: [reply.lines.join(' ')] });
        return undefined;
      }
      actions.set(part.path, { kind: 'impossible', reply, reasons: [reply.lines.join(' ')] });
      failure ??= reply;
      return undefined;
    }
  };
  const selected = (leaf: MimeLeaf): boolean => {
    const a = byPath.get(leaf.path)?.action.kind;
    return a === 'convert' || a === 'omit';
  };

  let chunks: readonly Buffer[];
  let eol: string;
  const structure = scan ?? (await scanMessage(raw));
  if (structure.exact) {
    // Splice: decode only the parts converted, copy nothing else.
    const replacements = new Map<MimeLeaf, LeafReplacement>();
    for (const leaf of structure.leaves) {
      if (failure) break;
      if (!selected(leaf)) continue;
      const convert = byPath.get(leaf.path)?.action.kind === 'convert';
      const r = await handle(leaf, convert ? decodeBody(encodedBody(raw, leaf), leaf.encoding) : Buffer.alloc(0));
      if (r) replacements.set(leaf, r);
    }
    chunks = failure ? [] : spliceMessage(raw, structure.eol, replacements);
    eol = structure.eol;
  } else {
    const walked = await walkMessage(raw, { output: true, select: selected, visit: handle });
    chunks = walked.chunks ?? [];
    eol = walked.eol;
    // A walk that does not reproduce the bytes would change parts that must stay as they are: convert nothing.
    if (!walked.exact && !failure) {
      failure = conversionUnsupported('the message structure cannot be read exactly: its parts cannot be rewritten without changing the others');
    }
  }

  const parts = plan.parts.map((p) => (actions.has(p.path) ? { ...p, action: actions.get(p.path)! } : p));
  const loss = Math.round(records.reduce((s, r) => s + r.loss, 0) * 1e6) / 1e6;
  const record: ConversionRecord = { host: opts.host, date, parts: records, loss };
  const finalPlan: ConversionPlan = { ...plan, parts, loss, possible: failure === undefined, ...(failure && { reply: failure }) };
  if (failure) return { ok: false, reply: failure, plan: finalPlan, record };
  if (records.length === 0) return { ok: true, message: raw, record, plan: finalPlan };
  const trace = Buffer.from(formatField('Content-Conversions', contentConversions(record), eol), 'utf8');
  return { ok: true, message: Buffer.concat([trace, ...chunks]), record, plan: finalPlan };
}
