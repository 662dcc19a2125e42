/**
 * The converter registry: one loader for everyone (layout.md §4). Built-ins are
 * the top-level files of `converters/`, loaded exactly like a user directory;
 * `converters.dirs` adds directories, `converters.packages` npm packages. Every
 * module's default export (`defineConverters(...)`, i.e. `{ converters: [...] }`)
 * is checked by one zod schema — unique name, lower-case media types, finite
 * loss ≥ 0, functions where functions belong — and a bad plug-in stops start-up
 * with `converters: <file>: <what is wrong>`.
 */
import { readdir } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { ConfigError } from '../config/load.ts';
import type { RelayConfig } from '../config/schema.ts';
import type { Converter } from './api.ts';
import type { PlannerConverter } from './planner.ts';

export interface RegisteredConverter extends PlannerConverter {
  /** The file or package it came from. */
  readonly source: string;
}

/** A plug-in that failed validation: the message names the file and the problem. */
export class ConverterLoadError extends ConfigError {}

export const BUILTIN_DIR = fileURLToPath(new URL('../../converters/', import.meta.url));

const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/;
const fn = (what: string) => z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', `${what} must be a function`);

export const converterSchema = z.object({
  name: z
    .string({ error: 'name must be a string' })
    .min(1, 'name must not be empty')
    .max(100, 'name is longer than 100 characters')
    .regex(/^[\x21-\x7e]+$/, 'name must be printable ASCII without spaces'),
  from: z.string({ error: 'from must be a media type' }).regex(MEDIA_TYPE, 'from must be a lower-case media type like "image/png"'),
  to: z.string({ error: 'to must be a media type' }).regex(MEDIA_TYPE, 'to must be a lower-case media type like "image/png"'),
  loss: z.number({ error: 'loss must be a number' }).finite('loss must be finite').nonnegative('loss must be 0 or more'),
  description: z.string().optional(),
  reach: fn('reach').optional(),
  convert: fn('convert'),
});

const MODULE_SHAPE = 'the default export must be defineConverters(...): an object with a "converters" array';
const moduleSchema = z.object({ converters: z.array(z.unknown(), { error: MODULE_SHAPE }) }, { error: MODULE_SHAPE });

function describeIssues(error: z.ZodError, prefix: string): string {
  return error.issues.map((i) => `${prefix}${i.path.length > 0 ? `${i.path.map(String).join('.')}: ` : ''}${i.message}`).join('; ');
}

/** Validates one module's default export; throws ConverterLoadError naming `source`. */
export function validateModule(exported: unknown, source: string, origin: 'builtin' | 'user'): RegisteredConverter[] {
  const mod = moduleSchema.safeParse(exported);
  if (!mod.success) throw new ConverterLoadError(`converters: ${source}: ${exported === undefined ? 'no default export (expected defineConverters(...))' : describeIssues(mod.error, '')}`);
  return mod.data.converters.map((c, i) => {
    const parsed = converterSchema.safeParse(c);
    const label = c && typeof c === 'object' && typeof (c as { name?: unknown }).name === 'string' ? `"${(c as { name: string }).name}"` : `#${i + 1}`;
    if (!parsed.success) throw new ConverterLoadError(`converters: ${source}: converter ${label}: ${describeIssues(parsed.error, '')}`);
    return { converter: c as Converter, origin, source };
  });
}

const CODE_FILE = /\.(?:ts|mts|js|mjs)$/;
const NOT_CODE = /\.d\.(?:ts|mts)$|\.test\.[mc]?[jt]s$/;

async function importModule(specifier: string, source: string): Promise<unknown> {
  try {
    const mod = (await import(specifier)) as { default?: unknown };
    return mod.default;
  } catch (err) {
    throw new ConverterLoadError(`converters: ${source}: cannot load (${(err as Error).message.split('\n')[0]})`);
  }
}

/** Loads every top-level code file of a directory (sub-folders are helpers or examples). */
export async function loadDir(dir: string, origin: 'builtin' | 'user'): Promise<RegisteredConverter[]> {
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile() && CODE_FILE.test(e.name) && !NOT_CODE.test(e.name)).map((e) => e.name);
  } catch (err) {
    throw new ConverterLoadError(`converters: ${dir}: cannot read directory (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  const out: RegisteredConverter[] = [];
  for (const name of names.sort()) {
    const file = join(dir, name);
    out.push(...validateModule(await importModule(pathToFileURL(file).href, file), file, origin));
  }
  return out;
}

export async function loadPackage(name: string): Promise<RegisteredConverter[]> {
  return validateModule(await importModule(name, `package "${name}"`), `package "${name}"`, 'user');
}

/** Rejects duplicate names, naming both sources. */
export function checkUnique(all: readonly RegisteredConverter[]): void {
  const seen = new Map<string, string>();
  for (const r of all) {
    const other = seen.get(r.converter.name);
    if (other !== undefined) throw new ConverterLoadError(`converters: ${r.source}: converter "${r.converter.name}" is already defined by ${other}`);
    seen.set(r.converter.name, r.source);
  }
}

/** Everything the config names, validated, in a stable order (built-ins first, then by name). */
export async function loadConverters(config: Pick<RelayConfig, 'converters'>, opts: { readonly cwd?: string; readonly builtinDir?: string } = {}): Promise<RegisteredConverter[]> {
  const cwd = opts.cwd ?? process.cwd();
  const all: RegisteredConverter[] = [];
  if (config.converters.builtin) all.push(...(await loadDir(opts.builtinDir ?? BUILTIN_DIR, 'builtin')));
  for (const dir of config.converters.dirs) all.push(...(await loadDir(isAbsolute(dir) ? dir : resolve(cwd, dir), 'user')));
  for (const pkg of config.converters.packages) all.push(...(await loadPackage(pkg)));
  checkUnique(all);
  return all.sort((a, b) => (a.origin === b.origin ? (a.converter.name < b.converter.name ? -1 : a.converter.name > b.converter.name ? 1 : 0) : a.origin === 'builtin' ? -1 : 1));
}
