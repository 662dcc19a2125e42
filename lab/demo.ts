/**
 * `npm run lab:demo`: sends the demo messages through a running lab (`npm run
 * lab`; when none answers it starts one and stops it afterwards) and says, step
 * by step as it goes, what happened to each: the relay's and the next hop's
 * records in `drucof-relay explain`'s words (src/cli/explain.ts), the Maildir
 * files delivered, the failure reports the sender got.
 *
 *   1 convert         a PNG photo, DRUCOF, for photo@drucof.lab (JPEG <= 800 px only):
 *                     the relay asks the final hop (CONNEG), converts, the final hop delivers a JPEG
 *   2 legacy-convert  the same for fax@legacy.lab, known from the relay's own registry:
 *                     converted although the legacy hop knows nothing of DRUCOF
 *   3 prohibited      the photo marked `Content-Conversion: prohibited`: 5.6.2, and a failure report
 *   4 legacy          DRUCOF for anyone@legacy.lab, whom nobody can describe, behind a hop
 *                     without CONNEG or DRUCOF: 5.3.3 (branch `neither`), and a failure report
 *   5 inline          an INLINE-DSN session: text@legacy.lab (text only, known, behind a hop known
 *                     to lack DRUCOF) is refused inline after the data (554 5.6.3); plain@ is delivered
 *
 *   npm run lab:demo [-- --state var/lab/lab.json] [--json FILE] [--no-start]
 *
 * Exit 0 when every step went as described; otherwise 1, after one line saying
 * which did not (or one line naming the error that stopped the demo).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import MailComposer from 'nodemailer/lib/mail-composer';
import sharp from 'sharp';
import { explainRecipient } from '../src/cli/explain.ts';
import { decodeBody, encodedBody, scanMessage } from '../src/conversion/mime.ts';
import type { RecipientState } from '../src/model/recipient.ts';
import { replyText } from '../src/model/reply.ts';
import { pingRedis } from '../src/ops/redis-embedded.ts';
import { MessageStore } from '../src/queue/store.ts';
import { SmtpClient, greets } from './smtp.ts';
import { DEFAULT_DIR, ROOT, STATE_FILE, readState, shown, type LabState, type NodeName } from './topology.ts';

export class DemoError extends Error {}

export type StepId = 'convert' | 'legacy-convert' | 'prohibited' | 'legacy' | 'inline';

/** One hop's record of the step's recipient. */
export interface HopRecord {
  readonly node: NodeName;
  readonly queueId: string;
  readonly status: RecipientState['status'];
  readonly reply?: string;
  readonly enhanced?: string;
  readonly branch?: string;
}

export interface StepResult {
  readonly id: StepId;
  readonly title: string;
  readonly recipient: string;
  readonly expected: string;
  ok: boolean;
  problems: string[];
  /** The relay's record, then the next hop's (followed by the queue id in the relay's reply). */
  hops: HopRecord[];
  /** Where the recipient's story ended. */
  outcome?: { node: NodeName; status: string; enhanced?: string; reply?: string };
  /** INLINE-DSN: the replies after the data, as on the wire. */
  inline?: string[];
  /** Maildir files delivered to the recipient(s) of this step. */
  files: string[];
  /** What the delivered image became: media type and width. */
  image?: { type: string; format?: string; width?: number };
  /** The failure report the sender got (a file in its Maildir). */
  dsn?: string;
}

export interface DemoResult {
  readonly runId: string;
  readonly ok: boolean;
  readonly steps: StepResult[];
  /** Every Maildir file this run delivered. */
  readonly files: string[];
}

const SENDER = 'demo@drucof.lab';
const PHOTO = join(ROOT, 'test', 'fixtures', 'images', 'photo.png');
const SETTLE_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Ctx {
  readonly state: LabState;
  readonly runId: string;
  readonly stores: Readonly<Record<NodeName, MessageStore>>;
  readonly print: (line: string) => void;
  readonly png: Buffer;
}

