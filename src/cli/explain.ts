/**
 * `drucof-relay explain ID`: per recipient, the DRUCOF decision the relay took
 * (protocols.md A8) in mail terms — the branch, the next hop and the extensions it
 * advertised, the capabilities used and where they came from, the plan, what was
 * converted, and the outcome. Reads the same records the worker writes
 * (`RecipientState.decision`); the formatting (`explainMessage`) is pure.
 */
import { formatFeatures } from '../capabilities/feature-set/index.ts';
import type { RelayConfig } from '../config/schema.ts';
import type { CapabilityAnswer, CapabilitySource } from '../model/capability.ts';
import type { DecisionBranch } from '../model/decision.ts';
import type { ConversionRecord, PartRecord, PartSummary, PlanSummary } from '../model/plan.ts';
import type { DrucofTrace, RecipientState } from '../model/recipient.ts';
import { replyText } from '../model/reply.ts';
import type { StoredMessage } from '../queue/store.ts';
import { withStore } from './queue.ts';

/** One sentence per section-4 branch, in mail terms. */
export const BRANCH_EXPLANATIONS: Readonly<Record<DecisionBranch, string>> = {
  'no-drucof': 'the sender did not ask for DRUCOF: relayed as the sender wrote it, never converted',
  'conneg-ok/usable': "the recipient's capabilities are known and the relay made the content usable",
  'conneg-ok/pass-on':
    "the recipient's capabilities are known but the relay cannot make the content usable; the next hop supports DRUCOF, so the request was passed on for a later hop to meet",
  'conneg-ok/no-way':
    "the recipient's capabilities are known, the relay cannot make the content usable and the next hop cannot carry the DRUCOF request: nothing can deliver usable content, so the recipient fails (or waits for a retry when the cause may pass, see outcome)",
  'conneg-failed/pass-on':
    "the recipient's capabilities could not be learned; the next hop supports DRUCOF, so the request was passed on unchanged",
  'conneg-failed/no-way':
    "the recipient's capabilities could not be learned and the next hop cannot carry the DRUCOF request: nothing can deliver usable content, so the recipient fails (or waits for a retry when the cause may pass, see outcome)",
  'drucof-only': 'the next hop supports DRUCOF but not CONNEG, so the request was passed on unchanged without asking for capabilities',
  neither: 'the next hop supports neither CONNEG nor DRUCOF: there is no way to carry the DRUCOF request: the recipient fails (or waits for a retry when a look-up failure may pass, see outcome)',
};

export const NO_DRUCOF = 'no DRUCOF: relayed as the sender wrote it, never converted';
export const NOT_DECIDED = 'not decided yet';

/** Where capabilities came from, in mail terms. */
export const SOURCE_NAMES: Readonly<Record<CapabilitySource, string>> = {
  config: "the relay's own registry (capabilities:)",
  conneg: "the next hop's CONNEG answer",
  srv: "the domain's capability server (SRV _conneg._tcp)",
  cache: 'the capability cache (an earlier answer)',
};

/** Where a failed query went. */
const ASKED: Readonly<Record<'conneg' | 'srv', string>> = {
  conneg: 'the next hop (CONNEG)',
  srv: "the domain's capability server (SRV _conneg._tcp)",
};

/** The whole message: a header line, then one block per recipient (blank line between). */
export function explainMessage(meta: StoredMessage): string[] {
  const e = meta.envelope;
  const n = meta.recipients.length;
  const lines = [`${e.id}  from <${e.mailFrom}>  arrived ${e.receivedAt}  (${n} recipient${n === 1 ? '' : 's'})`];
  for (const r of meta.recipients) lines.push('', ...explainRecipient(r));
  return lines;
}

/** One recipient's block: a heading line, then indented detail lines. */
export function explainRecipient(r: RecipientState): string[] {
  const lines = [`<${r.address}>  ${r.status}  (${attemptText(r)})`];
  const add = (s: string) => lines.push(`  ${s}`);
  if (!r.drucof) {
    add(NO_DRUCOF);
  } else {
    const d = traceOf(r.decision);
    if (!d) add(`DRUCOF: yes — ${NOT_DECIDED}`);
    else {
      add(`DRUCOF: yes — branch ${d.branch}: ${BRANCH_EXPLANATIONS[d.branch] ?? 'a branch this version does not know'}`);
      if (d.hop !== undefined) add(`next hop: ${d.hop} (${extensionsText(d.hopExtensions ?? [])})`);
      if (d.capabilities) add(capabilitiesText(d.capabilities));
      if (d.plan) for (const l of planLines(d.plan, d.capabilities)) add(l);
      if (d.conversion) for (const l of conversionLines(d.conversion)) add(l);
    }
  }
  add(`outcome: ${outcomeText(r)}`);
  return lines;
}

/**
 * The stored decision as a trace. Records written before traces existed hold only
 * the branch name; they are explained as far as they go.
 */
