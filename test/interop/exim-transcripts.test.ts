/**
 * Transcripts of real PRDR dialogues with Exim 4.96, in both directions, for the
 * README's interop section. A recording TCP proxy (test/helpers/exim.ts
 * `startRecorder`) sits between the peers and writes down every line and every
 * half-close in arrival order; nothing is typed by hand. Dates, queue ids and
 * ports are replaced by placeholders so a rerun rewrites the same files unless
 * the dialogue itself changed:
 *
 *   test/interop/transcripts/exim-to-relay.txt   Exim client → relay (a policy refuses one recipient)
 *   test/interop/transcripts/relay-to-exim.txt   relay → Exim server (its PRDR ACL refuses one recipient)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { eximSend, findExim, removeEximInstances, startEximServer, startRecorder, type EximServer, type Recorder } from '../helpers/exim.ts';

const found = await findExim();
if (!found.exim) console.log(`exim: ${found.reason}; Exim interop tests skipped`);

const OUT = new URL('./transcripts/', import.meta.url);
const prefix = uniquePrefix('interop-exim-transcripts');
let hop: NextHopPeer;
let exim: EximServer;
let relay: RelayProcess;
let toRelay: Recorder;
let toExim: Recorder;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor<T>(what: string, fn: () => T | undefined | false, ms = 20_000): Promise<T> {
  for (const end = Date.now() + ms; ; await sleep(50)) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\nrelay output:\n${relay.output().slice(-4000)}`);
  }
}

/** Placeholders for what changes from run to run. */
export function normalise(t: string): string {
  return t
    .replace(/\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}(?: \([A-Z]+\))?/g, '<date>')
    .replace(/\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\b/g, '<exim-id>')
    .replace(/\bE<exim-id>@/g, '<exim-id>@')
    .replace(/\[QUEUEID [^\]]+\]/g, '[QUEUEID <queue-id>]')
    .replace(/\b(id|with E?SMTP id|with LMTP id) [0-9A-Z]{16,26}\b/g, '$1 <queue-id>')
    .replace(/\b127\.0\.0\.1\]?:\d{2,5}\b/g, (m) => m.replace(/:\d+$/, ':<port>'))
    .replace(/\bport \d{2,5}\b/g, 'port <port>')
    .replace(/\b(SIZE=)\d+/g, '$1<n>')
    .replace(/(Nice to meet you, )\S+/g, '$1<client rDNS>')
    .replace(/\(\S+ (\[127\.0\.0\.1\]\))/g, '(<client rDNS> $1')
    .replace(/<[a-z0-9]{6,16}@sender\.test>/g, '<message-id@sender.test>')
    .replace(/\b\d{6,12}-eximdsn-\d{6,12}\b/g, '<boundary>')
    .replace(/----_NmP-[0-9a-f-]+/g, '<boundary>');
}

function save(name: string, title: string, transcript: string): string {
  mkdirSync(OUT, { recursive: true });
  const text = `# ${title}\n# Recorded by test/interop/exim-transcripts.test.ts (C: client, S: server, (FIN): half-close).\n\n${normalise(transcript)}`;
  writeFileSync(new URL(name, OUT), text);
  return text;
}

