/**
 * Maildir delivery (outbound/maildir.ts) with real files in a temp directory,
 * through the pool as the worker calls it: the layout and modes, the name and
 * size in it, the headers a delivery agent adds, the message byte-exact under
 * them, refused local parts, and disk errors as temporary failures.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Envelope } from '../../src/model/envelope.ts';
import type { MaildirHop } from '../../src/model/delivery.ts';
import { newRecipient } from '../../src/model/recipient.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { OutboundPool, type RecipientOptions } from '../../src/outbound/index.ts';
import { diskErrorReply, maildirOf } from '../../src/outbound/maildir.ts';

const BODY = Buffer.from('Received: from client.test by relay.test; Mon, 23 Nov 2026 10:52:37 +0000\r\nSubject: lab\r\n\r\nline one\r\n.leading dot\r\n\xe9 8-bit\r\n', 'latin1');

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'QMAILDIR1',
    mailFrom: 'sender@example.com',
    body: '8BITMIME',
    smtpUtf8: false,
    client: { address: '127.0.0.1', helo: 'client.test' },
    receivedAt: new Date().toISOString(),
    size: BODY.length,
    ...over,
  };
}

let dir: string;
let pool: OutboundPool;
let hop: MaildirHop;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'drucof-maildir-'));
  hop = { key: `route:maildir:${dir}`, transport: 'maildir', dir, hosts: [] };
  pool = new OutboundPool({ hostname: 'relay.test', connectionsPerHop: 2, connectTimeout: 1000, greetingTimeout: 1000, commandTimeout: 1000, idleReuse: 1000, tlsVerify: false, log: silentLogger });
});

afterEach(async () => {
  await pool.close();
  chmodSync(dir, 0o700);
  rmSync(dir, { recursive: true, force: true });
});

const deliver = (addresses: readonly string[], over: { envelope?: Partial<Envelope>; drucof?: readonly string[]; conneg?: readonly string[] } = {}) =>
  pool.deliver({
    hop,
    envelope: envelope(over.envelope),
    recipients: addresses.map((a) => newRecipient(a)),
    body: BODY,
    perRecipient: new Map<string, RecipientOptions>([...(over.drucof ?? []).map((a) => [a, { drucof: true }] as const), ...(over.conneg ?? []).map((a) => [a, { conneg: true }] as const)]),
  });

const mode = (p: string) => statSync(p).mode & 0o777;

/**
 * Makes `path` read-only for this process: mode 0500, or — for root, whom modes
 * do not stop — the immutable attribute (chattr +i). Undefined when neither works.
 */
function makeReadOnly(path: string): { code: string; undo: () => void } | undefined {
  if (process.getuid?.() !== 0) {
    chmodSync(path, 0o500);
    return { code: 'EACCES', undo: () => chmodSync(path, 0o700) };
  }
  if (spawnSync('chattr', ['+i', path]).status !== 0) return undefined;
  return { code: 'EPERM', undo: () => void spawnSync('chattr', ['-i', path]) };
}
const filesIn = (p: string) => readdirSync(p).sort();

