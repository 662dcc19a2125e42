/**
 * `drucof-relay queue list | show ID` (postqueue -p / postcat style): reads a
 * running relay's Redis. The queue ids, states and per-recipient outcomes come
 * from the same records the worker writes.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { RelayConfig } from '../config/schema.ts';
import type { RecipientState } from '../model/recipient.ts';
import { reply, replyText } from '../model/reply.ts';
import { isFinal } from '../model/recipient.ts';
import { queueOwedReports, reportsDue } from '../dsn/index.ts';
import { hostname as osHostname } from 'node:os';
import { NoRedisError, pingRedis } from '../ops/redis-embedded.ts';
import { MessageStore, type StoredMessage } from '../queue/store.ts';

const LISTED_STATES = ['active', 'waiting', 'delayed', 'prioritized', 'failed'] as const;

/** The Redis a running relay uses: REDIS_URL, else the shared one on 6379, else its private one. */
export async function findRedis(config: RelayConfig): Promise<string> {
  if (config.redis.url) {
    const u = new URL(config.redis.url);
    if (!(await pingRedis(u.hostname, Number(u.port || 6379), 1000, true))) throw new NoRedisError(`no Redis answers at ${config.redis.url}`);
    return config.redis.url;
  }
  if (await pingRedis('127.0.0.1', 6379)) return 'redis://127.0.0.1:6379';
  const port = config.redis.embedded.port;
  if (await pingRedis('127.0.0.1', port)) return `redis://127.0.0.1:${port}`;
  throw new NoRedisError(`no Redis answers on 127.0.0.1:6379 or 127.0.0.1:${port}: is the relay running? (set REDIS_URL if its Redis is elsewhere)`);
}

export async function withStore<T>(config: RelayConfig, fn: (store: MessageStore, queue: Queue) => Promise<T>): Promise<T> {
  const redis = new Redis(await findRedis(config), { maxRetriesPerRequest: 1 });
  const store = new MessageStore(redis, config.redis.prefix);
  try {
    return await fn(store, store.queue);
  } finally {
    await store.close();
    redis.disconnect();
  }
}

/**
 * "reading 1200/5000 messages" on stderr, rewritten in place, for listings long
 * enough to wait for — only on a terminal, so a redirected listing stays clean.
 * Called with undefined at the end to clear the line.
 */
function progressLine(total: number): (done: number | undefined) => void {
  if (!process.stderr.isTTY || total < 1000) return () => {};
  return (done) => process.stderr.write(done === undefined ? '\r\x1b[K' : `\rreading ${done}/${total} messages`);
}

export async function queueList(config: RelayConfig, out: (line: string) => void = console.log): Promise<number> {
  return withStore(config, async (store, queue) => {
    let count = 0;
    out(`${'Queue ID'.padEnd(20)} ${'State'.padEnd(8)} ${'Size'.padStart(9)}  ${'Arrival'.padEnd(24)} Sender`);
    const listed: [string, string][] = (await store.heldIds()).map((id) => ['hold', id]);
    for (const state of LISTED_STATES) {
      for (const job of await queue.getJobs([state], 0, -1, true)) if (job.data?.id) listed.push([state, job.data.id]);
    }
    const progress = progressLine(listed.length);
    // Records are read 200 at a time (one round trip per record would take minutes on a large queue).
    for (let at = 0; at < listed.length; at += 200) {
      const chunk = listed.slice(at, at + 200);
      const metas = await Promise.all(chunk.map(([, id]) => store.loadMeta(id)));
      progress(at + chunk.length);
      for (const [k, meta] of metas.entries()) {
        if (!meta) continue;
        count++;
        const e = meta.envelope;
        out(`${e.id.padEnd(20)} ${chunk[k]![0].padEnd(8)} ${String(e.size).padStart(9)}  ${e.receivedAt.padEnd(24)} <${e.mailFrom}>`);
        for (const r of meta.recipients) out(`${''.padEnd(40)}${recipientLine(r)}`);
      }
    }
    progress(undefined);
    out(count === 0 ? 'Mail queue is empty' : `-- ${count} message${count === 1 ? '' : 's'} in the queue (prefix ${config.redis.prefix})`);
    return count;
  });
}