/** Runs the five steps against a running lab. */
export async function runDemo(state: LabState, print: (line: string) => void = (l) => console.log(l)): Promise<DemoResult> {
  const runId = Date.now().toString(36);
  const redisByUrl = new Map<string, Redis>();
  for (const url of new Set(Object.values(state.nodes).map((n) => n.redisUrl))) {
    const u = new URL(url);
    if (!(await pingRedis(u.hostname, Number(u.port || 6379), 2000, true))) throw new DemoError(`the lab's Redis does not answer at ${url}`);
    redisByUrl.set(url, new Redis(url, { maxRetriesPerRequest: 1 }));
  }
  const store = (n: NodeName) => new MessageStore(redisByUrl.get(state.nodes[n].redisUrl)!, state.nodes[n].prefix);
  const stores = { relay: store('relay'), final: store('final'), legacy: store('legacy') };
  const png = await sharp(PHOTO).resize(1600, 1200, { fit: 'fill' }).png().toBuffer();
  const ctx: Ctx = { state, runId, stores, print, png };
  const steps: StepResult[] = [];
  try {
    const plan: [StepId, (ctx: Ctx, s: StepResult) => Promise<void>, string, string, string][] = [
      ['convert', stepConvert, 'A PNG photo (1600×1200) with DRUCOF for photo@drucof.lab, who can use only JPEG <= 800 px', 'photo@drucof.lab', 'the relay learns the capabilities by CONNEG from the final hop, converts to JPEG <= 800 px, the final hop delivers it into the Maildir'],
      ['legacy-convert', stepLegacyConvert, 'The same photo for fax@legacy.lab, known from the relay\'s own registry (JPEG <= 640 px)', 'fax@legacy.lab', 'converted by the relay and relayed plainly: the legacy hop needs to know nothing of DRUCOF'],
      ['prohibited', stepProhibited, 'The photo marked "Content-Conversion: prohibited", for photo@drucof.lab with DRUCOF', 'photo@drucof.lab', 'fails with 5.6.2 (a needed part is prohibited), and the sender gets a failure report'],
      ['legacy', stepLegacy, 'DRUCOF for anyone@legacy.lab, whom nobody can describe, behind the legacy hop', 'anyone@legacy.lab', 'fails with 5.3.3 (the hop has neither CONNEG nor DRUCOF), and the sender gets a failure report'],
      ['inline', stepInline, 'An INLINE-DSN session: the photo for text@legacy.lab (DRUCOF, text only) and plain@legacy.lab', 'text@legacy.lab', 'text@ is refused inline after the data (554 5.6.3), never queued; plain@ is delivered'],
    ];
    for (const [i, [id, run, title, recipient, expected]] of plan.entries()) {
      const s: StepResult = { id, title, recipient, expected, ok: true, problems: [], hops: [], files: [] };
      steps.push(s);
      print('');
      print(`[${i + 1}/${plan.length}] ${title}`);
      print(`      expected: ${expected}`);
      try {
        await run(ctx, s);
      } catch (err) {
        s.problems.push((err as Error).message);
      }
      s.ok = s.problems.length === 0;
      print(s.ok ? `      ✓ as expected` : `      ✗ ${s.problems.join('; ')}`);
    }
  } finally {
    await Promise.all(Object.values(stores).map((s) => s.close().catch(() => {})));
    for (const r of redisByUrl.values()) r.disconnect();
  }
  const files = Object.values(state.nodes)
    .flatMap((n) => (n.maildir ? maildirFiles(n.maildir) : []))
    .filter((f) => readFileSync(f, 'latin1').includes(`lab.${runId}.`));
  print('');
  print(`Maildir files of this run (${files.length}):`);
  for (const f of files) print(`  ${shown(f)}  ${summary(f)}`);
  return { runId, ok: steps.every((s) => s.ok), steps, files };
}

// ---- the steps ----------------------------------------------------------------

async function stepConvert(ctx: Ctx, s: StepResult): Promise<void> {
  const message = await compose(ctx, 'convert', 'a photo, converted for you', ctx.png, [s.recipient]);
  const id = await submit(ctx, 'convert', [{ address: s.recipient, drucof: true }], message);
  await followChain(ctx, s, id);
  expectHop(s, 'relay', 'converted-and-relayed', { branch: 'conneg-ok/usable' });
  expectHop(s, 'final', 'delivered');
  await expectImage(ctx, s, 'final', 'jpeg', 800);
}

async function stepLegacyConvert(ctx: Ctx, s: StepResult): Promise<void> {
  const message = await compose(ctx, 'legacy-convert', 'a photo for a legacy mailbox', ctx.png, [s.recipient]);
  const id = await submit(ctx, 'legacy-convert', [{ address: s.recipient, drucof: true }], message);
  await followChain(ctx, s, id);
  expectHop(s, 'relay', 'converted-and-relayed', { branch: 'conneg-ok/usable' });
  expectHop(s, 'legacy', 'delivered');
  await expectImage(ctx, s, 'legacy', 'jpeg', 640);
}

