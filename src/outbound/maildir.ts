/**
 * Final delivery into Maildirs (qmail's maildir(5), as Postfix's virtual(8) and
 * Dovecot write it), for `maildir:DIR` routes: the relay plays the recipient's
 * MX in the lab and in tests. Each recipient gets its own file in
 * `<DIR>/<domain, lower-case>/<local part>/new/`:
 *
 *   1. `tmp/`, `new/`, `cur/` are created as needed (mode 0700);
 *   2. the message — `Return-Path: <sender>` and `Delivered-To: recipient` on
 *      top (what a delivery agent adds), then the stored bytes exactly — is
 *      written to `tmp/<time>.<pid>_<counter>.<host>,S=<size>` (mode 0600,
 *      created exclusively: a name is never reused) and fsynced;
 *   3. it is renamed into `new/` (atomic: a reader sees all of it or nothing),
 *      and `new/` is fsynced so the rename survives a crash.
 *
 * Only then is the recipient answered 2xx (`delivered`). A local part or domain
 * that cannot be a directory name (`/`, a leading `.`, `..`, control
 * characters, empty) is refused with 550 5.1.3; a disk error defers (451 4.3.0),
 * a full disk (ENOSPC) with 452 4.3.1, a quota (EDQUOT) with 452 4.2.2. A file
 * left in `tmp/` by a failure is removed. One file per recipient.
 */
import { constants as fsc, promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { DeliveryResult, MaildirHop } from '../model/delivery.ts';
import type { RecipientState } from '../model/recipient.ts';
import { reply, type Reply } from '../model/reply.ts';
import type { DeliveryRequest } from './deliver.ts';
import { drucofNotOffered } from './deliver.ts';

export interface MaildirOptions {
  /** The host part of file names (our hostname). */
  readonly hostname: string;
}

/** Deliveries made by this process, for unique file names (maildir(5): `<time>.<pid>_<counter>.<host>`). */
let counter = 0;

const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** Longest file name most file systems take (NAME_MAX). */
const NAME_MAX = 255;

/** Why this part of an address cannot name a directory (undefined: it can). */
function badName(part: string): string | undefined {
  if (part === '') return 'is empty';
  if (part.includes('/')) return 'contains "/"';
  if (part.startsWith('.')) return 'begins with "."';
  if (part.includes('..')) return 'contains ".."';
  if (/[\x00-\x1f\x7f]/.test(part)) return 'contains a control character';
  if (Buffer.byteLength(part) > NAME_MAX) return `is longer than ${NAME_MAX} bytes`;
  return undefined;
}

/** The recipient's Maildir (`<dir>/<domain>/<local part>`), or the 550 5.1.3 refusing it. */
export function maildirOf(dir: string, address: string): string | Reply {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  const domain = at < 0 ? '' : address.slice(at + 1).toLowerCase();
  const localProblem = badName(local);
  if (localProblem) return reply(550, 1, 3, `<${address}>: local part ${localProblem}; it cannot name a mailbox here`);
  const domainProblem = badName(domain);
  if (domainProblem) return reply(550, 1, 3, `<${address}>: domain ${domainProblem}; it cannot name a mailbox here`);
  return join(dir, domain, local);
}

/** maildir(5): `/` and `:` in the host name become `\057` and `\072`. */
const hostPart = (h: string): string => h.replace(/\//g, '\\057').replace(/:/g, '\\072');

/** The header lines a delivery agent adds on top of the message (CRLF, as the stored message is). */
export function deliveryHeaders(sender: string, recipient: string): Buffer {
  return Buffer.from(`Return-Path: <${sender}>\r\nDelivered-To: ${recipient}\r\n`, 'utf8');
}

/** A disk error as the recipient's reply: temporary (the disk may be mended), full disk and quota told apart. */
export function diskErrorReply(err: unknown, address: string): Reply {
  const code = (err as NodeJS.ErrnoException).code ?? 'error';
  if (code === 'ENOSPC') return reply(452, 3, 1, `<${address}>: mail system full (${code}); will retry`);
  if (code === 'EDQUOT') return reply(452, 2, 2, `<${address}>: mailbox full (${code}); will retry`);
  return reply(451, 3, 0, `<${address}>: cannot write to the mailbox (${code}); will retry`);
}

/** fsync of a directory, so an entry renamed into it is on disk; file systems that cannot are let be. */
async function syncDir(path: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(path, fsc.O_RDONLY);
    await handle.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM' && code !== 'EBADF') throw err;
  } finally {
    await handle?.close();
  }
}

/** Writes one message into one Maildir; resolves with the path in `new/`, rejects with the disk error. */
export async function writeToMaildir(maildir: string, content: Buffer, hostname: string, now = Date.now()): Promise<string> {
  for (const sub of ['tmp', 'new', 'cur']) await fs.mkdir(join(maildir, sub), { recursive: true, mode: DIR_MODE });
  const name = `${Math.floor(now / 1000)}.${process.pid}_${++counter}.${hostPart(hostname)},S=${content.length}`;
  const tmp = join(maildir, 'tmp', name);
  const target = join(maildir, 'new', name);
  const handle = await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, FILE_MODE);
  try {
    try {
      await handle.writeFile(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, target);
  } catch (err) {
    await fs.unlink(tmp).catch(() => {});
    throw err;
  }
  // Should this fail, the file is in new/ but maybe not on disk: the recipient is
  // deferred and may get the message twice, which mail prefers to losing it.
  await syncDir(join(maildir, 'new'));
  return target;
}

/**
 * Delivers the request's message into each recipient's Maildir under `hop.dir`.
 * Never rejects: every recipient gets a Reply (2xx delivered, 4xx, 5xx). A
 * Maildir hop advertises nothing: a request to pass DRUCOF on is deferred
 * (451 4.3.3, the decision is made again), as for any hop without DRUCOF.
 */
export async function deliverToMaildir(req: DeliveryRequest, hop: MaildirHop, opts: MaildirOptions): Promise<DeliveryResult & { readonly files: ReadonlyMap<string, string> }> {
  const perRecipient = new Map<string, Reply>();
  const files = new Map<string, string>();
  for (const r of req.recipients) {
    const got = await deliverOne(req, hop, r, opts);
    if (typeof got === 'string') {
      files.set(r.address, got);
      perRecipient.set(r.address, reply(250, 0, 0, `<${r.address}> delivered to its Maildir`));
    } else perRecipient.set(r.address, got);
  }
  return { hop: hop.key, ehlo: [], perRecipient, dsnPassedOn: false, files };
}

async function deliverOne(req: DeliveryRequest, hop: MaildirHop, r: RecipientState, opts: MaildirOptions): Promise<string | Reply> {
  if (req.perRecipient?.get(r.address)?.drucof) return drucofNotOffered();
  const maildir = maildirOf(hop.dir, r.address);
  if (typeof maildir !== 'string') return maildir;
  const content = Buffer.concat([deliveryHeaders(req.envelope.mailFrom, r.address), req.body]);
  try {
    return await writeToMaildir(maildir, content, opts.hostname);
  } catch (err) {
    return diskErrorReply(err, r.address);
  }
}
