/**
 * The capability cache (protocols.md A3): what next hops answered to CONNEG
 * queries, per recipient, and each next hop's EHLO keywords, in Redis so every
 * process of the relay (the listener answering CONNEG, the workers deciding)
 * shares them. Answers live 1 hour, failed queries 5 minutes (so a failing hop
 * is not asked again for every message), EHLO keywords 1 hour.
 *
 * Keys: `${prefix}:caps:<recipient>` (domain lower-cased) and
 * `${prefix}:ehlo:<hop key>`, JSON values with a PX expiry. The cache never
 * rejects: Redis trouble is a miss (reads) or a no-op (writes), reported through
 * `onError`, because a missing cache entry only costs a query.
 */
import type { Redis } from 'ioredis';
import type { CapabilityAnswer } from '../model/capability.ts';
import type { Reply } from '../model/reply.ts';

export interface CapabilityCacheOptions {
  /** The relay's key prefix (RELAY_QUEUE_PREFIX). */
  readonly prefix: string;
  /** ms a known answer is kept (default 1 hour). */
  readonly answerTtl?: number;
  /** ms a failed query is kept (default 5 minutes). */
  readonly failureTtl?: number;
  /** ms a hop's EHLO keywords are kept (default 1 hour). */
  readonly ehloTtl?: number;
  /** Called when Redis fails; the operation is then a miss or a no-op. */
  readonly onError?: (err: unknown, op: string) => void;
}

/** The Redis commands the cache uses (an ioredis client, or a test double of one). */
export type CacheRedis = Pick<Redis, 'get' | 'mget' | 'set'>;

export const DEFAULT_ANSWER_TTL = 3_600_000;
export const DEFAULT_FAILURE_TTL = 300_000;
export const DEFAULT_EHLO_TTL = 3_600_000;

/** A recipient as a cache key: the domain is case-insensitive, the local part is not (RFC 5321 §2.4). */
export function recipientKey(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : address.slice(0, at + 1) + address.slice(at + 1).toLowerCase();
}

interface StoredEhlo {
  readonly keywords: readonly string[];
  /** ms since the epoch when the keywords were read from the hop. */
  readonly at: number;
}

/** A hop's EHLO keywords and when they were read. */
export interface CachedKeywords {
  readonly keywords: ReadonlySet<string>;
  readonly at: number;
}

function isReply(v: unknown): v is Reply {
  const r = v as Reply | undefined;
  return typeof r === 'object' && r !== null && typeof r.code === 'number' && Array.isArray(r.lines);
}

/** A stored answer, checked: anything unexpected is a miss, never a wrong answer. */
function decodeAnswer(raw: string | null): CapabilityAnswer | undefined {
  if (raw === null) return undefined;
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (v.kind === 'known' && typeof v.expression === 'string' && typeof v.source === 'string') {
      return { kind: 'known', expression: v.expression, source: v.source as Extract<CapabilityAnswer, { kind: 'known' }>['source'] };
    }
    if (v.kind === 'query-failed' && typeof v.reason === 'string' && (v.source === 'conneg' || v.source === 'srv')) {
      return { kind: 'query-failed', reason: v.reason, source: v.source, ...(isReply(v.reply) && { reply: v.reply }) };
    }
  } catch {
    // fall through: a miss
  }
  return undefined;
}

export class CapabilityCache {
  private readonly capsPrefix: string;
  private readonly ehloPrefix: string;
  readonly answerTtl: number;
  readonly failureTtl: number;
  readonly ehloTtl: number;

  constructor(
    private readonly redis: CacheRedis,
    private readonly opts: CapabilityCacheOptions,
  ) {
    this.capsPrefix = `${opts.prefix}:caps:`;
    this.ehloPrefix = `${opts.prefix}:ehlo:`;
    this.answerTtl = opts.answerTtl ?? DEFAULT_ANSWER_TTL;
    this.failureTtl = opts.failureTtl ?? DEFAULT_FAILURE_TTL;
    this.ehloTtl = opts.ehloTtl ?? DEFAULT_EHLO_TTL;
  }

  /** The Redis key of a recipient's answer. */
  answerKey(recipient: string): string {
    return this.capsPrefix + recipientKey(recipient);
  }

  /** The Redis key of a hop's EHLO keywords. */
  ehloKey(hopKey: string): string {
    return this.ehloPrefix + hopKey;
  }

  /** The cached answer for a recipient (known or query-failed), or undefined. */
  async get(recipient: string): Promise<CapabilityAnswer | undefined> {
    try {
      return decodeAnswer(await this.redis.get(this.answerKey(recipient)));
    } catch (err) {
      this.opts.onError?.(err, 'get');
      return undefined;
    }
  }

  /** Cached answers for several recipients (misses are absent), in one round trip. */
  async getMany(recipients: readonly string[]): Promise<Map<string, CapabilityAnswer>> {
    const out = new Map<string, CapabilityAnswer>();
    if (recipients.length === 0) return out;
    try {
      const raw = await this.redis.mget(...recipients.map((r) => this.answerKey(r)));
      for (const [i, r] of recipients.entries()) {
        const a = decodeAnswer(raw[i] ?? null);
        if (a) out.set(r, a);
      }
    } catch (err) {
      this.opts.onError?.(err, 'mget');
    }
    return out;
  }

  /**
   * Stores a query's answer: known for `answerTtl`, query-failed for `failureTtl`.
   * `unknown` is not an answer of anyone's and is not stored.
   */
  async set(recipient: string, answer: CapabilityAnswer): Promise<void> {
    if (answer.kind === 'unknown') return;
    const ttl = answer.kind === 'known' ? this.answerTtl : this.failureTtl;
    try {
      await this.redis.set(this.answerKey(recipient), JSON.stringify(answer), 'PX', ttl);
    } catch (err) {
      this.opts.onError?.(err, 'set');
    }
  }

  /** A hop's EHLO keywords (upper-case) and when they were read, or undefined. */
  async hopKeywords(hopKey: string): Promise<CachedKeywords | undefined> {
    try {
      const raw = await this.redis.get(this.ehloKey(hopKey));
      if (raw === null) return undefined;
      const v = JSON.parse(raw) as StoredEhlo;
      if (!Array.isArray(v.keywords) || typeof v.at !== 'number') return undefined;
      return { keywords: new Set(v.keywords.map(String)), at: v.at };
    } catch (err) {
      this.opts.onError?.(err, 'get');
      return undefined;
    }
  }

  /** Stores a hop's EHLO keywords, read at `at` (default now), for `ehloTtl`. */
  async setHopKeywords(hopKey: string, keywords: Iterable<string>, at = Date.now()): Promise<void> {
    const value: StoredEhlo = { keywords: [...new Set([...keywords].map((k) => k.toUpperCase()))], at };
    try {
      await this.redis.set(this.ehloKey(hopKey), JSON.stringify(value), 'PX', this.ehloTtl);
    } catch (err) {
      this.opts.onError?.(err, 'set');
    }
  }
}
