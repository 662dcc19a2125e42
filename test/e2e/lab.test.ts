/**
 * The native lab as a person runs it: `npm run lab` (lab/native.ts) as a child on
 * free ports, then `npm run lab:demo` (lab/demo.ts) against it, then SIGTERM.
 * The demo's outcomes are checked from its JSON report and from the Maildirs
 * themselves: the photo converted by the smarthost and delivered by the final hop
 * as a JPEG; the prohibited part failed with 5.6.2 and reported; the DRUCOF
 * recipient behind the legacy hop failed with 5.3.3 and reported; the INLINE-DSN
 * session refused inline. After SIGTERM, every child the lab started has exited.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { decodeBody, encodedBody, scanMessage } from '../../src/conversion/mime.ts';
import { alive, readState, type LabState } from '../../lab/topology.ts';
import { describeLab } from '../../lab/native.ts';
import type { DemoResult, StepResult } from '../../lab/demo.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const prefix = uniquePrefix('e2e-lab');
const dir = mkdtempSync(join(tmpdir(), 'drucof-lab-'));
let lab: ChildProcess;
let labOutput = '';
let state: LabState;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const exited = (p: ChildProcess) => new Promise<number | null>((done) => (p.exitCode !== null || p.signalCode !== null ? done(p.exitCode) : p.once('exit', (code) => done(code))));

/** Runs `node --import tsx <script> args`, collecting its output. */
function run(script: string, args: string[]): { proc: ChildProcess; output: () => string } {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(ROOT, script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { proc, output: () => out };
}

beforeAll(async () => {
  const started = run('lab/native.ts', ['--port', '0', '--dir', dir, '--prefix', prefix, '--redis', REDIS_URL]);
  lab = started.proc;
  for (const end = Date.now() + 45_000; ; await sleep(100)) {
    labOutput = started.output();
    const s = readState(dir);
    if (s && s.pid === lab.pid && /Ctrl-C stops the lab/.test(labOutput)) {
      state = s;
      break;
    }
    if (lab.exitCode !== null) throw new Error(`the lab exited with ${lab.exitCode}:\n${labOutput}`);
    if (Date.now() > end) throw new Error(`the lab did not start within 45 s:\n${labOutput}`);
  }
  // Keep collecting.
  lab.stdout!.on('data', (d: Buffer) => (labOutput += d.toString()));
  lab.stderr!.on('data', (d: Buffer) => (labOutput += d.toString()));
}, 60_000);

afterAll(async () => {
  if (lab && lab.exitCode === null && lab.signalCode === null) {
    lab.kill('SIGKILL');
    for (const pid of state?.children ?? []) if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  for (const n of ['relay', 'final', 'legacy']) await dropPrefix(`${prefix}-${n}`);
  rmSync(dir, { recursive: true, force: true });
});

describe('npm run lab', () => {
  it('prints the topology, the ports and what to try', () => {
    const { relay, final, legacy } = state.nodes;
    expect(labOutput).toContain(`relay   127.0.0.1:${relay.smtp.port}`);
    expect(labOutput).toContain(`final   127.0.0.1:${final.smtp.port}`);
    expect(labOutput).toContain(`legacy  127.0.0.1:${legacy.smtp.port}`);
    expect(labOutput).toMatch(new RegExp(`swaks --server 127\\.0\\.0\\.1:${relay.smtp.port} `));
    expect(labOutput).toContain(`exec 3<>/dev/tcp/127.0.0.1/${relay.smtp.port}`);
    expect(labOutput).toContain('RCPT TO:<photo@drucof.lab> DRUCOF');
    expect(new Set([relay.smtp.port, final.smtp.port, legacy.smtp.port, relay.http.port, final.http.port, legacy.http.port]).size).toBe(6);
    expect([relay.prefix, final.prefix, legacy.prefix]).toEqual([`${prefix}-relay`, `${prefix}-final`, `${prefix}-legacy`]);
    expect(state.children).toHaveLength(3); // three relays, no Redis of its own (one was given)
    expect(labOutput).toContain(describeLab(state).join('\n'));
  });
});

describe('npm run lab:demo', () => {
  let result: DemoResult;
  let output = '';
  const step = (id: StepResult['id']) => result.steps.find((s) => s.id === id)!;

  beforeAll(async () => {
    const json = join(dir, 'demo.json');
    const demo = run('lab/demo.ts', ['--state', join(dir, 'lab.json'), '--json', json, '--no-start']);
    const code = await exited(demo.proc);
    output = demo.output();
    if (!existsSync(json)) throw new Error(`the demo wrote no report (exit ${code}):\n${output}\nlab:\n${labOutput}`);
    result = JSON.parse(readFileSync(json, 'utf8')) as DemoResult;
    if (code !== 0) throw new Error(`the demo exited with ${code}:\n${output}`);
  }, 90_000);

  it('prints a line per step as it goes, with the records in explain\'s words', () => {
    for (let i = 1; i <= 5; i++) expect(output).toContain(`[${i}/5] `);
    expect(output).toContain('DRUCOF: yes — branch conneg-ok/usable');
    expect(output).toContain("[from the next hop's CONNEG answer]");
    expect(output).toMatch(/Maildir files of this run \(5\):/);
    expect(output).toContain('lab:demo: all 5 steps went as expected');
    expect(result.ok).toBe(true);
  });

  it('a PNG for a JPEG-only recipient: converted by the smarthost (capabilities by CONNEG), delivered by the final hop as a JPEG', async () => {
    const s = step('convert');
    expect(s.hops.map((h) => [h.node, h.status, h.branch])).toEqual([
      ['relay', 'converted-and-relayed', 'conneg-ok/usable'],
      ['final', 'delivered', undefined],
    ]);
    expect(s.files).toHaveLength(1);
    const file = s.files[0]!;
    expect(file.startsWith(join(state.nodes.final.maildir!, 'drucof.lab', 'photo', 'new') + '/')).toBe(true);
    const raw = readFileSync(file);
    expect(raw.toString('latin1')).toMatch(/^Content-Conversions: relay\.lab; 2 image\/png -> image\/jpeg /m);
    const leaf = (await scanMessage(raw)).leaves.find((l) => l.type.startsWith('image/'))!;
    expect(leaf.type).toBe('image/jpeg');
    const meta = await sharp(decodeBody(encodedBody(raw, leaf), leaf.encoding)).metadata();
    expect(meta.format).toBe('jpeg');
    expect(meta.width).toBeLessThanOrEqual(800);
  });

  it('a recipient the smarthost knows behind the legacy hop: converted there, delivered plainly', () => {
    const s = step('legacy-convert');
    expect(s.hops.map((h) => [h.node, h.status])).toEqual([
      ['relay', 'converted-and-relayed'],
      ['legacy', 'delivered'],
    ]);
    expect(s.image).toMatchObject({ type: 'image/jpeg', format: 'jpeg' });
    expect(s.image!.width).toBeLessThanOrEqual(640);
    expect(s.files[0]!.startsWith(join(state.nodes.legacy.maildir!, 'legacy.lab', 'fax', 'new'))).toBe(true);
  });

  it('a prohibited part: the recipient fails with 5.6.2, and the sender gets a failure report', () => {
    const s = step('prohibited');
    expect(s.outcome).toMatchObject({ status: 'failed', enhanced: '5.6.2' });
    expect(s.files).toEqual([]);
    const report = readFileSync(s.dsn!, 'latin1');
    expect(report).toMatch(/^Content-Type: multipart\/report;/im);
    expect(report).toMatch(/report-type="?delivery-status/i);
    expect(report).toContain('Final-Recipient: rfc822;photo@drucof.lab');
    expect(report).toMatch(/^Status: 5\.6\.2/m);
  });

  it('DRUCOF behind the legacy hop, capabilities unknown: 5.3.3 (branch neither), with a failure report', () => {
    const s = step('legacy');
    expect(s.hops).toEqual([expect.objectContaining({ node: 'relay', status: 'failed', enhanced: '5.3.3', branch: 'neither' })]);
    const report = readFileSync(s.dsn!, 'latin1');
    expect(report).toContain('Final-Recipient: rfc822;anyone@legacy.lab');
    expect(report).toMatch(/^Status: 5\.3\.3/m);
    expect(report).toMatch(/^Original-Envelope-Id: lab\.\w+\.legacy/m);
  });

  it('an INLINE-DSN session: the recipient the relay can already decide is refused inline, the other delivered', () => {
    const s = step('inline');
    expect(s.inline![0]).toMatch(/^353 /);
    expect(s.inline![1]).toMatch(/^554 5\.6\.3 <text@legacy\.lab> /);
    expect(s.inline![2]).toMatch(/^250 2\.0\.0 \[QUEUEID \S+\] /);
    expect(s.hops.map((h) => [h.node, h.status])).toEqual([
      ['relay', 'relayed'],
      ['legacy', 'delivered'],
    ]);
    expect(s.files).toHaveLength(1);
  });
});

describe('stopping the lab', () => {
  it('SIGTERM stops every child it started, removes its state file, and exits 0', async () => {
    const pids = [...state.children];
    expect(pids.every(alive)).toBe(true);
    lab.kill('SIGTERM');
    const code = await Promise.race([exited(lab), sleep(30_000).then(() => 'timeout' as const)]);
    expect(code, labOutput).toBe(0);
    expect(pids.filter(alive)).toEqual([]);
    expect(existsSync(join(dir, 'lab.json'))).toBe(false);
    expect(labOutput).toContain('lab: stopped');
  }, 40_000);
});
