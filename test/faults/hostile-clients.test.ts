/**
 * Hostile clients (issue 8 item 5), over real sockets and real Redis:
 *
 * - slow-loris: a client sending a byte less often than `limits.idleTimeout` is cut
 *   off by it; one trickling bytes just inside it, never finishing a line or the
 *   data, by the request deadline (Postfix smtpd_per_request_deadline); also in DATA;
 * - connection floods: above `limits.maxConnections` (and above half of it from one
 *   address) the relay answers `421` and closes, and a well-behaved client is
 *   still served meanwhile (its transaction latency is measured);
 * - relay attempts from outside `allowNetworks`: refused (`554 5.7.1` at connect,
 *   or `550 5.7.1` at RCPT with AUTH configured), never queued;
 * - AUTH brute force over plain text: not offered before STARTTLS unless
 *   `auth.allowInsecure`; with it, the third failure in a session ends it with
 *   `421 4.7.0`, an address that failed 10 times in 10 minutes gets `454 4.7.0`,
 *   and every failure is logged with the client's address;
 * - header injection: CR/LF and other controls in ENVID/ORCPT xtext, addresses
 *   and EHLO names are refused (`501 5.5.4` for parameters) or kept out of the
 *   stored `Received:` header and of the DSNs we generate.
 */
import { Writable } from 'node:stream';
import net from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { renderReport } from '../../src/dsn/index.ts';
import type { Envelope } from '../../src/model/envelope.ts';
import { AuthFailures } from '../../src/inbound/auth-limit.ts';
import { createInbound, type Inbound } from '../../src/inbound/index.ts';
import type { InboundOptions } from '../../src/inbound/server.ts';
import { createLogger, silentLogger } from '../../src/ops/log.ts';
import { MessageStore } from '../../src/queue/store.ts';
import { Dialog, type WireReply } from '../helpers/dialog.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { selfSignedCert } from '../helpers/tls.ts';

const prefix = uniquePrefix('hostile');
const redis = new Redis(REDIS_URL);
const store = new MessageStore(redis, prefix);
const running: Inbound[] = [];
const dialogs: Dialog[] = [];
const sockets: net.Socket[] = [];
const processes: RelayProcess[] = [];

async function start(raw: Record<string, unknown> = {}, extra: Partial<InboundOptions> = {}): Promise<number> {
  const config = parseConfig({ listen: '127.0.0.1:0', ...raw });
  const inbound = createInbound({ config, store, log: silentLogger, hostname: 'relay.test', ...extra });
  running.push(inbound);
  return (await inbound.listen()).port;
}

async function connect(port: number, localAddress?: string): Promise<Dialog> {
  const d = await Dialog.connect(port, '127.0.0.1', 5000, localAddress ? { localAddress } : {});
  dialogs.push(d);
  return d;
}

/** A logger whose JSON lines are kept. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger('info', stream), lines };
}

const messageKeys = async () => (await redis.keys(`${prefix}:msg:*`)).length;
const jobs = async () => store.queue.count();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

/** Sends `text` one byte at a time, every `everyMs`, until the server closes or the text ends. */
async function trickle(d: Dialog, text: string, everyMs: number): Promise<void> {
  for (const ch of text) {
    if (d.isClosed) return;
    d.write(ch);
    await sleep(everyMs);
  }
}

afterEach(async () => {
  for (const d of dialogs.splice(0)) d.destroy();
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(running.splice(0).map((i) => i.close(200)));
  await Promise.all(processes.splice(0).map((p) => p.stop()));
});

afterAll(async () => {
  await store.close();
  redis.disconnect();
  await dropPrefix(prefix);
});

