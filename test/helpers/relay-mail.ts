/**
 * Mail into a relay under test, and the wait for what became of it: one copy
 * for the end-to-end and fault tests (a real SMTP session over loopback; the
 * states read back from the relay's own store).
 */
import type { RecipientState } from '../../src/model/recipient.ts';
import type { MessageStore } from '../../src/queue/store.ts';
import { Dialog } from './dialog.ts';
import { waitFor } from './wait.ts';

export interface Submission {
  readonly from: string;
  /** Parameters of MAIL FROM (`BODY=8BITMIME`), if any. */
  readonly mailParams?: string;
  /** Each recipient, with the parameters of its RCPT (`DRUCOF`, `NOTIFY=…`) if any. */
  readonly to: readonly (readonly [address: string, params?: string])[];
  /** The message as it is stored (CRLF lines); dot-stuffed here. */
  readonly raw: Buffer;
  /** How long the reply after the data may take (ms; default the dialog's 5 s). */
  readonly replyTimeoutMs?: number;
}

/** One transaction (every reply must be positive); returns the queue id from the 250 after the data. */
export async function submitMessage(port: number, m: Submission): Promise<string> {
  const d = await Dialog.connect(port);
  await d.hello();
  await d.command(`MAIL FROM:<${m.from}>${m.mailParams ? ` ${m.mailParams}` : ''}`, 250);
  for (const [address, params] of m.to) await d.command(`RCPT TO:<${address}>${params ? ` ${params}` : ''}`, 250);
  await d.command('DATA', 354);
  const stuffed = Buffer.from(m.raw.toString('latin1').replace(/^\./gm, '..'), 'latin1');
  d.write(Buffer.concat([stuffed, Buffer.from('.\r\n')]));
  const done = await d.expect(250, undefined, m.replyTimeoutMs);
  await d.quit();
  return /\[QUEUEID ([^\]]+)\]/.exec(done.text)![1]!;
}

/**
 * The recipient states once none is queued or deferred any more. On time-out
 * the error shows the last states and `context()` (a relay's output, say).
 */
export async function settledStates(
  store: Pick<MessageStore, 'loadMeta'>,
  id: string,
  o: { readonly timeoutMs?: number; readonly context?: () => string } = {},
): Promise<RecipientState[]> {
  let last: readonly RecipientState[] = [];
  try {
    return await waitFor(
      `message ${id} to settle`,
      async () => {
        last = (await store.loadMeta(id))?.recipients ?? [];
        return last.length > 0 && last.every((r) => r.status !== 'queued' && r.status !== 'deferred') ? [...last] : undefined;
      },
      o.timeoutMs,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; states: ${JSON.stringify(last, null, 1)}${o.context ? `\n${o.context()}` : ''}`);
  }
}

/** States by recipient address. */
export const byAddress = (states: readonly RecipientState[]): Map<string, RecipientState> => new Map(states.map((r) => [r.address, r]));
