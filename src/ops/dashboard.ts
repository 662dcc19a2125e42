/**
 * The dashboard (`http.dashboard: true`): one HTML page with inline JS, no build
 * step, served at `/` by ops/http.ts, and the JSON it fetches:
 *
 * - `/api/queue`: queue counts and the most recent messages (the last 50
 *   accepted, from the capped list `<prefix>:recent-messages` that every
 *   listener writes) with each recipient's status, attempts, last reply, DRUCOF branch;
 * - `/api/decisions`: the last 200 DRUCOF decisions, from the capped list
 *   `<prefix>:recent-decisions` that every worker writes (relay/drucof.ts's
 *   `noteDecisions` port), so the page shows every process's decisions;
 * - `/api/conversions`: per converter chain, parts converted and mean loss, from
 *   this process's metrics.
 *
 * Everything on the page may come from mail or a next hop (addresses, replies,
 * capability expressions): the page builds its DOM with text nodes only, never
 * markup, and the Content-Security-Policy allows only its own script and style
 * (by hash), so an injected handler could not run even if escaping were wrong.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { isFinal } from '../model/recipient.ts';
import { replyText } from '../model/reply.ts';
import { keys } from '../queue/keys.ts';
import type { MessageStore } from '../queue/store.ts';
import type { DecisionNote } from '../relay/drucof.ts';
import type { ConversionStat, QueueDepth, QueueProbe } from './metrics.ts';

export const RECENT_DECISIONS = 200;
export const RECENT_MESSAGES = 50;

/**
 * The two capped lists (newest first: LPUSH, then LTRIM). Plain commands, not
 * MULTI: on a connection BullMQ shares, a pipeline carries a copy of every BullMQ
 * script (store.ts). Two writers racing can leave the list a few entries over its
 * cap until the next trim, nothing worse.
 */
export class DashboardRecords {
  private readonly k: ReturnType<typeof keys>;

  constructor(
    private readonly redis: Pick<Redis, 'lpush' | 'ltrim' | 'lrange'>,
    prefix: string,
  ) {
    this.k = keys(prefix);
  }

  async noteDecisions(notes: readonly DecisionNote[]): Promise<void> {
    if (notes.length === 0) return;
    await Promise.all([this.redis.lpush(this.k.recentDecisions, ...notes.map((n) => JSON.stringify(n))), this.redis.ltrim(this.k.recentDecisions, 0, RECENT_DECISIONS - 1)]);
  }

  async noteStored(id: string): Promise<void> {
    await Promise.all([this.redis.lpush(this.k.recentMessages, id), this.redis.ltrim(this.k.recentMessages, 0, RECENT_MESSAGES - 1)]);
  }

  /** Newest first; an entry that does not parse is skipped. */
  async decisions(): Promise<DecisionNote[]> {
    const raw = await this.redis.lrange(this.k.recentDecisions, 0, RECENT_DECISIONS - 1);
    return raw.flatMap((r) => {
      try {
        return [JSON.parse(r) as DecisionNote];
      } catch {
        return [];
      }
    });
  }

  /** Queue ids, newest first, without repeats. */
  async recentIds(): Promise<string[]> {
    return [...new Set(await this.redis.lrange(this.k.recentMessages, 0, RECENT_MESSAGES - 1))];
  }
}

export interface RecipientView {
  readonly address: string;
  readonly status: string;
  readonly attempts: number;
  readonly drucof: boolean;
  readonly lastReply?: string;
  readonly nextAttemptAt?: string;
  readonly branch?: string;
}

export interface MessageView {
  readonly id: string;
  /** held, waiting, active, delayed, failed (a crashed job), finished (every recipient final) */
  readonly state: string;
  readonly receivedAt: string;
  readonly from: string;
  readonly size: number;
  readonly recipients: readonly RecipientView[];
}

export interface QueueView {
  readonly counts: QueueDepth;
  readonly messages: readonly MessageView[];
}

/** What the page's endpoints answer. */
export interface DashboardSource {
  queue(): Promise<QueueView>;
  decisions(): Promise<{ readonly decisions: readonly DecisionNote[] }>;
  conversions(): Promise<{ readonly converters: readonly ConversionStat[] }>;
}

