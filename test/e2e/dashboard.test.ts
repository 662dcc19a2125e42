/**
 * The dashboard (issue 7 item 5) in headless Chromium (playwright-core, Debian's
 * /usr/bin/chromium): a relay process with `http: { listen, dashboard: true }`,
 * a DRUCOF message through it, the page opened until the decision shows, a
 * screenshot checked as a real picture; and text from mail and next hops
 * (addresses, replies) shown as text, never as markup.
 *
 * Without Chromium (CHROMIUM_PATH, default /usr/bin/chromium) these tests print
 * one line and skip: `apt-get install chromium`.
 */
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startNextHop, type NextHopPeer } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { freePort } from '../helpers/ports.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';
import { Dialog } from '../helpers/dialog.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.log(`dashboard tests skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);

/** What a hostile next hop answers for `evil…` recipients: markup in a reply. */
const HOSTILE_REPLY = '5.1.1 <img src=x onerror=alert(1)> no such user';
/** A hostile address: quotes, an entity, a quote-breaking attribute (RFC 5321 allows all of it in a quoted local part). */
const HOSTILE_ADDRESS = `"evil&amp;'x\\"onmouseover=alert(2)"@xss.test`;

const prefix = uniquePrefix('e2e-dashboard');
const dir = mkdtempSync(join(tmpdir(), 'drucof-dashboard-'));
let hop: NextHopPeer;
let relay: RelayProcess;
let httpPort: number;
let browser: Browser;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function submit(to: string, subject: string): Promise<string> {
  const d = await Dialog.connect(relay.port);
  await d.hello();
  await d.command('MAIL FROM:<s@sender.test>', 250);
  await d.command(`RCPT TO:<${to}> DRUCOF`, 250);
  await d.command('DATA', 354);
  const done = await d.command(`Subject: ${subject}\r\n\r\nhello\r\n.`, 250);
  await d.quit();
  return /\[QUEUEID ([^\]]+)\]/.exec(done.text)![1]!;
}

/** A page on the dashboard that records what must never happen: script errors, CSP violations, dialogs. */
async function openDashboard(): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    problems.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  await page.goto(`http://127.0.0.1:${httpPort}/`);
  return { page, problems };
}

/** Waits until the page's text contains every string (the page refreshes itself every 3 s). */
async function pageShows(page: Page, texts: readonly string[], ms = 25_000): Promise<string> {
  let body = '';
  for (const end = Date.now() + ms; Date.now() < end; await sleep(200)) {
    body = await page.innerText('body');
    if (texts.every((t) => body.includes(t))) return body;
  }
  throw new Error(`the page never showed ${JSON.stringify(texts)}; it shows:\n${body}\nrelay output:\n${relay.output().slice(-3000)}`);
}

describe.skipIf(!haveChromium)('dashboard in headless Chromium', () => {
  beforeAll(async () => {
    hop = await startNextHop({
      extensions: ['DRUCOF'],
      rcpt: (address) => (address.toLowerCase().includes('evil') ? { code: 550, text: HOSTILE_REPLY } : undefined),
    });
    httpPort = await freePort();
    const route = `127.0.0.1:${hop.port}`;
    relay = await startRelay({
      config: {
        routes: { 'drucof.test': route, 'xss.test': route, 'sender.test': route },
        dns: { srv: false },
        http: { listen: `127.0.0.1:${httpPort}`, dashboard: true },
      },
      env: { REDIS_URL, RELAY_QUEUE_PREFIX: prefix },
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await relay?.stop();
    await hop?.close();
    await dropPrefix(prefix);
  });

  it('shows a DRUCOF decision and the message; the screenshot is a real picture', async () => {
    const id = await submit('reader@drucof.test', 'dashboard');
    const { page, problems } = await openDashboard();
    const text = await pageShows(page, ['reader@drucof.test', 'drucof-only', id, 'relayed-with-drucof', 'original, DRUCOF passed on']);
    expect(text).toContain('Recent DRUCOF decisions');
    expect(text).toMatch(/updated /);
    // The decision row names the hop and what it advertised.
    const row = await page.locator('#decisions tbody tr', { hasText: 'reader@drucof.test' }).innerText();
    expect(row).toContain(`route:127.0.0.1:${hop.port}`);
    expect(row).toContain('DRUCOF');

    const file = join(dir, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    const meta = await sharp(file).metadata();
    expect(meta.format).toBe('png');
    expect(meta.width).toBe(1280);
    expect(meta.height).toBeGreaterThanOrEqual(400);
    expect(statSync(file).size).toBeGreaterThan(20_000);
    // Not one flat colour: the picture has text on it.
    const stats = await sharp(file).stats();
    expect(stats.channels[0]!.stdev).toBeGreaterThan(5);
    expect(problems).toEqual([]);
    await page.close();
  });

  it('shows addresses and next-hop replies from mail as text: no element injected, nothing run', async () => {
    await submit(HOSTILE_ADDRESS, 'hostile');
    const { page, problems } = await openDashboard();
    const shownAddress = HOSTILE_ADDRESS; // as smtp-server hands it over: verbatim
    const text = await pageShows(page, [shownAddress, '<img src=x onerror=alert(1)>']);
    expect(text).toContain(`550 5.1.1 <img src=x onerror=alert(1)> no such user`);
    expect(await page.locator('img').count()).toBe(0);
    expect(await page.evaluate(() => document.querySelectorAll('[onerror], [onmouseover]').length)).toBe(0);
    expect(problems).toEqual([]);
    await page.screenshot({ path: join(dir, 'hostile.png'), fullPage: true });
    await page.close();
  });
});