async function stepProhibited(ctx: Ctx, s: StepResult): Promise<void> {
  const message = await compose(ctx, 'prohibited', 'a photo that must not be converted', ctx.png, [s.recipient], 'prohibited');
  const id = await submit(ctx, 'prohibited', [{ address: s.recipient, drucof: true }], message);
  await followChain(ctx, s, id);
  if (s.outcome?.status !== 'failed' || s.outcome.enhanced !== '5.6.2') s.problems.push(`ended ${s.outcome?.status ?? '?'} ${s.outcome?.enhanced ?? ''} at ${s.outcome?.node ?? '?'}, not failed 5.6.2`);
  await expectReport(ctx, s, 'prohibited', '5.6.2');
}

async function stepLegacy(ctx: Ctx, s: StepResult): Promise<void> {
  const message = await compose(ctx, 'legacy', 'a photo for an unknown legacy mailbox', ctx.png, [s.recipient]);
  const id = await submit(ctx, 'legacy', [{ address: s.recipient, drucof: true }], message);
  await followChain(ctx, s, id);
  expectHop(s, 'relay', 'failed', { enhanced: '5.3.3', branch: 'neither' });
  await expectReport(ctx, s, 'legacy', '5.3.3');
}

async function stepInline(ctx: Ctx, s: StepResult): Promise<void> {
  const plain = 'plain@legacy.lab';
  const message = await compose(ctx, 'inline', 'a photo for a text-only mailbox', ctx.png, [s.recipient, plain]);
  const { relay } = ctx.state.nodes;
  const c = await SmtpClient.connect(relay.smtp.host, relay.smtp.port);
  const after: string[] = [];
  let queueId: string | undefined;
  try {
    if ((await c.read()).code !== 220) throw new DemoError('the relay did not greet with 220');
    await c.expect('EHLO lab-demo', 250);
    await c.expect(`MAIL FROM:<${SENDER}> INLINE-DSN ENVID=lab.${ctx.runId}.inline`, 250);
    for (const [rcpt, want] of [[`RCPT TO:<${s.recipient}> DRUCOF`, 352], [`RCPT TO:<${plain}>`, 250]] as const) {
      const r = await c.command(rcpt);
      ctx.print(`      ${rcpt} → ${r.lines.join(' / ')}`);
      if (r.code !== want) s.problems.push(`${rcpt} got "${r.lines.join(' / ')}", not ${want}${want === 352 ? " (the relay must know the legacy hop's EHLO: step 4 teaches it)" : ''}`);
    }
    await c.expect('DATA', 354);
    c.sendMessage(message);
    // 353, one reply per recipient answered 352 (each naming it), then the final reply.
    for (;;) {
      const r = await c.read(60_000);
      after.push(...r.lines);
      ctx.print(`      after the data: ${r.lines.join(' / ')}`);
      if (r.code !== 353 && !/^\d{3}[ -]\d\.\d+\.\d+ <[^>]+>/.test(r.lines[0] ?? '')) {
        queueId = r.reply?.tags?.queueId;
        if (r.code !== 250) s.problems.push(`the final reply was "${r.lines.join(' / ')}", not 250`);
        break;
      }
    }
  } finally {
    await c.quit();
  }
  s.inline = after;
  const refusal = after.find((l) => l.includes(`<${s.recipient}>`));
  if (!refusal || !/^554[ -]5\.6\.3 /.test(refusal)) s.problems.push(`no "554 5.6.3 <${s.recipient}>" after the data`);
  else s.outcome = { node: 'relay', status: 'refused inline', enhanced: '5.6.3', reply: refusal };
  if (!queueId) return void s.problems.push('no queue id in the final reply');
  ctx.print(`      queued at relay as ${queueId}`);
  const meta = await ctx.stores.relay.loadMeta(queueId);
  if (meta?.recipients.some((r) => r.address === s.recipient)) s.problems.push(`${s.recipient} was queued although it was refused`);
  // plain@ goes its way like any other recipient.
  const other: StepResult = { ...s, recipient: plain, hops: [], problems: [], files: [] };
  await followChain(ctx, other, queueId);
  expectHop(other, 'legacy', 'delivered');
  s.hops.push(...other.hops);
  s.problems.push(...other.problems.map((p) => `${plain}: ${p}`));
  s.files = findFiles(ctx.state.nodes.legacy.maildir, 'legacy.lab', 'plain', `lab.${ctx.runId}.inline@`);
  if (s.files.length === 0) s.problems.push(`${plain}: no file in the legacy hop's Maildir`);
  for (const f of s.files) ctx.print(`      delivered: ${shown(f)}`);
}