describe('Maildir delivery', () => {
  it('writes one file per recipient into <dir>/<domain>/<local part>/new/, with tmp/ and cur/, modes 0700 and 0600', async () => {
    const result = await deliver(['Alice@LAB.test', 'bob@lab.test']);
    expect([...result.perRecipient].map(([a, r]) => [a, r.code, r.enhanced])).toEqual([
      ['Alice@LAB.test', 250, '2.0.0'],
      ['bob@lab.test', 250, '2.0.0'],
    ]);
    expect(result).toMatchObject({ hop: hop.key, ehlo: [], dsnPassedOn: false });
    expect(result.remoteMta).toBeUndefined();
    // The domain lower-cased, the local part as written (local parts are case-sensitive).
    expect(filesIn(dir)).toEqual(['lab.test']);
    expect(filesIn(join(dir, 'lab.test'))).toEqual(['Alice', 'bob']);
    for (const local of ['Alice', 'bob']) {
      const md = join(dir, 'lab.test', local);
      expect(filesIn(md)).toEqual(['cur', 'new', 'tmp']);
      for (const sub of ['', 'cur', 'new', 'tmp']) expect(mode(join(md, sub)), `${local}/${sub}`).toBe(0o700);
      expect(filesIn(join(md, 'tmp'))).toEqual([]);
      expect(filesIn(join(md, 'cur'))).toEqual([]);
      const [name, ...more] = filesIn(join(md, 'new'));
      expect(more).toEqual([]);
      // maildir(5): <time>.<pid>_<counter>.<host>, plus the size.
      const m = /^(\d+)\.(\d+)_(\d+)\.relay\.test,S=(\d+)$/.exec(name!);
      expect(m, name).not.toBeNull();
      expect(Math.abs(Number(m![1]) - Date.now() / 1000)).toBeLessThan(60);
      expect(Number(m![2])).toBe(process.pid);
      const file = join(md, 'new', name!);
      expect(mode(file)).toBe(0o600);
      expect(statSync(file).size).toBe(Number(m![4]));
    }
  });

  it('puts Return-Path and Delivered-To on top of the message, which follows byte for byte', async () => {
    await deliver(['bob@lab.test']);
    const md = join(dir, 'lab.test', 'bob', 'new');
    const got = readFileSync(join(md, filesIn(md)[0]!));
    const head = Buffer.from('Return-Path: <sender@example.com>\r\nDelivered-To: bob@lab.test\r\n');
    expect(got.subarray(0, head.length).toString()).toBe(head.toString());
    expect(got.subarray(head.length).equals(BODY)).toBe(true);
  });

  it('writes Return-Path: <> for a message from the null sender (a report)', async () => {
    await deliver(['bob@lab.test'], { envelope: { mailFrom: '' } });
    const md = join(dir, 'lab.test', 'bob', 'new');
    expect(readFileSync(join(md, filesIn(md)[0]!), 'latin1')).toMatch(/^Return-Path: <>\r\nDelivered-To: bob@lab\.test\r\nReceived: /);
  });

  it('gives every delivery a file name of its own (the same message twice, one recipient)', async () => {
    await deliver(['bob@lab.test']);
    await deliver(['bob@lab.test']);
    const names = filesIn(join(dir, 'lab.test', 'bob', 'new'));
    expect(names).toHaveLength(2);
    expect(new Set(names).size).toBe(2);
  });

  it.each([
    ['../escape@lab.test', 'contains "/"'],
    ['..@lab.test', 'begins with "."'],
    ['a/b@lab.test', 'contains "/"'],
    ['.hidden@lab.test', 'begins with "."'],
    ['a..b@lab.test', 'contains ".."'],
    ['tab\there@lab.test', 'control character'],
    ['@lab.test', 'is empty'],
    ['ok@..', 'domain begins with "."'],
    ['ok@a/b', 'domain contains "/"'],
  ])('refuses %j with 550 5.1.3 and writes nothing', async (address, why) => {
    const result = await deliver([address, 'fine@lab.test']);
    const r = result.perRecipient.get(address)!;
    expect(r.code).toBe(550);
    expect(r.enhanced).toBe('5.1.3');
    expect(r.lines.join(' ')).toContain(why);
    expect(result.perRecipient.get('fine@lab.test')?.code).toBe(250);
    expect(filesIn(dir)).toEqual(['lab.test']);
    expect(filesIn(join(dir, 'lab.test'))).toEqual(['fine']);
  });

  it('maildirOf: the path for a good address', () => expect(maildirOf('/m', 'Bob.Smith+tag@Lab.Test')).toBe('/m/lab.test/Bob.Smith+tag'));

  it('a read-only directory defers the recipient (451 4.3.0) and leaves nothing behind', async (ctx) => {
    const readOnly = makeReadOnly(dir);
    if (!readOnly) return ctx.skip();
    try {
      const result = await deliver(['bob@lab.test']);
      const r = result.perRecipient.get('bob@lab.test')!;
      expect([r.code, r.enhanced]).toEqual([451, '4.3.0']);
      expect(r.lines.join(' ')).toContain(readOnly.code);
    } finally {
      readOnly.undo();
    }
    expect(filesIn(dir)).toEqual([]);
  });

  it('a read-only Maildir (new/ not writable) defers the recipient and removes the file from tmp/', async () => {
    // Root writes anywhere: a file where new/ should be stops it as surely as a mode would.
    const md = join(dir, 'lab.test', 'bob');
    mkdirSync(join(md, 'tmp'), { recursive: true });
    writeFileSync(join(md, 'new'), 'not a directory');
    const result = await deliver(['bob@lab.test', 'alice@lab.test']);
    const r = result.perRecipient.get('bob@lab.test')!;
    expect([r.code, r.enhanced]).toEqual([451, '4.3.0']);
    expect(r.lines.join(' ')).toMatch(/EEXIST|ENOTDIR/);
    expect(filesIn(join(md, 'tmp'))).toEqual([]);
    expect(result.perRecipient.get('alice@lab.test')?.code).toBe(250);
  });

  it('disk errors: ENOSPC → 452 4.3.1, EDQUOT → 452 4.2.2, anything else → 451 4.3.0', () => {
    const err = (code: string) => Object.assign(new Error(code), { code });
    expect([diskErrorReply(err('ENOSPC'), 'a@b').code, diskErrorReply(err('ENOSPC'), 'a@b').enhanced]).toEqual([452, '4.3.1']);
    expect([diskErrorReply(err('EDQUOT'), 'a@b').code, diskErrorReply(err('EDQUOT'), 'a@b').enhanced]).toEqual([452, '4.2.2']);
    expect([diskErrorReply(err('EIO'), 'a@b').code, diskErrorReply(err('EIO'), 'a@b').enhanced]).toEqual([451, '4.3.0']);
  });

  it('a request to pass DRUCOF on is deferred (a Maildir advertises nothing); CONNEG queries fail without asking', async () => {
    const result = await deliver(['d@lab.test', 'q@lab.test'], { drucof: ['d@lab.test'], conneg: ['q@lab.test'] });
    expect([result.perRecipient.get('d@lab.test')?.code, result.perRecipient.get('d@lab.test')?.enhanced]).toEqual([451, '4.3.3']);
    expect(result.perRecipient.get('q@lab.test')?.code).toBe(250);
    expect(result.capabilities?.get('q@lab.test')).toMatchObject({ kind: 'query-failed', source: 'conneg' });
    expect(filesIn(join(dir, 'lab.test'))).toEqual(['q']);
  });
});

describe('what the decision logic reads of a Maildir hop', () => {
  it('its keywords are the empty set (neither CONNEG nor DRUCOF): the relay is the final hop', async () => {
    expect([...(await pool.hopKeywords(hop))]).toEqual([]);
  });

  it('a probe asks no one: every recipient a failed query', async () => {
    const answers = await pool.probe(hop, ['a@lab.test', 'b@lab.test']);
    expect([...answers.values()].map((a) => a.kind)).toEqual(['query-failed', 'query-failed']);
  });
});