describe('slow-loris: cut off by limits.idleTimeout', () => {
  it('a byte less often than idleTimeout: 421 4.4.2 after idleTimeout, in a command and in DATA; nothing stored', async () => {
    const port = await start({ limits: { idleTimeout: '1s' } });
    const before = await messageKeys();

    const inCommand = await connect(port);
    await inCommand.hello();
    const t0 = Date.now();
    void trickle(inCommand, 'NOOP and more', 2500);
    await inCommand.expect(421, '4.4.2', 4000);
    await inCommand.closed();
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(2400);

    const inData = await connect(port);
    await inData.hello();
    await inData.command('MAIL FROM:<s@a.test>', 250);
    await inData.command('RCPT TO:<r@b.test>', 250);
    await inData.command('DATA', 354);
    const t1 = Date.now();
    void trickle(inData, 'Subject: slow\r\n\r\nbody', 2500);
    await inData.expect(421, '4.4.2', 4000);
    await inData.closed();
    expect(Date.now() - t1).toBeLessThan(2400);
    expect(await messageKeys()).toBe(before);
  });

  it('a byte every 300 ms (inside idleTimeout) never finishing the line: cut off after idleTimeout by the request deadline', async () => {
    const port = await start({ limits: { idleTimeout: '1s' } });
    const d = await connect(port);
    await d.hello();
    const t0 = Date.now();
    void trickle(d, `MAIL FROM:<${'x'.repeat(60)}@a.test>`, 300);
    const r = await d.expect(421, '4.4.2', 5000);
    expect(r.text).toMatch(/command line not completed in time/);
    await d.closed();
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(2500);
  });

  it('also in DATA: data trickled at a byte every 300 ms is cut off (idleTimeout + bytes at 500 B/s); nothing stored', async () => {
    const port = await start({ limits: { idleTimeout: '1s' } });
    const before = await messageKeys();
    const d = await connect(port);
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command('RCPT TO:<r@b.test>', 250);
    await d.command('DATA', 354);
    const t0 = Date.now();
    void trickle(d, `Subject: trickle\r\n\r\n${'y'.repeat(100)}\r\n.\r\n`, 300);
    const r = await d.expect(421, '4.4.2', 5000);
    expect(r.text).toMatch(/message data arriving too slowly/);
    await d.closed();
    expect(Date.now() - t0).toBeLessThan(2500);
    await sleep(100);
    expect(await messageKeys()).toBe(before);
  });

  it('a well-behaved client is not cut: a line in pieces inside the deadline, a pause between commands, 2 MB of data at speed', async () => {
    const port = await start({ limits: { idleTimeout: '1s' } });
    const d = await connect(port);
    await d.hello();
    d.write('MAIL FROM:');
    await sleep(400);
    d.write('<s@a.test>');
    await sleep(400);
    d.write('\r\n');
    await d.expect(250, '2.1.0');
    await sleep(800); // idle between commands: the idle timeout's business only
    await d.command('RCPT TO:<r@b.test>', 250);
    await d.command('DATA', 354);
    const line = 'z'.repeat(998) + '\r\n';
    d.write('Subject: big\r\n\r\n' + line.repeat(2000) + '.\r\n');
    const r = await d.expect(250, '2.0.0', 10_000);
    expect(r.reply?.tags?.queueId).toBeTruthy();
    await d.quit();
  });
});