// ---- sending ------------------------------------------------------------------

/** A two-part message (text + the image as an attachment), with this run's Message-ID. */
async function compose(ctx: Ctx, step: StepId, subject: string, image: Buffer, to: readonly string[], marking?: string): Promise<Buffer> {
  const mail = new MailComposer({
    from: SENDER,
    to: [...to],
    subject: `[lab ${ctx.runId}] ${step}: ${subject}`,
    messageId: `<lab.${ctx.runId}.${step}@drucof.lab>`,
    text: `drucof-relay lab demo, step "${step}".`,
    attachments: [{ filename: 'photo.png', content: image, contentType: 'image/png', ...(marking && { headers: { 'Content-Conversion': marking } }) }],
  });
  return new Promise((done, fail) => mail.compile().build((err: Error | null, msg: Buffer) => (err ? fail(err) : done(msg))));
}

/** One plain transaction into the relay; the queue id of its 250. */
async function submit(ctx: Ctx, step: StepId, rcpts: readonly { address: string; drucof: boolean }[], message: Buffer): Promise<string> {
  const { relay } = ctx.state.nodes;
  const c = await SmtpClient.connect(relay.smtp.host, relay.smtp.port);
  try {
    if ((await c.read()).code !== 220) throw new DemoError('the relay did not greet with 220');
    await c.expect('EHLO lab-demo', 250);
    await c.expect(`MAIL FROM:<${SENDER}> ENVID=lab.${ctx.runId}.${step}`, 250);
    for (const r of rcpts) await c.expect(`RCPT TO:<${r.address}>${r.drucof ? ' DRUCOF' : ''}`, 250);
    await c.expect('DATA', 354);
    c.sendMessage(message);
    const done = await c.read(60_000);
    if (done.code !== 250) throw new DemoError(`the relay answered the data with "${done.lines.join(' / ')}"`);
    const id = done.reply?.tags?.queueId;
    if (!id) throw new DemoError(`no queue id in "${done.lines.join(' / ')}"`);
    ctx.print(`      sent to relay ${relay.smtp.host}:${relay.smtp.port}: ${done.lines.join(' / ')}`);
    return id;
  } finally {
    await c.quit();
  }
}

// ---- reading what happened ------------------------------------------------------

/** The next hop of an address in the lab. */
const nextNode = (address: string): NodeName | undefined =>
  address.endsWith('@drucof.lab') ? 'final' : address.endsWith('@legacy.lab') ? 'legacy' : undefined;

/** Waits for the recipient's record at `node` to be final (or the time to run out), and prints it as `explain` does. */
async function settle(ctx: Ctx, node: NodeName, id: string, address: string): Promise<RecipientState | undefined> {
  ctx.print(`      waiting for ${node} (queue id ${id}) …`);
  let last: RecipientState | undefined;
  for (const end = Date.now() + SETTLE_MS; Date.now() < end; await sleep(100)) {
    last = (await ctx.stores[node].loadMeta(id))?.recipients.find((r) => r.address === address);
    if (last && last.status !== 'queued' && last.status !== 'deferred') break;
  }
  if (!last) return undefined;
  ctx.print(`      ${node}:`);
  for (const line of explainRecipient(last)) ctx.print(`        ${line}`);
  return last;
}