export function dashboardSource(deps: {
  readonly store: Pick<MessageStore, 'queue' | 'redis' | 'prefix' | 'loadMeta'>;
  readonly records: DashboardRecords;
  readonly probe: QueueProbe;
  readonly conversionStats: () => Promise<ConversionStat[]>;
}): DashboardSource {
  const { store, records } = deps;
  const heldKey = keys(store.prefix).held;
  const view = async (id: string): Promise<MessageView | undefined> => {
    const [meta, held, jobState] = await Promise.all([store.loadMeta(id), store.redis.sismember(heldKey, id), store.queue.getJobState(id)]);
    if (!meta) return undefined; // its record expired (queue.keepFinished)
    const e = meta.envelope;
    const state = held ? 'held' : jobState === 'unknown' ? (meta.recipients.every(isFinal) ? 'finished' : 'unknown') : jobState === 'prioritized' ? 'waiting' : jobState;
    return {
      id,
      state,
      receivedAt: e.receivedAt,
      from: e.mailFrom,
      size: e.size,
      recipients: meta.recipients.map((r) => ({
        address: r.address,
        status: r.status,
        attempts: r.attempts,
        drucof: r.drucof,
        ...(r.lastReply && { lastReply: replyText(r.lastReply) }),
        ...(r.nextAttemptAt && !isFinal(r) && { nextAttemptAt: r.nextAttemptAt }),
        ...(r.decision && { branch: r.decision.branch }),
      })),
    };
  };
  return {
    async queue() {
      const [counts, ids] = await Promise.all([deps.probe.depth(), records.recentIds()]);
      const messages = (await Promise.all(ids.map(view))).filter((m): m is MessageView => m !== undefined);
      return { counts, messages };
    },
    async decisions() {
      return { decisions: await records.decisions() };
    },
    async conversions() {
      return { converters: await deps.conversionStats() };
    },
  };
}

const STYLE = `
  :root { color-scheme: light; --fg: #1d2329; --muted: #5c6670; --line: #d5dbe1; --bg: #f6f8fa; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: #fff; }
  header { display: flex; align-items: baseline; gap: 1em; padding: 12px 20px; border-bottom: 1px solid var(--line); background: var(--bg); }
  header h1 { margin: 0; font-size: 18px; }
  #status { color: var(--muted); }
  #status.error { color: var(--bad); }
  main { padding: 8px 20px 32px; }
  h2 { font-size: 15px; margin: 24px 0 8px; }
  .counts { display: flex; gap: 12px; flex-wrap: wrap; }
  .count { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 110px; background: var(--bg); }
  .count b { display: block; font-size: 22px; }
  .count span { color: var(--muted); }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
  th { font-weight: 600; color: var(--muted); background: var(--bg); overflow-wrap: normal; white-space: nowrap; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
  .muted { color: var(--muted); }
  .badge { display: inline-block; padding: 0 6px; border-radius: 10px; border: 1px solid currentColor; font-size: 12px; white-space: nowrap; }
  .ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
  .rcpt + .rcpt { margin-top: 4px; }
  .reply { display: block; color: var(--muted); }
  .empty { color: var(--muted); font-style: italic; }
`;