describe('connection floods: cut off by limits.maxConnections', () => {
  /** Opens `n` connections from `localAddress` and reads each one's first line (the greeting or a refusal). */
  async function flood(port: number, n: number, localAddress: string, hold: boolean): Promise<string[]> {
    const firsts = await Promise.all(
      Array.from(
        { length: n },
        () =>
          new Promise<string>((resolve) => {
            const s = net.connect({ port, host: '127.0.0.1', localAddress });
            let got = '';
            s.on('data', (b: Buffer) => {
              got += b.toString('latin1');
              if (got.includes('\r\n')) {
                resolve(got.split('\r\n')[0]!);
                if (!hold) s.destroy();
              }
            });
            s.on('error', () => resolve(got || 'error'));
            s.on('close', () => resolve(got.split('\r\n')[0] || 'closed'));
            sockets.push(s);
          }),
      ),
    );
    return firsts;
  }

  /** One whole transaction on a fresh connection; its time in ms. */
  async function transactionMs(port: number, i: number): Promise<number> {
    const t0 = performance.now();
    const d = await connect(port);
    await d.expect(220, undefined, 10_000);
    await d.command('EHLO good.test', 250);
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command(`RCPT TO:<good${i}@b.test>`, 250);
    await d.command('DATA', 354);
    d.write(`Subject: good ${i}\r\n\r\nhello\r\n.\r\n`);
    await d.expect(250, '2.0.0', 10_000);
    const ms = performance.now() - t0;
    await d.quit();
    return ms;
  }

  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

  it('one address flooding: half of maxConnections, then 421 4.7.0; over maxConnections 421 4.4.5; a normal client keeps being served', async () => {
    const relay = await startRelay({
      command: 'listen',
      config: { limits: { maxConnections: 10, idleTimeout: '20s' } },
      env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
    });
    processes.push(relay);
    const baseline: number[] = [];
    for (let i = 0; i < 5; i++) baseline.push(await transactionMs(relay.port, i));

    // 60 connections from 127.0.0.2, held open: 5 (half of 10) get in, the rest 421 4.7.0.
    const held = await flood(relay.port, 60, '127.0.0.2', true);
    const greeted = held.filter((l) => l.startsWith('220 '));
    const refused = held.filter((l) => !l.startsWith('220 '));
    expect(greeted).toHaveLength(5);
    for (const l of refused) expect(l).toMatch(/^421 4\.7\.0 too many connections from your address/);

    // Meanwhile the same address keeps connecting and dropping, and a normal client works.
    let churning = true;
    let churned = 0;
    const churn = (async () => {
      while (churning) {
        const firsts = await flood(relay.port, 20, '127.0.0.2', false);
        churned += firsts.length;
        for (const l of firsts) expect(l).toMatch(/^421 4\.7\.0 /);
        await sleep(20);
      }
    })();
    const during: number[] = [];
    try {
      for (let i = 0; i < 20; i++) during.push(await transactionMs(relay.port, 100 + i));
    } finally {
      churning = false;
      await churn;
    }
    console.log(
      `flood: ${held.length} held (${greeted.length} in, ${refused.length} refused 421 4.7.0), ${churned} churned connections refused; ` +
        `normal client transaction ms: before p50=${pct(baseline, 50).toFixed(0)} max=${Math.max(...baseline).toFixed(0)}, ` +
        `during p50=${pct(during, 50).toFixed(0)} p90=${pct(during, 90).toFixed(0)} max=${Math.max(...during).toFixed(0)}`,
    );
    expect(during).toHaveLength(20);
    expect(churned).toBeGreaterThan(0);
    expect(pct(during, 50)).toBeLessThan(1500);
    expect(Math.max(...during)).toBeLessThan(5000);

    // Several addresses: never more than maxConnections sessions; the rest 421 (4.4.5 or 4.7.0).
    const many = (await Promise.all(['127.0.0.3', '127.0.0.4', '127.0.0.5'].map((a) => flood(relay.port, 5, a, true)))).flat();
    const inNow = many.filter((l) => l.startsWith('220 ')).length;
    expect(inNow).toBeLessThanOrEqual(10 - greeted.length);
    for (const l of many.filter((x) => !x.startsWith('220 '))) expect(l).toMatch(/^421 4\.(4\.5|7\.0) /);
    expect(relay.proc.exitCode).toBeNull();
  }, 60_000);
});