/** The relay's record, then — when it handed the message on — the next hop's, found by the queue id in its 250. */
async function followChain(ctx: Ctx, s: StepResult, relayId: string): Promise<void> {
  let node: NodeName = 'relay';
  let id = relayId;
  for (;;) {
    const r = await settle(ctx, node, id, s.recipient);
    if (!r) return void s.problems.push(`${node} has no record of ${s.recipient} in ${id}`);
    const hop: HopRecord = {
      node,
      queueId: id,
      status: r.status,
      ...(r.lastReply && { reply: replyText(r.lastReply) }),
      ...(r.lastReply?.enhanced && { enhanced: r.lastReply.enhanced }),
      ...(r.decision?.branch && { branch: r.decision.branch }),
    };
    s.hops.push(hop);
    s.outcome = { node, status: r.status, ...(hop.enhanced && { enhanced: hop.enhanced }), ...(hop.reply && { reply: hop.reply }) };
    if (r.status === 'queued' || r.status === 'deferred') return void s.problems.push(`still ${r.status} at ${node} after ${SETTLE_MS / 1000} s${hop.reply ? `: ${hop.reply}` : ''}`);
    const next: NodeName | undefined = node === 'relay' ? nextNode(s.recipient) : undefined;
    const nextId = r.lastReply?.tags?.queueId;
    if (!next || !nextId || !['relayed', 'relayed-with-drucof', 'converted-and-relayed'].includes(r.status)) return;
    node = next;
    id = nextId;
  }
}

function expectHop(s: StepResult, node: NodeName, status: RecipientState['status'], want: { enhanced?: string; branch?: string } = {}): void {
  const h = s.hops.find((x) => x.node === node);
  if (!h) return void s.problems.push(`no record at ${node}`);
  const got = `${h.status}${h.enhanced ? ` ${h.enhanced}` : ''}${h.branch ? ` (${h.branch})` : ''}`;
  if (h.status !== status || (want.enhanced && h.enhanced !== want.enhanced) || (want.branch && h.branch !== want.branch)) {
    s.problems.push(`${node}: ${got}, expected ${status}${want.enhanced ? ` ${want.enhanced}` : ''}${want.branch ? ` (${want.branch})` : ''}`);
  }
}

/** The step's file in `node`'s Maildir holds the image as `format`, at most `maxWidth` px wide. */
async function expectImage(ctx: Ctx, s: StepResult, node: NodeName, format: string, maxWidth: number): Promise<void> {
  const [local, domain] = s.recipient.split('@') as [string, string];
  s.files = findFiles(ctx.state.nodes[node].maildir, domain, local, `lab.${ctx.runId}.${s.id}@`);
  if (s.files.length !== 1) return void s.problems.push(`${s.files.length} files for ${s.recipient} in ${node}'s Maildir, expected 1`);
  const raw = readFileSync(s.files[0]!);
  const scan = await scanMessage(raw);
  const leaf = scan.leaves.find((l) => l.type.startsWith('image/'));
  if (!leaf) return void s.problems.push('the delivered message has no image');
  const meta = await sharp(decodeBody(encodedBody(raw, leaf), leaf.encoding)).metadata().catch(() => undefined);
  s.image = { type: leaf.type, ...(meta?.format && { format: meta.format }), ...(meta?.width && { width: meta.width }) };
  ctx.print(`      delivered: ${shown(s.files[0]!)}  (${leaf.type}, ${meta?.width ?? '?'}×${meta?.height ?? '?'} px)`);
  if (meta?.format !== format || !meta.width || meta.width > maxWidth) s.problems.push(`the image is ${leaf.type} (${meta?.format ?? 'unreadable'}, ${meta?.width ?? '?'} px), expected ${format} <= ${maxWidth} px`);
}

/** A failure report (multipart/report) for this step arrives in the sender's Maildir at the final hop. */
async function expectReport(ctx: Ctx, s: StepResult, step: StepId, status: string): Promise<void> {
  const needle = `lab.${ctx.runId}.${step}`;
  ctx.print(`      waiting for the failure report to ${SENDER} …`);
  for (const end = Date.now() + 20_000; Date.now() < end; await sleep(200)) {
    const found = findFiles(ctx.state.nodes.final.maildir, 'drucof.lab', 'demo', needle).find((f) => /delivery-status/i.test(readFileSync(f, 'latin1')));
    if (found) {
      s.dsn = found;
      const text = readFileSync(found, 'latin1');
      const got = /^Status:\s*(\S+)/im.exec(text)?.[1];
      ctx.print(`      failure report: ${shown(found)}  (Status: ${got ?? '?'})`);
      if (got !== status) s.problems.push(`the report says Status: ${got ?? 'nothing'}, expected ${status}`);
      return;
    }
  }
  s.problems.push(`no failure report for ${s.recipient} in ${SENDER}'s Maildir`);
}

