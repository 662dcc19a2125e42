/**
 * Exim 4.96 (Debian 12's build, private copy: test/helpers/exim.ts) as the
 * upstream client: it delivers one three-recipient message to the relay (a
 * process, as users run it) with `hosts_try_prdr = *` and `-odi`. A relay policy
 * refuses one recipient by content after DATA; through PRDR (protocols.md A4b)
 * Exim must record exactly that one as failed and bounce it to the sender, and
 * record the other two as delivered, while the relay's next hop gets the message
 * for those two only. Exim pipelines QUIT after the dot and half-closes before it
 * reads the 353 sequence (libraries.md §1): a lost reply shows here as `==`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { eximSend, findExim, removeEximInstances, type EximClientRun } from '../helpers/exim.ts';

const found = await findExim();
if (!found.exim) console.log(`exim: ${found.reason}; Exim interop tests skipped`);

const prefix = uniquePrefix('interop-exim-client');
let hop: NextHopPeer;
let relay: RelayProcess;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor<T>(what: string, fn: () => T | undefined | false, ms = 20_000): Promise<T> {
  for (const end = Date.now() + ms; ; await sleep(50)) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\nrelay output:\n${relay.output().slice(-4000)}`);
  }
}

const RCPTS = ['postmaster@example.net', 'fighter@example.net', 'lover@example.net'];

function message(subject: string, body: string): string {
  return [
    'From: Alice <alice@sender.test>',
    `To: ${RCPTS.join(', ')}`,
    `Subject: ${subject}`,
    `Message-ID: <${Math.random().toString(36).slice(2)}@sender.test>`,
    '',
    body,
    '',
  ].join('\n');
}

/** Exim's run and what the relay's next hop got for this message (by subject). */
async function send(subject: string, body: string, expectAtHop: boolean): Promise<{ exim: EximClientRun; atHop: string[] }> {
  const run = await eximSend(found.exim!, { port: relay.port, from: 'alice@sender.test', to: RCPTS, message: message(subject, body) });
  expect(run.status, run.logs()).toBe(0);
  const forUs = () => hop.messages.filter((m) => m.body.toString('latin1').includes(`Subject: ${subject}`));
  if (expectAtHop) await waitFor(`the next hop to get "${subject}"`, () => forUs().length > 0);
  else await sleep(1000);
  return { exim: run, atHop: forUs().flatMap((m) => m.rcptTo) };
}

describe.runIf(found.exim)(`Exim ${found.exim?.version} as the upstream client (PRDR)`, () => {
  beforeAll(async () => {
    hop = await startNextHop({ dsn: true });
    relay = await startRelay({
      config: {
        hostname: 'relay.test',
        policies: { 'fighter@example.net': { refuseWords: ['fight'] } },
      },
      env: { RELAY_SMARTHOST: `127.0.0.1:${hop.port}`, REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
    });
  });

  afterAll(async () => {
    await relay?.stop();
    await hop?.close();
    await dropPrefix(prefix);
    await removeEximInstances();
  });

  it('delivers all three when no policy objects, with PRDR in use', async () => {
    const { exim, atHop } = await send('peaceful', 'Let us have tea.', true);
    expect(exim.delivered().sort(), exim.logs()).toEqual([...RCPTS].sort());
    expect(exim.failed(), exim.logs()).toEqual([]);
    expect(exim.deferred(), exim.logs()).toEqual([]);
    // Exim marks a delivery made through a PRDR transaction with `PRDR` in its log line.
    const lines = exim.logLines().filter((l) => l.flag === '=>' || l.flag === '->');
    for (const l of lines) expect(l.rest, l.line).toMatch(/ PRDR /);
    expect(atHop.sort()).toEqual([...RCPTS].sort());
  });

  it('fails exactly the recipient a policy refuses after DATA, bounces it, delivers the other two', async () => {
    const { exim, atHop } = await send('fighting words', 'Let us fight about it.', true);
    expect(exim.failed().map((f) => f.address), exim.logs()).toEqual(['fighter@example.net']);
    expect(exim.failed()[0]!.error, exim.logs()).toMatch(/PRDR error after DATA: 5\d\d /);
    expect(exim.delivered().sort(), exim.logs()).toEqual(['lover@example.net', 'postmaster@example.net']);
    expect(exim.deferred(), exim.logs()).toEqual([]);

    // Exim's bounce to the sender names that one recipient and the relay's reason.
    const bounce = await exim.waitFor('Exim to bounce to the sender', () => exim.bounces()[0], 10_000);
    expect(bounce.to).toBe('alice@sender.test');
    expect(bounce.raw).toMatch(/^X-Failed-Recipients: fighter@example\.net$/m);
    expect(bounce.raw).toMatch(/^Final-Recipient: rfc822;fighter@example\.net$/m);
    expect(bounce.raw).not.toMatch(/Final-Recipient: rfc822;(postmaster|lover)@/);

    // The relay passed the message on for the two it accepted, and only for them.
    expect(atHop.sort()).toEqual(['lover@example.net', 'postmaster@example.net']);
  });
});