function traceOf(decision: unknown): Partial<DrucofTrace> & { branch: DecisionBranch } | undefined {
  if (typeof decision === 'string') return { branch: decision as DecisionBranch };
  if (decision && typeof decision === 'object' && 'branch' in decision) return decision as DrucofTrace;
  return undefined;
}

function attemptText(r: RecipientState): string {
  if (r.attempts === 0) return 'not attempted yet';
  return `attempt ${r.attempts}${r.lastAttemptAt ? `, ${r.lastAttemptAt}` : ''}`;
}

function extensionsText(ext: readonly string[]): string {
  return ext.length === 0 ? 'advertises neither CONNEG nor DRUCOF' : `advertises ${ext.join(', ')}`;
}

export function capabilitiesText(c: CapabilityAnswer): string {
  switch (c.kind) {
    case 'known':
      return `capabilities: ${c.expression}  [from ${SOURCE_NAMES[c.source] ?? c.source}]`;
    case 'query-failed':
      return `capabilities: query failed: ${c.reason}${c.reply ? ` (reply: ${replyText(c.reply)})` : ''}  [asked ${ASKED[c.source] ?? c.source}]`;
    case 'unknown':
      return 'capabilities: unknown (no source had any for this recipient)';
  }
}

export function planLines(p: PlanSummary, caps?: CapabilityAnswer): string[] {
  const target = caps?.kind === 'known' && caps.expression === p.target ? '' : ` for ${p.target}`;
  const head = p.possible
    ? `plan: possible, loss ${p.loss}${target}`
    : `plan: impossible${p.reply ? ` — ${replyText(p.reply)}` : ''}${target}`;
  return [head, ...p.parts.map((part) => `  part ${part.path} ${part.type}: ${partText(part)}`)];
}

function partText(p: PartSummary): string {
  const why = p.reasons && p.reasons.length > 0 ? p.reasons.join('; ') : undefined;
  switch (p.action) {
    case 'keep':
      return p.usable === false ? `keep, not usable but not critical${why ? ` (${why})` : ''}` : 'keep';
    case 'convert':
      return `convert${p.chain && p.chain.length > 0 ? ` via ${p.chain.join(', ')}` : ''}${p.loss !== undefined ? ` (loss ${p.loss})` : ''}`;
    case 'omit':
      return `omit, replaced by a note${why ? ` (${why})` : ''}`;
    case 'impossible':
      return `impossible${why ? ` (${why})` : ''}`;
  }
}

export function conversionLines(c: ConversionRecord): string[] {
  const lines: string[] = [];
  for (const p of c.parts) {
    lines.push(`converted: ${conversionPartText(p)}, by ${c.host} at ${c.date}`);
    lines.push(`  before: ${formatFeatures(p.before)}`);
    if (p.after) lines.push(`  after:  ${formatFeatures(p.after)}`);
  }
  if (c.parts.length > 1) lines.push(`converted: total loss ${c.loss}`);
  return lines;
}

function conversionPartText(p: PartRecord): string {
  const via = p.chain.length > 0 ? ` via ${p.chain.join(', ')}` : '';
  if (p.omitted) return `part ${p.path} ${p.before.type} omitted (loss ${p.loss})`;
  return `part ${p.path} ${p.before.type} -> ${p.after?.type ?? '?'}${via} (loss ${p.loss})`;
}

function outcomeText(r: RecipientState): string {
  const reply = r.lastReply ? replyText(r.lastReply) : undefined;
  switch (r.status) {
    case 'queued':
      return 'queued, not attempted yet';
    case 'deferred':
      return `deferred${reply ? `: ${reply}` : ''}${r.remoteMta ? ` (from ${r.remoteMta})` : ''}${r.nextAttemptAt ? `; next attempt ${r.nextAttemptAt}` : ''}`;
    case 'failed':
      return `failed${reply ? `: ${reply}` : ''}${r.remoteMta ? ` (from ${r.remoteMta})` : ''}`;
    default: {
      const how = r.status === 'delivered' ? 'delivered' : r.status === 'relayed-with-drucof' ? 'relayed with DRUCOF' : 'relayed';
      return `${reply ?? r.status}${r.remoteMta ? ` (${how} by ${r.remoteMta})` : ` (${how})`}`;
    }
  }
}

/**
 * Reads message `id` from the running relay's Redis and prints the explanation
 * (or, with `json`, `{ envelope, recipients }` as stored). Unknown id: one line on
 * `err`, false.
 */
export async function explain(
  config: RelayConfig,
  id: string,
  json: boolean,
  out: (line: string) => void = console.log,
  err: (line: string) => void = console.error,
): Promise<boolean> {
  return withStore(config, async (store) => {
    const meta = await store.loadMeta(id);
    if (!meta) {
      err(`no message ${id} in the queue (prefix ${config.redis.prefix}; set RELAY_QUEUE_PREFIX and REDIS_URL as for the relay)`);
      return false;
    }
    if (json) out(JSON.stringify({ envelope: meta.envelope, recipients: meta.recipients }, null, 2));
    else for (const line of explainMessage(meta)) out(line);
    return true;
  });
}
