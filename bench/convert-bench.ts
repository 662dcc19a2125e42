/**
 * `npm run bench:convert` — the conversion pipeline's cost (issue 5 §8).
 *
 * 1. Throughput: a message with a 12-megapixel JPEG and a 1600×1200 PNG, converted
 *    for a recipient that takes only JPEG up to 1024 px, through the whole
 *    pipeline (engine.plan + engine.convert: MIME walk, measuring, planning,
 *    isolation, records, re-serialising) against calling sharp directly on the
 *    same two decoded images with the same operations. Overhead = what the
 *    pipeline adds on top of sharp (goal < 15 %).
 * 2. Memory: peak RSS of a fresh process converting a 25 MB message (goal < 4× the
 *    message size), measured in a child process so the image generation here
 *    does not count.
 *
 * Options: --iterations N (default 40), --rss-only, --skip-rss. Results also go to
 * bench/results/convert-bench.json.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import MailComposer from 'nodemailer/lib/mail-composer';
import { parseFeatureSet, type FeatureSet } from '../src/capabilities/feature-set/index.ts';
import { parseConfig } from '../src/config/load.ts';
import { createConversionEngine, type ConversionEngine } from '../src/conversion/index.ts';
import { silentLogger } from '../src/ops/log.ts';

const TARGET = '(& (type="image/jpeg") (pix-x<=1024) (pix-y<=1024))';
const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};

function target(): FeatureSet {
  const r = parseFeatureSet(TARGET);
  if (!r.ok) throw new Error(r.error);
  return r.features;
}

/** A photo-like image: gradients and shapes with sensor-like noise (so JPEG sizes are realistic). */
async function photo(width: number, height: number, sigma: number, quality: number): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">
    <defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#1e90ff"/><stop offset="1" stop-color="#ff8c00"/></linearGradient></defs>
    <rect width="100%" height="100%" fill="url(#g)"/>
    <circle cx="${width * 0.3}" cy="${height * 0.5}" r="${height * 0.3}" fill="#2e8b57"/>
    <rect x="${width * 0.55}" y="${height * 0.2}" width="${width * 0.3}" height="${height * 0.5}" fill="#fff" stroke="#000" stroke-width="${width / 200}"/>
  </svg>`;
  const noise = await sharp({ create: { width, height, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma } } }).png().toBuffer();
  return sharp(Buffer.from(svg), { limitInputPixels: false })
    .composite([{ input: noise, blend: 'soft-light' }])
    .jpeg({ quality })
    .toBuffer();
}

async function screenshot(width: number, height: number): Promise<Buffer> {
  const rows = Array.from({ length: 30 }, (_, i) => `<rect x="40" y="${60 + i * 36}" width="${(i * 97) % (width - 80)}" height="18" fill="#${((i * 2654435761) >>> 8).toString(16).padStart(6, '0').slice(0, 6)}"/>`).join('');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="100%" height="100%" fill="#f4f4f4"/><rect width="100%" height="40" fill="#333"/>${rows}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

async function compose(attachments: { filename: string; content: Buffer; contentType: string }[]): Promise<Buffer> {
  const mail = new MailComposer({ from: 'sender@example.com', to: 'rcpt@example.net', subject: 'photos', attachments });
  return new Promise((resolve, reject) => mail.compile().build((err: Error | null, msg: Buffer) => (err ? reject(err) : resolve(msg))));
}

async function pipeline(engine: ConversionEngine, raw: Buffer, t: FeatureSet): Promise<Buffer> {
  const plan = await engine.plan(raw, t, { drucof: true });
  if (!plan.possible) throw new Error(`plan not possible: ${plan.reply?.lines.join(' ')}`);
  const r = await engine.convert(raw, plan, { host: 'bench.local' });
  if (!r.ok) throw new Error(`conversion failed: ${r.reply.lines.join(' ')}`);
  return r.message;
}

/** The same work with sharp alone: decode, fit into 1024×1024, JPEG q80 (as the converters do it). */
async function direct(jpeg: Buffer, png: Buffer): Promise<void> {
  for (const input of [jpeg, png]) {
    await sharp(input, { limitInputPixels: 100_000_000, failOn: 'warning' })
      .rotate()
      .resize(1024, 1024, { fit: 'inside' })
      .flatten({ background: '#ffffff' })
      .jpeg({ quality: 80, mozjpeg: true })
      .toBuffer();
  }
}

const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;

async function throughput(iterations: number) {
  const jpeg = await photo(4000, 3000, 18, 90);
  const png = await screenshot(1600, 1200);
  const raw = await compose([
    { filename: 'IMG_0001.JPG', content: jpeg, contentType: 'image/jpeg' },
    { filename: 'screen.png', content: png, contentType: 'image/png' },
  ]);
  const engine = await createConversionEngine(parseConfig({}), silentLogger);
  const t = target();
  const plan = await engine.plan(raw, t, { drucof: true });
  console.log(`message: ${mb(raw.length)} (JPEG 4000x3000 ${mb(jpeg.length)}, PNG 1600x1200 ${mb(png.length)}); recipient: ${TARGET}`);
  for (const p of plan.parts) console.log(`  part ${p.path} ${p.features.type} ${p.features['pix-x']}x${p.features['pix-y']}: ${p.action.kind === 'convert' ? `${p.action.chain.join(' > ')} (loss ${p.action.loss})` : p.action.kind}`);

  // Warm up both (sharp's first calls load codecs).
  for (let i = 0; i < 3; i++) {
    await pipeline(engine, raw, t);
    await direct(jpeg, png);
  }
  // Alternate the two, one message each, so that load from elsewhere hits both alike;
  // medians keep a stray pause from deciding the result (means are shown too).
  const pipe: number[] = [];
  const alone: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const order = i % 2 === 0 ? ([pipe, alone] as const) : ([alone, pipe] as const);
    for (const list of order) {
      const t0 = process.hrtime.bigint();
      if (list === pipe) await pipeline(engine, raw, t);
      else await direct(jpeg, png);
      list.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  const pipeMs = median(pipe);
  const sharpMs = median(alone);
  const overhead = (pipeMs - sharpMs) / sharpMs;
  const meanOverhead = (mean(pipe) - mean(alone)) / mean(alone);
  console.log(`pipeline: ${pipeMs.toFixed(1)} ms/message (median of ${iterations}; mean ${mean(pipe).toFixed(1)}) = ${(1000 / pipeMs).toFixed(2)} messages/s`);
  console.log(`sharp alone on the same images: ${sharpMs.toFixed(1)} ms/message (mean ${mean(alone).toFixed(1)}) = ${(1000 / sharpMs).toFixed(2)} messages/s`);
  console.log(`overhead of MIME + pipeline over sharp: ${(overhead * 100).toFixed(1)} % by medians, ${(meanOverhead * 100).toFixed(1)} % by means (goal < 15 %) ${overhead < 0.15 ? 'OK' : 'OVER'}`);
  return { messageBytes: raw.length, iterations, pipelineMsPerMessage: pipeMs, sharpMsPerMessage: sharpMs, messagesPerSecond: 1000 / pipeMs, overhead, meanOverhead };
}

/**
 * Linux keeps a process's peak RSS (VmHWM); writing 5 to /proc/self/clear_refs resets
 * it, so start-up (module loading and compiling, which can spike) does not count.
 */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** Child: read the message, convert it, report RSS. */
async function rssChild(file: string): Promise<void> {
  const engine = await createConversionEngine(parseConfig({}), silentLogger);
  const t = target();
  // Load sharp's codecs before the baseline, as a running relay has them loaded.
  await sharp({ create: { width: 8, height: 8, channels: 3, background: '#000' } }).jpeg().toBuffer();
  const startupPeak = peakRss();
  const reset = resetPeak();
  const baseline = process.memoryUsage().rss;
  const raw = readFileSync(file);
  const started = Date.now();
  const out = await pipeline(engine, raw, t);
  const ms = Date.now() - started;
  const peak = peakRss();
  process.stdout.write(JSON.stringify({ messageBytes: raw.length, outputBytes: out.length, baseline, startupPeak, peakReset: reset, peak, ms }) + '\n');
}

async function rss() {
  const dir = mkdtempSync(join(tmpdir(), 'convert-bench-'));
  try {
    // ≈ 25 MB on the wire: a 24-megapixel high-quality JPEG (base64 adds a third) and the PNG.
    const jpeg = await photo(6000, 4000, 64, 98);
    const png = await screenshot(1600, 1200);
    const raw = await compose([
      { filename: 'IMG_0002.JPG', content: jpeg, contentType: 'image/jpeg' },
      { filename: 'screen.png', content: png, contentType: 'image/png' },
    ]);
    const file = join(dir, 'big.eml');
    writeFileSync(file, raw);
    const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--rss-child', file], { encoding: 'utf8', maxBuffer: 1 << 20 });
    if (child.status !== 0) throw new Error(`rss child failed: ${child.stderr}`);
    const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as { messageBytes: number; outputBytes: number; baseline: number; startupPeak: number; peakReset: boolean; peak: number; ms: number };
    const ratio = r.peak / r.messageBytes;
    const added = (r.peak - r.baseline) / r.messageBytes;
    console.log(`25 MB message: ${mb(r.messageBytes)} (JPEG 6000x4000 ${mb(jpeg.length)}) → ${mb(r.outputBytes)} in ${r.ms} ms`);
    console.log(`  process RSS before the message: ${mb(r.baseline)} (Node + tsx + sharp/libvips loaded; start-up peak ${mb(r.startupPeak)}, ${r.peakReset ? 'reset before the message' : 'NOT reset: the peak below includes start-up'})`);
    console.log(`  peak RSS: ${mb(r.peak)} = ${ratio.toFixed(2)}× the message (goal < 4×) ${ratio < 4 ? 'OK' : 'OVER'}`);
    console.log(`  peak above the idle process: ${mb(r.peak - r.baseline)} = ${added.toFixed(2)}× the message`);
    return { ...r, ratio, addedRatio: added };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (args[0] === '--rss-child') {
  await rssChild(args[1]!);
} else {
  const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, sharp: sharp.versions.sharp, vips: sharp.versions.vips, concurrency: sharp.concurrency() };
  if (!args.includes('--rss-only')) results.throughput = await throughput(opt('--iterations', 40));
  if (!args.includes('--skip-rss')) results.memory = await rss();
  const dir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'convert-bench.json'), JSON.stringify(results, null, 2) + '\n');
}
