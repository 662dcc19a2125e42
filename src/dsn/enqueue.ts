/**
 * Queues the reports recipients are owed (`RecipientState.reportOwed`) as ordinary
 * mail from `<>` to the original sender (RFC 3461 §6: no RET, NOTIFY=NEVER), one
 * report per action for all recipients that share it. Each report's queue id is
 * derived from the message, action and recipients, so a re-run after a crash
 * re-writes the same report instead of queuing a second one while the first waits.
 */
import type { Envelope } from '../model/envelope.ts';
import { newRecipient, type RecipientState } from '../model/recipient.ts';
import type { MessageStore } from '../queue/store.ts';
import { groupByAction, type ReportItem } from './notify.ts';
import { renderReport } from './report.ts';

export interface ReportContext {
  readonly store: MessageStore;
  readonly hostname: string;
  readonly maxLifetimeMs: number;
  readonly returnLimit: number;
}

/** Queues every owed report; returns the states with `reportOwed` cleared (and `delayWarned` set), to be saved. */
export async function queueOwedReports(
  ctx: ReportContext,
  envelope: Envelope,
  body: Buffer,
  states: readonly RecipientState[],
): Promise<Map<number, RecipientState>> {
  const items: ReportItem[] = [];
  states.forEach((r, index) => r.reportOwed && items.push({ index, recipient: r, action: r.reportOwed }));
  const cleared = new Map<number, RecipientState>();
  if (items.length === 0) return cleared;
  const now = new Date();
  for (const group of groupByAction(items)) {
    if (envelope.mailFrom !== '') {
      const report = await renderReport({
        reportingMta: ctx.hostname,
        envelope,
        items: group.items,
        originalMessage: body,
        now,
        fullReturnLimit: ctx.returnLimit,
        ...(group.action === 'delayed' && { willRetryUntil: new Date(Date.parse(envelope.receivedAt) + ctx.maxLifetimeMs) }),
      });
      const id = `${envelope.id}-${group.action}-${group.items.map((i) => i.index).join('.')}`;
      const reportEnvelope: Envelope = {
        id,
        mailFrom: '',
        body: report.body === '8BITMIME' ? '8BITMIME' : '7BIT',
        smtpUtf8: report.smtpUtf8,
        client: { address: '127.0.0.1', helo: ctx.hostname, hostname: 'localhost' },
        receivedAt: now.toISOString(),
        size: report.raw.length,
      };
      await ctx.store.enqueue(reportEnvelope, [newRecipient(report.to, { notify: 'NEVER' })], report.raw);
    }
    for (const { index, recipient, action } of group.items) {
      const { reportOwed: _sent, ...rest } = recipient;
      cleared.set(index, action === 'delayed' ? { ...rest, delayWarned: true } : rest);
    }
  }
  return cleared;
}