describe('relay attempts from outside allowNetworks (127.0.0.1 is outside)', () => {
  const outside = { allowNetworks: ['127.0.0.2/32'] };

  it('without AUTH: 554 5.7.1 at connect, the connection closed; a pipelined transaction is never queued', async () => {
    const port = await start(outside);
    const [keys, queued] = [await messageKeys(), await jobs()];
    const d = await connect(port);
    const r = await d.expect(554, '5.7.1');
    expect(r.text).toMatch(/relay access denied/);
    d.write('EHLO x\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n');
    await d.closed();
    // Talking at once, before any greeting, changes nothing.
    const early = await connect(port);
    early.write('EHLO x\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n');
    await early.closed();
    expect(early.transcript).not.toMatch(/^2/m);
    // The inside client is served (positive control).
    const inside = await connect(port, '127.0.0.2');
    await inside.hello();
    await inside.command('MAIL FROM:<s@a.test>', 250);
    await inside.command('RCPT TO:<r@b.test>', 250);
    await sleep(100);
    expect(await messageKeys()).toBe(keys);
    expect(await jobs()).toBe(queued);
  });

  it('with AUTH: 550 5.7.1 at every RCPT form until authenticated; pipelined data after a refused DATA is not a message', async () => {
    const port = await start({ ...outside, auth: { users: { alice: 's3cret' }, allowInsecure: true } });
    const [keys, queued] = [await messageKeys(), await jobs()];
    const d = await connect(port);
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250, '2.1.0');
    for (const rcpt of [
      'RCPT TO:<r@b.test>',
      'RCPT TO:<postmaster@b.test>',
      'RCPT TO:<@relay.test:r@b.test>',
      'RCPT TO:<r%b.test@relay.test>',
      'RCPT TO:<r@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@b.test',
      'RCPT TO:<r@b.test> CONNEG',
      'RCPT TO:<r@b.test> DRUCOF',
    ]) {
      const r = await d.command(rcpt, 550, '5.7.1');
      expect(r.text).toMatch(/relay access denied: authentication required/);
    }
    // A blind pipeline: the refused RCPT makes DATA fail and the "message" is commands.
    d.write('RSET\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\nSubject: x\r\nRCPT TO:<r@b.test>\r\n.\r\n');
    await d.expect(250);
    await d.expect(250);
    await d.expect(550, '5.7.1');
    const data = await d.read();
    expect(data.code).toBeGreaterThanOrEqual(500);
    await d.expect(500);
    await d.expect(550, '5.7.1');
    await d.expect(500);
    // A failed AUTH changes nothing.
    await d.command(`AUTH PLAIN ${b64('\0alice\0wrong')}`, 535, '5.7.8');
    await d.command('RSET', 250);
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command('RCPT TO:<r@b.test>', 550, '5.7.1');
    await sleep(100);
    expect(await messageKeys()).toBe(keys);
    expect(await jobs()).toBe(queued);
    // Authenticated, the same client relays (positive control).
    await d.command(`AUTH PLAIN ${b64('\0alice\0s3cret')}`, 235, '2.7.0');
    await d.command('RSET', 250);
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command('RCPT TO:<r@b.test>', 250, '2.1.5');
  });
});

