/**
 * A bed for tests of the inbound stage over real sockets: a real MessageStore on
 * a unique Redis prefix, inbound servers started on free ports, and dialogs that
 * are all closed after each test (the prefix is dropped after the file).
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach } from 'vitest';
import { createInbound, type Inbound, type InboundOptions } from '../../src/inbound/index.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { MessageStore } from '../../src/queue/store.ts';
import { Dialog, type WireReply } from './dialog.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from './redis.ts';

export function inboundBed(name: string) {
  const prefix = uniquePrefix(name);
  const redis = new Redis(REDIS_URL);
  const store = new MessageStore(redis, prefix);
  const running: Inbound[] = [];
  const dialogs: Dialog[] = [];

  afterEach(async () => {
    for (const d of dialogs.splice(0)) d.destroy();
    await Promise.all(running.splice(0).map((i) => i.close(200)));
  });
  afterAll(async () => {
    await store.close();
    redis.disconnect();
    await dropPrefix(prefix);
  });

  return {
    prefix,
    redis,
    store,
    /** Starts an inbound (hostname relay.test, silent log) and returns its port. */
    async listen(opts: Omit<InboundOptions, 'store' | 'log' | 'hostname'>): Promise<number> {
      const inbound = createInbound({ store, log: silentLogger, hostname: 'relay.test', ...opts });
      running.push(inbound);
      return (await inbound.listen()).port;
    },
    /** A dialog closed after the test (the greeting is not read). */
    async connect(port: number): Promise<Dialog> {
      const d = await Dialog.connect(port);
      dialogs.push(d);
      return d;
    },
    /** How many messages are stored under the prefix. */
    messageKeys: async (): Promise<number> => (await redis.keys(`${prefix}:msg:*`)).length,
  };
}

/** Sends a whole transaction pipelined (RFC 2920): the command replies, then `after` replies to the data. */
export async function pipelined(d: Dialog, lines: string[], data: string, after: number): Promise<{ before: WireReply[]; after: WireReply[] }> {
  d.write(lines.map((l) => l + '\r\n').join(''));
  const before: WireReply[] = [];
  for (let i = 0; i < lines.length; i++) before.push(await d.read());
  d.write(data);
  const rest: WireReply[] = [];
  for (let i = 0; i < after; i++) rest.push(await d.read());
  return { before, after: rest };
}