// Inline page script. Every value from the API is put into the page as a text
// node (document.createTextNode / textContent); classes come only from fixed maps.
const SCRIPT = `
'use strict';
const REFRESH_MS = 3000;
const STATUS_CLASS = { relayed: 'ok', 'relayed-with-drucof': 'ok', 'converted-and-relayed': 'ok', delivered: 'ok', finished: 'ok', failed: 'bad', deferred: 'warn', delayed: 'warn', held: 'warn', queued: '', waiting: '', active: '' };
const ACTION_CLASS = { fail: 'bad', 'relay-with-drucof': 'ok', 'convert-and-relay': 'ok', relay: 'ok' };

function el(tag, cls, children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children || []) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
  return e;
}
const cell = (children, cls) => el('td', cls, Array.isArray(children) ? children : [children]);
const badge = (text, map) => el('span', 'badge ' + (Object.prototype.hasOwnProperty.call(map, text) ? map[text] : ''), [text]);
const when = (iso) => {
  const d = new Date(iso);
  return isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
};
function emptyRow(cols, text) {
  const td = el('td', 'empty', [text]);
  td.colSpan = cols;
  return el('tr', null, [td]);
}

function renderCounts(counts) {
  const box = document.getElementById('counts');
  box.replaceChildren(...['waiting', 'active', 'delayed', 'held'].map((k) => el('div', 'count', [el('b', null, [counts[k]]), el('span', null, [k])])));
}

function renderMessages(messages) {
  const body = document.querySelector('#messages tbody');
  if (messages.length === 0) return body.replaceChildren(emptyRow(5, 'no messages received yet'));
  body.replaceChildren(...messages.map((m) => el('tr', null, [
    cell(m.id, 'mono'),
    cell(badge(m.state, STATUS_CLASS)),
    cell(when(m.receivedAt)),
    cell(m.from === '' ? '<>' : m.from),
    cell(m.recipients.map((r) => el('div', 'rcpt', [
      r.address, ' ', badge(r.status, STATUS_CLASS),
      el('span', 'muted', [' ' + r.attempts + (r.attempts === 1 ? ' attempt' : ' attempts') + (r.drucof ? ', DRUCOF' : '') + (r.branch ? ' (' + r.branch + ')' : '') + (r.nextAttemptAt ? ', next ' + when(r.nextAttemptAt) : '')]),
      r.lastReply ? el('span', 'reply mono', [r.lastReply]) : null,
    ]))),
  ])));
}

function describeCaps(c) {
  const parts = [c.kind];
  if (c.source) parts.push('from ' + c.source);
  const line = el('div', null, [parts.join(' ')]);
  const detail = c.expression || c.reason;
  return detail ? [line, el('span', 'reply mono', [detail])] : [line];
}

function renderDecisions(decisions) {
  const body = document.querySelector('#decisions tbody');
  if (decisions.length === 0) return body.replaceChildren(emptyRow(7, 'no DRUCOF decisions yet'));
  body.replaceChildren(...decisions.map((d) => el('tr', null, [
    cell(when(d.at)),
    cell(d.queueId, 'mono'),
    cell(d.recipient),
    cell(badge(d.branch, { 'conneg-ok/no-way': 'bad', 'conneg-failed/no-way': 'bad', neither: 'bad' })),
    cell([d.hop, el('span', 'reply', [(d.hopExtensions || []).join(', ') || 'no CONNEG, no DRUCOF'])]),
    cell(describeCaps(d.capabilities || {})),
    cell([badge(d.action, ACTION_CLASS), ' ', d.result !== undefined ? el('span', 'reply mono', [d.result]) : el('span', null, [d.variant + (d.loss !== undefined ? ' (loss ' + d.loss + ')' : '')])]),
  ])));
}

function renderConversions(converters) {
  const body = document.querySelector('#conversions tbody');
  if (converters.length === 0) return body.replaceChildren(emptyRow(3, 'no conversions in this process yet'));
  body.replaceChildren(...converters.map((c) => el('tr', null, [cell(c.converter, 'mono'), cell(c.count, 'num'), cell(c.meanLoss.toFixed(1), 'num')])));
}

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(path + ': ' + r.status + ' ' + (await r.text()).slice(0, 200));
  return r.json();
}

async function refresh() {
  const status = document.getElementById('status');
  try {
    const [q, d, c] = await Promise.all([getJson('api/queue'), getJson('api/decisions'), getJson('api/conversions')]);
    renderCounts(q.counts);
    renderMessages(q.messages);
    renderDecisions(d.decisions);
    renderConversions(c.converters);
    status.className = '';
    status.textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (err) {
    status.className = 'error';
    status.textContent = 'could not refresh: ' + (err && err.message ? err.message : String(err));
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
`;

const sha256 = (s: string) => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;

/** Only this page's own script and style run; data comes from this server; nothing else loads. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>drucof-relay</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>drucof-relay</h1><span id="status">loading…</span></header>
<main>
<section>
<h2>Queue</h2>
<div class="counts" id="counts"></div>
</section>
<section>
<h2>Recent messages</h2>
<table id="messages">
<thead><tr><th>Queue ID</th><th>State</th><th>Received</th><th>Sender</th><th>Recipients</th></tr></thead>
<tbody></tbody>
</table>
</section>
<section>
<h2>Recent DRUCOF decisions</h2>
<table id="decisions">
<thead><tr><th>Time</th><th>Queue ID</th><th>Recipient</th><th>Branch</th><th>Next hop</th><th>Capabilities</th><th>Variant / result</th></tr></thead>
<tbody></tbody>
</table>
</section>
<section>
<h2>Conversions <span class="muted">(this process)</span></h2>
<table id="conversions">
<thead><tr><th>Converter</th><th>Parts</th><th>Mean loss</th></tr></thead>
<tbody></tbody>
</table>
</section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