describe('AUTH brute force over plain text', () => {
  const certificate = selfSignedCert();

  it.skipIf(!certificate)('with TLS and without allowInsecure: AUTH is not offered before STARTTLS and refused 538 5.7.11', async () => {
    const port = await start({ tls: certificate!, auth: { users: { alice: 'pw' } } });
    const d = await connect(port);
    const ehlo = await d.hello();
    expect(ehlo.raw.map((l) => l.slice(4))).toContain('STARTTLS');
    expect(ehlo.raw.some((l) => /AUTH/.test(l))).toBe(false);
    for (let i = 0; i < 5; i++) await d.command(`AUTH PLAIN ${b64(`\0alice\0guess${i}`)}`, 538, '5.7.11');
    await d.command('AUTH LOGIN', 538, '5.7.11');
  });

  it('without TLS and without allowInsecure: never offered, always 538', async () => {
    const port = await start({ auth: { users: { alice: 'pw' } } });
    const d = await connect(port);
    const ehlo = await d.hello();
    expect(ehlo.raw.some((l) => /AUTH/.test(l))).toBe(false);
    await d.command(`AUTH PLAIN ${b64('\0alice\0pw')}`, 538, '5.7.11');
  });

  it('allowInsecure: the 3rd failure in a session gets 421 4.7.0 and the session ends; each failure is logged with the client address', async () => {
    const { log, lines } = capturingLogger();
    const port = await start({ auth: { users: { alice: 'pw' }, allowInsecure: true } }, { log });
    const d = await connect(port);
    await d.hello();
    await d.command(`AUTH PLAIN ${b64('\0alice\0one')}`, 535, '5.7.8');
    d.send('AUTH LOGIN');
    await d.expect(334);
    d.send(b64('alice'));
    await d.expect(334);
    await d.command(b64('two'), 535, '5.7.8');
    const r = await d.command(`AUTH PLAIN ${b64('\0alice\0three')}`, 421, '4.7.0');
    expect(r.text).toBe('421 4.7.0 too many authentication failures');
    await d.closed();
    await sleep(50);
    const failures = lines.filter((l) => l.msg === 'authentication failed');
    expect(failures).toHaveLength(3);
    for (const f of failures) expect(f).toMatchObject({ client: '127.0.0.1', user: 'alice' });
    expect(failures.map((f) => f.failures)).toEqual([1, 2, 3]);
  });

  it('an address that failed 10 times in the window gets 454 4.7.0 [RETRY-AFTER n] even with the right password; other addresses are not affected; the lock ends with the window', async () => {
    const { log, lines } = capturingLogger();
    const port = await start({ auth: { users: { alice: 'pw' }, allowInsecure: true } }, { log, authLimits: { windowMs: 3000 } });
    // 4 sessions of 3 guesses (the 3rd ends each): 10 failures lock 127.0.0.3 out.
    let failed = 0;
    while (failed < 10) {
      const d = await connect(port, '127.0.0.3');
      await d.hello();
      for (let i = 0; i < 3 && failed < 10; i++) {
        d.send(`AUTH PLAIN ${b64(`\0alice\0guess${failed}`)}`);
        const r = await d.read();
        failed++;
        expect([535, 421]).toContain(r.code);
        if (r.code === 421) break;
      }
      d.destroy();
    }
    const locked = await connect(port, '127.0.0.3');
    await locked.hello();
    const r = await locked.command(`AUTH PLAIN ${b64('\0alice\0pw')}`, 454, '4.7.0');
    expect(r.reply?.tags?.retryAfter).toBeGreaterThan(0);
    expect(r.reply?.tags?.retryAfter).toBeLessThanOrEqual(3);
    await locked.command('AUTH LOGIN', 454, '4.7.0');
    await locked.command('AUTH LOGIN', 421, '4.7.0'); // refused tries count in the session too
    await locked.closed();
    expect(lines.some((l) => l.msg === 'authentication locked out for this address: too many failures' && l.client === '127.0.0.3')).toBe(true);

    const other = await connect(port, '127.0.0.4');
    await other.hello();
    await other.command(`AUTH PLAIN ${b64('\0alice\0pw')}`, 235, '2.7.0');

    await sleep(3100);
    const later = await connect(port, '127.0.0.3');
    await later.hello();
    await later.command(`AUTH PLAIN ${b64('\0alice\0pw')}`, 235, '2.7.0');
  });
});

describe('AuthFailures: the per-address table', () => {
  it('counts failures inside the window, locks at the limit, unlocks as they age out, and stays bounded', () => {
    const t = new AuthFailures({ perSession: 3, perAddress: 3, windowMs: 1000, maxAddresses: 2 });
    t.fail('a', 0);
    t.fail('a', 100);
    expect(t.lockedOut('a', 200).locked).toBe(false);
    expect(t.fail('a', 200)).toBe(3);
    expect(t.lockedOut('a', 300)).toEqual({ locked: true, retryAfterMs: 700 });
    expect(t.lockedOut('a', 1001).locked).toBe(false);
    t.fail('b', 1001);
    t.fail('c', 1002);
    expect(t.size).toBe(2); // 'a' (the least recently failing) went first
    expect(t.lockedOut('b', 1003).locked).toBe(false);
  });
});

