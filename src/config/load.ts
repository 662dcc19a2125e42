/**
 * Loads the YAML config, applies the public environment variables (protocols.md
 * A10: RELAY_LISTEN, RELAY_SMARTHOST, REDIS_URL, RELAY_QUEUE_PREFIX) on top, and
 * validates the result. Errors name the file and the key path.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { configSchema, type RelayConfig } from './schema.ts';

export const DEFAULT_CONFIG = fileURLToPath(new URL('../../config/relay.yaml', import.meta.url));

export class ConfigError extends Error {}

/** Config keys the public environment variables set, to name them in errors. */
const ENV_KEYS: readonly [string, string][] = [
  ['listen', 'RELAY_LISTEN'],
  ['smarthost', 'RELAY_SMARTHOST'],
  ['redis.url', 'REDIS_URL'],
  ['redis.prefix', 'RELAY_QUEUE_PREFIX'],
];

/** Environment variables that override config keys. */
function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = { ...raw };
  if (env.RELAY_LISTEN) out.listen = env.RELAY_LISTEN;
  if (env.RELAY_SMARTHOST) out.smarthost = env.RELAY_SMARTHOST;
  if (env.REDIS_URL || env.RELAY_QUEUE_PREFIX) {
    const redis = { ...((raw.redis as Record<string, unknown> | undefined) ?? {}) };
    if (env.REDIS_URL) redis.url = env.REDIS_URL;
    if (env.RELAY_QUEUE_PREFIX) redis.prefix = env.RELAY_QUEUE_PREFIX;
    out.redis = redis;
  }
  return out;
}

/** Validates an already-parsed config object (used by tests and `loadConfig`). */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = {}, source = 'config'): RelayConfig {
  if (raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new ConfigError(`${source}: the top level must be a mapping of keys`);
  }
  const result = configSchema.safeParse(applyEnv((raw ?? {}) as Record<string, unknown>, env));
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const unknown = issue.code === 'unrecognized_keys' ? issue.keys : [];
    const base = issue.path.map(String).join('.');
    const fromEnv = ENV_KEYS.find(([key]) => base === key || base.startsWith(`${key}.`))?.[1];
    const origin = fromEnv && env[fromEnv] ? ` (from ${fromEnv})` : '';
    if (unknown.length > 0) return unknown.map((k) => `${[base, k].filter(Boolean).join('.')}: unknown key`).join('\n');
    return `${base || '(top level)'}${origin}: ${issue.message}`;
  });
  throw new ConfigError(lines.map((l) => `${source}: ${l}`).join('\n'));
}

export function loadConfig(file: string = DEFAULT_CONFIG, env: NodeJS.ProcessEnv = process.env): RelayConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseConfig(raw, env, file);
}
