/**
 * The 250 promise when Redis is unavailable: the client gets `451 4.3.0
 * [RETRY-AFTER 60]` quickly (the listener's Redis connection fails fast), never
 * a 250, and the session stays usable.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { createInbound } from '../../src/inbound/index.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { connectForListener } from '../../src/queue/redis.ts';
import { MessageStore } from '../../src/queue/store.ts';
import { Dialog } from '../helpers/dialog.ts';

const down = connectForListener('redis://127.0.0.1:1'); // nothing listens on port 1
down.on('error', () => {});
const store = new MessageStore(down, 'never-written');
const inbound = createInbound({ config: parseConfig({ listen: '127.0.0.1:0' }), store, log: silentLogger, hostname: 'relay.test' });

afterAll(async () => {
  await inbound.close(200);
  await store.close().catch(() => {});
  down.disconnect();
});

describe('Redis unavailable', () => {
  it('answers the data with 451 4.3.0 [RETRY-AFTER 60] within seconds, and the session goes on', async () => {
    const { port } = await inbound.listen();
    const d = await Dialog.connect(port);
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250, '2.1.0');
    await d.command('RCPT TO:<r@b.test>', 250, '2.1.5');
    await d.command('DATA', 354);
    const started = Date.now();
    d.write('Subject: lost\r\n\r\nx\r\n.\r\n');
    const r = await d.expect(451, '4.3.0', 10_000);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(r.reply?.tags?.retryAfter).toBe(60);
    expect(r.text).toMatch(/^451 4\.3\.0 \[RETRY-AFTER 60\] /);
    // A failed transaction is over; the client may try again (RSET not needed).
    await d.command('MAIL FROM:<s@a.test>', 250, '2.1.0');
    await d.quit();
  });
});