export async function queueShow(config: RelayConfig, id: string, json: boolean, out: (line: string) => void = console.log): Promise<boolean> {
  return withStore(config, async (store, queue) => {
    const meta = await store.loadMeta(id);
    if (!meta) {
      out(`${id}: no such message (prefix ${config.redis.prefix})`);
      return false;
    }
    const jobState = await queue.getJobState(id);
    const state = (await store.heldIds()).includes(id) ? 'hold' : jobState === 'unknown' ? 'finished' : jobState;
    if (json) {
      out(JSON.stringify({ state, ...meta }, null, 2));
      return true;
    }
    const e = meta.envelope;
    out(`Queue ID:    ${e.id}`);
    out(`State:       ${state}`);
    out(`Arrival:     ${e.receivedAt}`);
    out(`Sender:      <${e.mailFrom}>${e.ret ? ` RET=${e.ret}` : ''}${e.envid ? ` ENVID=${e.envid.value}` : ''}`);
    out(`Size:        ${e.size} bytes, BODY=${e.body}${e.smtpUtf8 ? ', SMTPUTF8' : ''}`);
    out(`Client:      ${e.client.hostname ?? ''}[${e.client.address}] helo=${e.client.helo}${e.client.user ? ` user=${e.client.user}` : ''}${e.client.tls ? ` tls=${e.client.tls}` : ''}`);
    out('Recipients:');
    for (const r of meta.recipients) {
      out(`  ${recipientLine(r)}`);
      if (r.lastReply) out(`      last reply: ${replyText(r.lastReply)}${r.remoteMta ? ` (from ${r.remoteMta})` : ''}`);
      if (r.nextAttemptAt) out(`      next attempt: ${r.nextAttemptAt}`);
    }
    return true;
  });
}

function recipientLine(r: RecipientState): string {
  const notify = r.notify === undefined ? '' : ` NOTIFY=${r.notify === 'NEVER' ? 'NEVER' : r.notify.join(',')}`;
  return `<${r.address}> ${r.status}, ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}${notify}`;
}


type Action = 'retry' | 'hold' | 'release' | 'delete';

const MESSAGES: Record<string, string> = {
  held: 'put on hold: it will not be delivered until released',
  'already-held': 'is already on hold',
  released: 'released: queued for delivery now',
  'not-held': 'is not on hold',
  retrying: 'queued for delivery now',
  'already-due': 'is already due for delivery (waiting or being delivered)',
  deleted: 'deleted',
  active: 'is being delivered right now; try again when the attempt ends',
  missing: 'no such message in the queue',
};

/** `queue retry|hold|release|delete ID`; returns whether it did what was asked. */
export async function queueAct(
  config: RelayConfig,
  action: Action,
  id: string,
  opts: { bounce?: boolean; hostname?: string } = {},
  out: (line: string) => void = console.log,
): Promise<boolean> {
  return withStore(config, async (store) => {
    let result: string;
    if (action === 'hold') result = await store.hold(id);
    else if (action === 'release') result = await store.release(id);
    else if (action === 'retry') result = await store.retryNow(id);
    else {
      let bounced = 0;
      if (opts.bounce) {
        const msg = await store.load(id);
        if (!msg) return report(out, id, 'missing');
        bounced = await bounceRemaining(store, config, opts.hostname ?? osHostname(), msg);
      }
      result = await store.remove(id);
      if (result === 'deleted' && opts.bounce) out(`${id}: failure report queued for ${bounced} recipient${bounced === 1 ? '' : 's'}`);
    }
    return report(out, id, result);
  });
}

function report(out: (line: string) => void, id: string, result: string): boolean {
  out(`${id}: ${MESSAGES[result] ?? result}`);
  return ['held', 'released', 'retrying', 'deleted'].includes(result);
}

/** Fails every recipient not yet final ("deleted by the administrator") and queues the reports they asked for. */
async function bounceRemaining(store: MessageStore, config: RelayConfig, hostname: string, msg: StoredMessage & { body: Buffer }): Promise<number> {
  const now = Date.now();
  const why = reply(550, 0, 0, 'message deleted from the queue by the mail system administrator');
  const owed = msg.recipients.map((r) => {
    if (isFinal(r)) return r;
    const failed: RecipientState = { ...r, status: 'failed', lastReply: why, lastAttemptAt: new Date(now).toISOString() };
    const [due] = reportsDue(msg.envelope, [r], [failed], { delayWarningMs: 0, now });
    return due ? { ...failed, reportOwed: due.action } : failed;
  });
  const ctx = { store, hostname, maxLifetimeMs: config.queue.maxLifetime, returnLimit: config.queue.returnLimit };
  await queueOwedReports(ctx, msg.envelope, msg.body, owed);
  return owed.filter((r) => r.reportOwed === 'failed').length;
}