describe.runIf(found.exim)(`PRDR transcripts with Exim ${found.exim?.version}`, () => {
  beforeAll(async () => {
    hop = await startNextHop({ dsn: true });
    exim = await startEximServer(found.exim!, { prdrRefuse: ['fighter@exim.test'], prdrText: 'the content is refused by fighter' });
    toExim = await startRecorder({ port: exim.port });
    relay = await startRelay({
      config: {
        hostname: 'relay.test',
        routes: { 'exim.test': `127.0.0.1:${toExim.port}` },
        policies: { 'fighter@example.net': { refuseWords: ['fight'] } },
        queue: { retrySchedule: ['1s'] },
      },
      env: { RELAY_SMARTHOST: `127.0.0.1:${hop.port}`, REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
    });
    toRelay = await startRecorder({ port: relay.port });
  });

  afterAll(async () => {
    await relay?.stop();
    await toRelay?.close();
    await toExim?.close();
    await exim?.stop();
    await hop?.close();
    await dropPrefix(prefix);
    await removeEximInstances();
  });

  it('Exim → relay: MAIL … PRDR, 353, one line per recipient, final reply, 221 after the half-close', async () => {
    const to = ['postmaster@example.net', 'fighter@example.net', 'lover@example.net'];
    const run = await eximSend(found.exim!, {
      port: toRelay.port,
      from: 'alice@sender.test',
      to,
      message: `From: alice@sender.test\nTo: ${to.join(', ')}\nSubject: fighting words\nMessage-ID: <${Math.random().toString(36).slice(2, 12)}@sender.test>\n\nLet us fight about it.\n`,
    });
    expect(run.status, run.logs()).toBe(0);
    await waitFor('the relay to close the recorded connection', () => /S: \(FIN/.test(toRelay.transcript()));
    const t = save('exim-to-relay.txt', `Exim ${found.exim!.version} (client) → drucof-relay (server); relay policy refuses fighter@example.net by content`, toRelay.transcript());
    const lines = t.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    expect(at(/^S: 250[- ]PRDR$/), t).toBeGreaterThan(0);
    expect(at(/^C: MAIL FROM:<alice@sender\.test> .*PRDR/), t).toBeGreaterThan(0);
    const s353 = at(/^S: 353/);
    expect(s353, t).toBeGreaterThan(0);
    expect(lines.slice(s353 + 1, s353 + 5).map((l) => l.slice(0, 6)), t).toEqual(['S: 250', 'S: 550', 'S: 250', 'S: 250']);
    // Exim pipelines QUIT after the dot and half-closes; the relay still answers everything.
    const quit = at(/^C: QUIT$/);
    expect(quit, t).toBeGreaterThan(0);
    expect(at(/^S: 221/), t).toBeGreaterThan(s353);
    expect(run.failed().map((f) => f.address), run.logs()).toEqual(['fighter@example.net']);
  });

  it('relay → Exim: MAIL … PRDR, and Exim’s 353 sequence with its ACL’s refusal', async () => {
    const to = ['postmaster@exim.test', 'fighter@exim.test', 'lover@exim.test'];
    await nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true }).sendMail({
      envelope: { from: 'alice@sender.test', to },
      raw: `From: alice@sender.test\r\nTo: ${to.join(', ')}\r\nSubject: one refused\r\nMessage-ID: <${Math.random().toString(36).slice(2, 12)}@sender.test>\r\n\r\nHello from the relay.\r\n`,
    });
    await waitFor('Exim to deliver', () => exim.delivered().filter((d) => d.raw.includes('Subject: one refused')).length >= 2);
    // The relay parks the connection for reuse once the 353 sequence is complete (no RSET
    // after a completed transaction); stopping it QUITs the parked one, so the transcript
    // ends like a dialogue, in the same order every run.
    await waitFor('the relay to read the whole 353 sequence', () => /^S: 353.*\nS: 250.*\nS: 550.*\nS: 250.*\nS: 250/m.test(toExim.transcript()), 10_000);
    await relay.stop();
    await waitFor('the relay to QUIT the recorded connection', () => /S: \(FIN/.test(toExim.transcript()), 10_000);
    const t = save('relay-to-exim.txt', `drucof-relay (client) → Exim ${found.exim!.version} (server); Exim's acl_smtp_data_prdr refuses fighter@exim.test`, toExim.transcript());
    const lines = t.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    expect(at(/^S: 250[- ]PRDR$/), t).toBeGreaterThan(0);
    expect(at(/^C: MAIL FROM:<alice@sender\.test>.* PRDR/), t).toBeGreaterThan(0);
    const s353 = at(/^S: 353/);
    expect(s353, t).toBeGreaterThan(0);
    expect(lines.slice(s353 + 1, s353 + 5).map((l) => l.slice(0, 6)), t).toEqual(['S: 250', 'S: 550', 'S: 250', 'S: 250']);
  });
});
