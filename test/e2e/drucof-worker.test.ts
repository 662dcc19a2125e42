/**
 * What the worker does with a DRUCOF recipient whose capabilities nobody knows
 * (no registry entry, hops that answer CONNEG with "not known"): passes the
 * request on to a hop that advertises DRUCOF, and otherwise fails the recipient
 * with 5.3.3 and reports it — never delivers it as if unasked. The branches with
 * known capabilities (conversion) are in drucof-tree.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { MessageStore } from '../../src/queue/store.ts';
import { startNextHop } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { Dialog } from '../helpers/dialog.ts';
import { settledStates } from '../helpers/relay-mail.ts';
import type { RecipientState } from '../../src/model/recipient.ts';

const prefix = uniquePrefix('e2e-drucof');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
const hops: Record<string, Awaited<ReturnType<typeof startNextHop>>> = {};
let relay: RelayProcess;

async function send(to: string[]): Promise<string> {
  const d = await Dialog.connect(relay.port);
  await d.expect(220);
  await d.command('EHLO client.test', 250);
  await d.command('MAIL FROM:<s@sender.test>', 250);
  for (const r of to) await d.command(`RCPT TO:<${r}>${r.startsWith('plain') ? '' : ' DRUCOF'}`, 250);
  await d.command('DATA', 354);
  const done = await d.command('Subject: drucof\r\n\r\nhello\r\n.', 250);
  await d.command('QUIT', 221);
  return /\[QUEUEID ([^\]]+)\]/.exec(done.text)![1]!;
}

const settled = (id: string): Promise<RecipientState[]> => settledStates(store, id, { timeoutMs: 10_000 });

beforeAll(async () => {
  hops.drucof = await startNextHop({ extensions: ['DRUCOF'] });
  hops.both = await startNextHop({ extensions: ['CONNEG', 'DRUCOF'] });
  hops.conneg = await startNextHop({ extensions: ['CONNEG'] });
  hops.neither = await startNextHop({});
  hops.sender = await startNextHop({});
  const routes = Object.fromEntries(Object.entries(hops).map(([name, h]) => [`${name}.test`, `127.0.0.1:${h.port}`]));
  // dns.srv off: "nobody knows" must not depend on what the system's DNS says about .test.
  relay = await startRelay({ config: { routes, dns: { srv: false } }, env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix } });
});

afterAll(async () => {
  await relay?.stop();
  for (const h of Object.values(hops)) await h.close();
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('DRUCOF recipients in the worker', () => {
  it('passes the request on to hops that advertise DRUCOF', async () => {
    const states = await settled(await send(['r@drucof.test', 'r@both.test']));
    expect(states.map((r) => [r.status, r.decision?.branch])).toEqual([
      ['relayed-with-drucof', 'drucof-only'],
      ['relayed-with-drucof', 'conneg-failed/pass-on'],
    ]);
    expect(hops.drucof!.messages[0]!.rcptLines[0]).toMatch(/^RCPT TO:<r@drucof\.test> .*\bDRUCOF( |$)/);
    expect(hops.both!.messages[0]!.rcptLines[0]).toMatch(/ DRUCOF/);
    expect(states[1]!.decision).toMatchObject({ hop: `route:127.0.0.1:${hops.both!.port}`, capabilities: { kind: 'query-failed', source: 'conneg' } });
    expect([...states[1]!.decision!.hopExtensions].sort()).toEqual(['CONNEG', 'DRUCOF']);
  });

  it('fails them with 5.3.3 where the hop cannot carry the request, reports it, and delivers the others', async () => {
    const states = await settled(await send(['r@conneg.test', 'r@neither.test', 'plain@neither.test']));
    expect(states.map((r) => [r.status, r.decision?.branch, r.lastReply?.enhanced])).toEqual([
      ['failed', 'conneg-failed/no-way', '5.3.3'],
      ['failed', 'neither', '5.3.3'],
      ['relayed', undefined, undefined],
    ]);
    expect(states[0]!.decision?.capabilities).toMatchObject({ kind: 'query-failed', source: 'conneg' });
    expect(states[1]!.decision?.capabilities).toEqual({ kind: 'unknown' });
    expect(hops.conneg!.messages).toHaveLength(0);
    expect(hops.neither!.messages.map((m) => m.rcptTo)).toEqual([['plain@neither.test']]);
    for (let t = 0; t < 200 && hops.sender!.messages.length === 0; t++) await new Promise((r) => setTimeout(r, 50));
    const report = hops.sender!.messages[0]!.body.toString();
    expect(report).toContain('Final-Recipient: rfc822;r@conneg.test');
    expect(report).toContain('Final-Recipient: rfc822;r@neither.test');
    expect(report).toContain('Status: 5.3.3');
  });
});