describe('header injection through parameters, addresses and EHLO names', () => {
  it.each([
    ['MAIL FROM:<s@a.test> ENVID=a+0D+0AX-Injected:+20yes'],
    ['MAIL FROM:<s@a.test> ENVID=a+0Ab'],
    ['MAIL FROM:<s@a.test> ENVID=a+0Db'],
    ['MAIL FROM:<s@a.test> ENVID=a+00b'],
    ['MAIL FROM:<s@a.test> ENVID=a+7Fb'],
    ['MAIL FROM:<s@a.test> ENVID=a+C2+85b'], // U+0085 NEL
    ['MAIL FROM:<s@a.test> ENVID=a+E2+80+A8b'], // U+2028 LINE SEPARATOR
  ])('%s → 501 5.5.4', async (command) => {
    const d = await connect(await start());
    await d.hello();
    const r = await d.command(command, 501, '5.5.4');
    expect(r.text).toMatch(/ENVID contains control characters/);
  });

  it.each([
    ['RCPT TO:<r@b.test> ORCPT=rfc822;a+0D+0AX-Injected:+20yes@b.test'],
    ['RCPT TO:<r@b.test> ORCPT=rfc822;a+0A@b.test'],
    ['RCPT TO:<r@b.test> ORCPT=rfc822;a+00@b.test'],
    ['RCPT TO:<r@b.test> ORCPT=utf-8;a+C2+85@b.test'],
    ['RCPT TO:<r@b.test> ORCPT=x-local;a+E2+80+A9'],
  ])('%s → 501 5.5.4', async (command) => {
    const d = await connect(await start());
    await d.hello();
    await d.command('MAIL FROM:<s@a.test>', 250);
    const r = await d.command(command, 501, '5.5.4');
    expect(r.text).toMatch(/ORCPT address contains control characters/);
  });

  it('UTF-8 in an ENVID that is not a control (caf+C3+80) is accepted, not taken for a bad address', async () => {
    const d = await connect(await start());
    await d.hello();
    await d.command('MAIL FROM:<s@a.test> ENVID=caf+C3+80', 250, '2.1.0');
    await d.command('RCPT TO:<r@b.test> ORCPT=utf-8;r+C3+80@b.test', 250, '2.1.5');
  });

  it('controls in addresses and EHLO names are refused', async () => {
    const d = await connect(await start());
    await d.hello();
    await d.command('MAIL FROM:<a\rX-Injected: yes@a.test>', 501, '5.1.7');
    await d.command('MAIL FROM:<"a\rb"@a.test>', 501, '5.1.7');
    await d.command('MAIL FROM:<a\u0000b@a.test>', 501, '5.1.7');
    await d.command('MAIL FROM:<a\u0085b@a.test>', 501, '5.1.7');
    await d.command('MAIL FROM:<s@a.test>', 250);
    await d.command('RCPT TO:<r\rX-Injected: yes@b.test>', 501, '5.1.3');
    await d.command('RCPT TO:<r@b.test\u2028x>', 501, '5.1.3');
    for (const name of ['evil\rX-Injected:', 'evil\u0000', 'evil\u001b[31m', 'a\u0085b']) {
      const r = await d.command(`EHLO ${name}`, 501);
      expect(r.text).toMatch(/^501 /);
    }
  });

  /** The stored message's trace header block: its lines up to the client's first header. */
  function traceLines(body: Buffer): { trace: string[]; rest: string } {
    const text = body.toString('utf8');
    const lines = text.split('\r\n');
    const trace = [lines[0]!];
    let i = 1;
    while (/^[ \t]/.test(lines[i] ?? '')) trace.push(lines[i++]!);
    return { trace, rest: lines.slice(i).join('\r\n') };
  }

  async function storeOne(port: number, helo: string, mail: string, rcpts: string[]): Promise<Buffer> {
    const d = await connect(port);
    await d.expect(220);
    await d.command(`EHLO ${helo}`, 250);
    await d.command(mail, 250);
    for (const r of rcpts) await d.command(r, 250);
    await d.command('DATA', 354);
    d.write('Subject: trace\r\n\r\nbody\r\n.\r\n');
    const r = await d.expect(250, '2.0.0');
    const m = await store.load(r.reply!.tags!.queueId!);
    await d.quit();
    return m!.body;
  }

  it('odd but accepted EHLO names and addresses never restructure the Received: header', async () => {
    const port = await start();
    const cases: [string, string, string[], RegExp][] = [
      ['x;y(z)', 'MAIL FROM:<s@a.test>', ['RCPT TO:<r@b.test>'], /^Received: from x\?y\?z\? \(/],
      ['a"b\\c<d>', 'MAIL FROM:<s@a.test>', ['RCPT TO:<r@b.test>'], /^Received: from a\?b\?c\?d\? \(/],
      ['\u00fc.test', 'MAIL FROM:<s@a.test> SMTPUTF8', ['RCPT TO:<\u00fcser@b\u00fccher.test>'], /^Received: from \?\.test \(/],
      ['client.test', 'MAIL FROM:<s@a.test>', ['RCPT TO:<"a;b"@b.test>'], /^Received: from client\.test \(/],
      ['client.test', 'MAIL FROM:<s@a.test> SMTPUTF8', ['RCPT TO:<"a;(b)"@b.test>'], /^Received: from client\.test \(/],
      ['[IPv6:::1]', 'MAIL FROM:<s@a.test>', ['RCPT TO:<r@b.test>'], /^Received: from \[ipv6:::1\] \(/], // smtp-server lower-cases the name
    ];
    for (const [helo, mail, rcpts, first] of cases) {
      const { trace, rest } = traceLines(await storeOne(port, helo, mail, rcpts));
      expect(trace[0]).toMatch(first);
      // One header: `from …`, `by …`, optionally `for <…>;`, the date; nothing else.
      expect(trace.length).toBeGreaterThanOrEqual(3);
      expect(trace.length).toBeLessThanOrEqual(4);
      expect(trace[1]).toMatch(/^\tby relay\.test with (ESMTP|UTF8SMTP) id [0-9A-Z]+;?$/);
      if (trace.length === 4) expect(trace[2]).toMatch(/^\tfor <[^\s;()<>"\\]+>;$/);
      expect(trace[trace.length - 1]).toMatch(/^\t\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$/);
      // Exactly one `;`, before the date.
      expect(trace.join('').split(';')).toHaveLength(2);
      expect(rest).toBe('Subject: trace\r\n\r\nbody\r\n');
    }
  });

  const deliveryStatus = (raw: Buffer): string[] => {
    const text = raw.toString('latin1');
    const start = text.indexOf('Content-Type: message/delivery-status');
    const body = text.slice(text.indexOf('\r\n\r\n', start) + 4);
    return body.slice(0, body.indexOf('\r\n--')).split('\r\n');
  };
  /** RFC 3464 fields, continuation lines and the blank lines between the per-recipient blocks. */
  const FIELD_LINE = /^(?:[A-Za-z-]+: [\x20-\x7e]*|[ \t][\x20-\x7e]*|)$/;

  it('a DSN we generate from what the relay accepted carries ENVID and ORCPT decoded, one field per line', async () => {
    const port = await start({ policies: { '*@words.test': { refuseWords: ['forbidden'] } } });
    const d = await connect(port);
    await d.hello();
    await d.command('MAIL FROM:<s@a.test> RET=HDRS ENVID=Q+2B1+3Dx+22y+22', 250);
    await d.command('RCPT TO:<r@words.test> NOTIFY=FAILURE ORCPT=rfc822;o+2Btag@b.test', 250);
    await d.command('RCPT TO:<ok@b.test>', 250);
    await d.command('DATA', 354);
    d.write('Subject: dsn\r\n\r\nforbidden\r\n.\r\n');
    const r = await d.expect(250, '2.0.0');
    const m = (await store.load(r.reply!.tags!.queueId!))!;
    const failed = m.recipients.find((x) => x.address === 'r@words.test')!;
    expect(failed).toMatchObject({ status: 'failed', reportOwed: 'failed' });
    const report = await renderReport({ reportingMta: 'relay.test', envelope: m.envelope, items: [{ index: 0, recipient: failed, action: 'failed' }], originalMessage: m.body, now: new Date() });
    const fields = deliveryStatus(report.raw);
    expect(fields).toContain('Original-Envelope-Id: Q+1=x"y"');
    expect(fields).toContain('Original-Recipient: rfc822;o+tag@b.test');
    for (const l of fields) expect(l).toMatch(FIELD_LINE);
  });

  it('defence in depth: an envelope stored with CR LF in ENVID and ORCPT (an older relay) still gives a DSN without injected lines', async () => {
    const envelope: Envelope = {
      id: 'TESTID1',
      mailFrom: 's@a.test',
      envid: { xtext: 'a+0D+0AX-Injected:+20yes', value: 'a\r\nX-Injected: yes' },
      body: '7BIT',
      smtpUtf8: false,
      client: { address: '127.0.0.1', helo: 'client.test' },
      receivedAt: new Date().toISOString(),
      size: 10,
    };
    const recipient = {
      address: 'r@b.test',
      drucof: false,
      status: 'failed' as const,
      attempts: 1,
      orcpt: { addrType: 'rfc822', address: { xtext: 'o+0D+0AX-Injected:+20yes@b.test', value: 'o\r\nX-Injected: yes@b.test' } },
      lastReply: { code: 550, enhanced: '5.1.1' as const, lines: ['no such user\r\nX-Injected: yes'] },
    };
    const report = await renderReport({ reportingMta: 'relay.test', envelope, items: [{ index: 0, recipient, action: 'failed' }], originalMessage: Buffer.from('Subject: x\r\n\r\nx\r\n'), now: new Date() });
    const fields = deliveryStatus(report.raw);
    for (const l of fields) expect(l).toMatch(FIELD_LINE);
    expect(fields.filter((l) => /^X-Injected/i.test(l))).toEqual([]);
    expect(report.raw.toString('latin1')).not.toMatch(/\r\nX-Injected/);
    expect(fields).toContain('Original-Envelope-Id: a+0D+0AX-Injected:+20yes');
  });
});

describe('reply lines stay within 512 octets (RFC 5321 §4.5.3.1.5)', () => {
  it.each([
    [`MAIL FROM:<s@a.test> ${'K'.repeat(2000)}=1`, 555],
    [`MAIL FROM:<s@a.test> ${'K'.repeat(600)}`, 555],
    [`MAIL FROM:<s@a.test> X_${'Y'.repeat(600)}`, 501],
  ])('an echoed parameter is cut: %#', async (command, code) => {
    const d = await connect(await start());
    await d.hello();
    const r: WireReply = await d.command(command, code, '5.5.4');
    for (const l of r.raw) expect(Buffer.byteLength(l) + 2).toBeLessThanOrEqual(512);
  });

  it('LHLO (we are no LMTP server) is an unknown command with an enhanced code', async () => {
    const d = await connect(await start());
    await d.hello();
    await d.command('LHLO x', 500, '5.5.2');
  });
});
