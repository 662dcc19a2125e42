/**
 * `drucof-relay converters`: lists every converter the config loads (built-ins
 * and plug-ins, through the same validator as at start-up), one per line: name,
 * from → to, declared loss, origin and source file or package.
 */
import type { Writable } from 'node:stream';
import { relative } from 'node:path';
import type { RelayConfig } from '../config/schema.ts';
import { loadConverters, type RegisteredConverter } from '../conversion/index.ts';

export function formatConverters(list: readonly RegisteredConverter[], cwd = process.cwd()): string {
  const rows = list.map((r) => [r.converter.name, `${r.converter.from} -> ${r.converter.to}`, String(r.converter.loss), r.origin, r.source.startsWith('/') ? relative(cwd, r.source) : r.source]);
  const header = ['name', 'conversion', 'loss', 'origin', 'source'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line), `${list.length} converters`, ''].join('\n');
}

/** Loads the configured converters and prints them; a bad plug-in throws ConverterLoadError (a ConfigError). */
export async function listConverters(config: RelayConfig, out: Writable): Promise<void> {
  const list = await loadConverters(config);
  await new Promise<void>((resolve, reject) => out.write(formatConverters(list), (e) => (e ? reject(e) : resolve())));
}