/** Files in `<root>/<domain>/<local>/{new,cur}` containing `needle`. */
function findFiles(root: string | undefined, domain: string, local: string, needle: string): string[] {
  if (!root) return [];
  return ['new', 'cur']
    .map((sub) => join(root, domain, local, sub))
    .filter((d) => existsSync(d))
    .flatMap((d) => readdirSync(d).map((f) => join(d, f)))
    .filter((f) => readFileSync(f, 'latin1').includes(needle));
}

/** Every message file under a Maildir root (`<domain>/<local>/{new,cur}/*`). */
function maildirFiles(root: string): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  for (const domain of readdirSync(root)) {
    const dd = join(root, domain);
    for (const local of safeList(dd)) {
      for (const sub of ['new', 'cur']) for (const f of safeList(join(dd, local, sub))) out.push(join(dd, local, sub, f));
    }
  }
  return out;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** `Subject` and the media types of a Maildir file, for the listing. */
function summary(file: string): string {
  const text = readFileSync(file, 'latin1');
  const head = text.slice(0, text.search(/\r?\n\r?\n/));
  const subject = /^Subject:\s*(.*)$/im.exec(head)?.[1]?.trim() ?? '';
  const types = [...new Set([...text.matchAll(/^Content-Type:\s*([\w.+-]+\/[\w.+-]+)/gim)].map((m) => m[1]!.toLowerCase()))].filter((t) => !t.startsWith('multipart/'));
  return `${subject}${types.length ? `  [${types.join(', ')}]` : ''}`;
}

// ---- the command ------------------------------------------------------------------

/** Finds the running lab, or starts one (a child, stopped after the demo). */
async function findOrStartLab(stateFile: string, mayStart: boolean, print: (l: string) => void): Promise<{ state: LabState; own?: ChildProcess }> {
  const found = readState(stateFile);
  if (found && (await greets(found.nodes.relay.smtp.host, found.nodes.relay.smtp.port))) return { state: found };
  if (!mayStart) throw new DemoError(`no lab answers (${shown(stateFile)}): start one with npm run lab`);
  if (found) throw new DemoError(`the lab of ${shown(stateFile)} (pid ${found.pid}) runs but its relay does not answer at ${found.nodes.relay.smtp.host}:${found.nodes.relay.smtp.port}`);
  print(`lab:demo: no lab is running (${shown(stateFile)}): starting one, and stopping it after the demo …`);
  const native = join(ROOT, 'lab', 'native.ts');
  const own = spawn(process.execPath, ['--import', 'tsx', native, '--dir', dirname(stateFile)], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  own.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  for (const end = Date.now() + 90_000; Date.now() < end; await sleep(250)) {
    if (own.exitCode !== null) throw new DemoError(`the lab did not start: ${err.trim().split('\n')[0] ?? `exit ${own.exitCode}`}`);
    const state = readState(stateFile);
    if (state && state.pid === own.pid) return { state, own };
  }
  own.kill('SIGTERM');
  throw new DemoError('the lab did not start within 90 s');
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { state: { type: 'string' }, json: { type: 'string' }, 'no-start': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    console.log('npm run lab:demo [-- --state FILE (var/lab/lab.json)] [--json FILE] [--no-start]');
    return 0;
  }
  const stateFile = resolve(values.state ?? join(DEFAULT_DIR, STATE_FILE));
  const print = (l: string) => console.log(l);
  const { state, own } = await findOrStartLab(stateFile, !values['no-start'], print);
  try {
    print(`lab:demo: through the lab at ${state.nodes.relay.smtp.host}:${state.nodes.relay.smtp.port} (${shown(join(state.dir, STATE_FILE))})`);
    const result = await runDemo(state, print);
    if (values.json) writeFileSync(values.json, JSON.stringify(result, null, 2) + '\n');
    const bad = result.steps.filter((s) => !s.ok);
    print('');
    if (bad.length === 0) print(`lab:demo: all ${result.steps.length} steps went as expected`);
    else process.stderr.write(`lab:demo: ${bad.length} of ${result.steps.length} steps did not go as expected: ${bad.map((s) => s.id).join(', ')}\n`);
    return bad.length === 0 ? 0 : 1;
  } finally {
    if (own && own.exitCode === null) {
      print('lab:demo: stopping the lab it started …');
      await new Promise<void>((done) => {
        own.once('exit', () => done());
        own.kill('SIGTERM');
      });
    }
  }
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  main().then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      process.stderr.write(`lab:demo: ${(err as Error)?.message ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
