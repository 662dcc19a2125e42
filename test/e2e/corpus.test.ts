/**
 * Every message of the shared real-world corpus (../shared/corpus) passes through
 * the relay byte-intact apart from the added Received: header. The corpus is not
 * part of a user's clone: without it this file reports one skipped line.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nodemailer from 'nodemailer';
import { startNextHop } from '../peers/next-hop.ts';
import { startRelay, type RelayProcess } from '../helpers/relay-process.ts';
import { REDIS_URL, dropPrefix, uniquePrefix } from '../helpers/redis.ts';

const CORPUS = new URL('../../../shared/corpus/mail-gem/', import.meta.url).pathname;
const files = existsSync(CORPUS)
  ? readdirSync(CORPUS, { recursive: true }).map(String).filter((f) => f.endsWith('.eml')).sort()
  : [];
if (files.length === 0) console.log(`corpus: ${CORPUS} not present, corpus test skipped`);

const prefix = uniquePrefix('e2e-corpus');
let hop: Awaited<ReturnType<typeof startNextHop>>;
let relay: RelayProcess;

/** SMTP carries lines ending in CRLF: a file's bare LFs (and bare CRs) arrive as CRLF. */
const asSmtpLines = (b: Buffer) => Buffer.from(b.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n'), 'latin1');

describe.runIf(files.length > 0)('corpus through the relay', () => {
  beforeAll(async () => {
    hop = await startNextHop({ dsn: true });
    relay = await startRelay({ env: { RELAY_SMARTHOST: `127.0.0.1:${hop.port}`, REDIS_URL, RELAY_QUEUE_PREFIX: prefix } });
  });
  afterAll(async () => {
    await relay?.stop();
    await hop?.close();
    await dropPrefix(prefix);
  });

  it(`relays all ${files.length} corpus messages byte-intact apart from the trace header`, async () => {
    const client = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, secure: false, ignoreTLS: true, pool: true, maxConnections: 4 });
    const sent = new Map<string, Buffer>();
    await Promise.all(
      files.map(async (f, i) => {
        let raw = asSmtpLines(readFileSync(join(CORPUS, f)));
        if (!raw.subarray(-2).equals(Buffer.from('\r\n'))) raw = Buffer.concat([raw, Buffer.from('\r\n')]);
        const to = `c${i}@example.net`;
        sent.set(to, raw);
        const info = await client.sendMail({ envelope: { from: 's@example.com', to: [to] }, raw });
        expect(info.response, f).toMatch(/^250 /);
      }),
    );
    client.close();
    for (let t = 0; t < 400 && hop.messages.length < files.length; t++) await new Promise((r) => setTimeout(r, 50));
    expect(hop.messages).toHaveLength(files.length);
    for (const m of hop.messages) {
      const want = sent.get(m.rcptTo[0]!)!;
      const text = m.body.toString('latin1');
      const received = /^Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n/.exec(text);
      expect(received, m.rcptTo[0]).not.toBeNull();
      expect(m.body.subarray(Buffer.byteLength(received![0], 'latin1')).equals(want), files[Number(m.rcptTo[0]!.slice(1, -12))]).toBe(true);
    }
  }, 60_000);
});
