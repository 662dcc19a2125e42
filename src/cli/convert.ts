/**
 * `drucof-relay convert --caps 'EXPR' < in.eml > out.eml`: try the conversion
 * pipeline by hand. Plans the message for a DRUCOF recipient whose capabilities
 * are EXPR, prints the plan on stderr (per part: action, chain, loss) and writes
 * the converted message on stdout. Exit 0: converted (or nothing needed);
 * 1: the message cannot be made usable (nothing written); 2: bad expression,
 * unreadable input or a converter that failed to load.
 */
import type { Readable, Writable } from 'node:stream';
import { parseFeatureSet } from '../capabilities/feature-set/index.ts';
import type { RelayConfig } from '../config/schema.ts';
import { createConversionEngine, type ConversionEngine } from '../conversion/index.ts';
import type { PartFeatures } from '../model/feature-set.ts';
import type { ConversionPlan, PartPlan } from '../model/plan.ts';
import { replyText } from '../model/reply.ts';
import { silentLogger, type Logger } from '../ops/log.ts';

export interface ConvertCliOptions {
  /** Plan as for a recipient with DRUCOF (default true); false shows that nothing is converted. */
  readonly drucof?: boolean;
  /** Host named in the records. */
  readonly host?: string;
  readonly log?: Logger;
  /** Use this engine instead of building one from the config (tests). */
  readonly engine?: ConversionEngine;
}

async function readAll(input: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of input) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as string));
  return Buffer.concat(chunks);
}

function write(w: Writable, text: string): Promise<void> {
  return new Promise((resolve, reject) => w.write(text, (err) => (err ? reject(err) : resolve())));
}

function shape(f: PartFeatures): string {
  const dims = f['pix-x'] !== undefined && f['pix-y'] !== undefined ? ` ${f['pix-x']}x${f['pix-y']}` : f.unmeasured?.length ? ' (unreadable)' : '';
  const cs = f.charset ? ` ${f.charset}` : '';
  const color = f.color && f.color !== 'full' ? ` ${f.color}` : '';
  return `${f.type}${cs}${dims}${color}`;
}

/** One line per part: path, form, marking, action, loss, detail. */
export function formatPlan(plan: ConversionPlan): string {
  const rows = plan.parts.map((p: PartPlan) => {
    const a = p.action;
    const mark = `${p.marking.conversion}${p.marking.critical ? '' : ',non-critical'}${p.marking.lossless ? ',lossless' : ''}`;
    let action: string = a.kind;
    let loss = '0';
    let detail = '';
    switch (a.kind) {
      case 'keep':
        if (!a.usable) {
          action = 'keep (unusable)';
          detail = (a.reasons ?? []).join('; ');
        }
        break;
      case 'convert':
        loss = String(a.loss);
        detail = `${a.chain.join(' > ')} => ${shape(a.features)}`;
        break;
      case 'omit':
        loss = '100';
        detail = a.reasons.join('; ');
        break;
      case 'impossible':
        loss = '-';
        detail = `${replyText(a.reply)}${a.reasons.length ? ` [${a.reasons.join('; ')}]` : ''}`;
        break;
    }
    return [p.path, shape(p.features), mark, action, loss, detail];
  });
  const header = ['part', 'form', 'marking', 'action', 'loss', 'chain / reason'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const verdict = plan.possible ? `possible, total loss ${plan.loss}` : `NOT possible: ${plan.reply ? replyText(plan.reply) : 'unknown reason'}`;
  return [`target: ${plan.target}`, line(header), ...rows.map(line), `message: ${verdict}`, ''].join('\n');
}

/** Runs `convert`; returns the exit code. */
export async function runConvert(config: RelayConfig, caps: string, input: Readable, out: Writable, err: Writable, opts: ConvertCliOptions = {}): Promise<number> {
  const target = parseFeatureSet(caps);
  if (!target.ok) {
    await write(err, `drucof-relay convert: --caps: ${target.error} at position ${target.position}\n  ${caps}\n  ${' '.repeat(target.position)}^\n`);
    return 2;
  }
  let engine: ConversionEngine;
  try {
    engine = opts.engine ?? (await createConversionEngine(config, opts.log ?? silentLogger));
  } catch (e) {
    await write(err, `drucof-relay: ${(e as Error).message}\n`);
    return 2;
  }
  let raw: Buffer;
  let plan: ConversionPlan;
  try {
    raw = await readAll(input);
    plan = await engine.plan(raw, target.features, { drucof: opts.drucof ?? true });
  } catch (e) {
    await write(err, `drucof-relay convert: cannot read the message: ${(e as Error).message}\n`);
    return 2;
  }
  await write(err, formatPlan(plan));
  if (!plan.possible) return 1;
  const result = await engine.convert(raw, plan, opts.host !== undefined ? { host: opts.host } : {});
  if (!result.ok) {
    await write(err, `conversion failed: ${replyText(result.reply)}\n`);
    return 1;
  }
  const changed = result.plan.parts.filter((p, i) => p.action !== plan.parts[i]?.action);
  if (changed.length > 0) await write(err, `after conversion:\n${formatPlan(result.plan)}`);
  await write(err, `converted: ${result.record.parts.length} part(s), loss ${result.record.loss}, ${result.message.length} bytes\n`);
  await new Promise<void>((resolve, reject) => out.write(result.message, (e) => (e ? reject(e) : resolve())));
  return 0;
}
