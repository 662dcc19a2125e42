/**
 * Plug-ins (issue 5 §6): the documented example loaded from a temporary directory
 * outside the source tree through the same registry and validator as the
 * built-ins, and used by the planner; bad plug-ins stop start-up with an error
 * that names the file and the problem; a user converter wins only by strictly
 * lower loss.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseFeatureSet } from '../../src/capabilities/feature-set/index.ts';
import { parseConfig } from '../../src/config/load.ts';
import { ConverterLoadError, createConversionEngine, loadConverters } from '../../src/conversion/index.ts';
import { silentLogger } from '../../src/ops/log.ts';
import { compose, field, rawLeaves } from '../fixtures/images/mail.ts';

const dirs: string[] = [];
function tempDir(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'drucof-plugins-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const EXAMPLE = new URL('../../converters/examples/text-uppercase.ts', import.meta.url);
const target = (e: string) => {
  const r = parseFeatureSet(e);
  if (!r.ok) throw new Error(r.error);
  return r.features;
};

describe('the example plug-in, from a directory outside the tree', () => {
  it('loads through the registry and is used for a text/enriched part', async () => {
    const dir = tempDir();
    expect(dir.startsWith(process.cwd())).toBe(false);
    copyFileSync(EXAMPLE, join(dir, 'text-uppercase.ts'));
    const config = parseConfig({ converters: { dirs: [dir] } });
    const engine = await createConversionEngine(config, silentLogger);
    const mine = engine.converters.find((c) => c.converter.name === 'example/text-uppercase');
    expect(mine).toMatchObject({ origin: 'user', source: join(dir, 'text-uppercase.ts') });

    const raw = await compose({
      text: 'plain part',
      alternatives: [{ contentType: 'text/enriched; charset=utf-8', content: 'This is <bold>important</bold>, a << b.' }],
    });
    const plan = await engine.plan(raw, target('(type="text/plain")'), { drucof: true });
    expect(plan.parts.map((p) => p.action.kind)).toEqual(['keep', 'convert']);
    expect(plan.parts[1]?.action).toMatchObject({ chain: ['example/text-uppercase'], loss: 20 });
    const result = await engine.convert(raw, plan, { host: 'relay.test' });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const part = (await rawLeaves(result.message)).get('2')!;
    expect(part.body.toString()).toBe('This is IMPORTANT, a < b.');
    expect(field(part.header, 'Content-Type')).toBe('text/plain; charset=utf-8');
    expect(field(result.message.toString(), 'Content-Conversions')).toMatch(/2 text\/enriched -> text\/plain via example\/text-uppercase \(loss 20\)/);
  });

  it('relative directories are resolved from the working directory', async () => {
    const dir = tempDir();
    copyFileSync(EXAMPLE, join(dir, 'text-uppercase.ts'));
    const list = await loadConverters({ converters: { builtin: false, dirs: ['.'], packages: [] } }, { cwd: dir });
    expect(list.map((c) => c.converter.name)).toEqual(['example/text-uppercase']);
  });
});

describe('a user converter wins only by strictly lower loss', () => {
  const plugin = (name: string, loss: number) => `export default { converters: [{ name: '${name}', from: 'text/html', to: 'text/plain', loss: ${loss}, reach: () => ({ features: { type: 'text/plain', charset: 'utf-8' } }), async convert(input) { return { body: Buffer.from('mine'), contentType: 'text/plain', params: { charset: 'utf-8' }, features: { type: 'text/plain', charset: 'utf-8' } }; } }] };\n`;

  it.each([
    [40, 'html-to-text'],
    [39.5, 'aaa/my-html'],
  ])('user loss %d → %s', async (loss, winner) => {
    const dir = tempDir({ 'mine.mjs': plugin('aaa/my-html', loss) });
    const engine = await createConversionEngine(parseConfig({ converters: { dirs: [dir] } }), silentLogger);
    const raw = await compose({ html: '<p>hello</p>' });
    const plan = await engine.plan(raw, target('(type="text/plain")'), { drucof: true });
    expect(plan.parts[0]?.action).toMatchObject({ chain: [winner] });
  });
});

describe('bad plug-ins stop start-up, naming the file and the problem', () => {
  const good = `{ name: 'x/ok', from: 'text/a', to: 'text/b', loss: 1, async convert() { throw new Error('no'); } }`;
  it.each([
    ['no default export', 'export const x = 1;\n', /no default export/],
    ['not a module shape', 'export default [1, 2];\n', /"converters" array/],
    ['missing convert', `export default { converters: [{ name: 'x/a', from: 'text/a', to: 'text/b', loss: 1 }] };\n`, /converter "x\/a": convert: convert must be a function/],
    ['negative loss', `export default { converters: [{ name: 'x/a', from: 'text/a', to: 'text/b', loss: -1, async convert() {} }] };\n`, /loss: loss must be 0 or more/],
    ['infinite loss', `export default { converters: [{ name: 'x/a', from: 'text/a', to: 'text/b', loss: Infinity, async convert() {} }] };\n`, /loss/],
    ['bad media type', `export default { converters: [{ name: 'x/a', from: 'Text/A', to: 'text/b', loss: 1, async convert() {} }] };\n`, /from: from must be a lower-case media type/],
    ['name with spaces', `export default { converters: [{ name: 'my converter', from: 'text/a', to: 'text/b', loss: 1, async convert() {} }] };\n`, /printable ASCII without spaces/],
    ['duplicate within the file', `export default { converters: [${good}, ${good}] };\n`, /"x\/ok" is already defined by/],
    ['duplicate of a built-in', `export default { converters: [{ name: 'html-to-text', from: 'text/a', to: 'text/b', loss: 1, async convert() {} }] };\n`, /"html-to-text" is already defined by .*html-to-text\.ts/],
    ['syntax error', 'export default { converters: [ \n', /cannot load/],
    ['throws at import', "throw new Error('plug-in refuses to load');\n", /cannot load \(plug-in refuses to load\)/],
  ])('%s', async (_name, text, message) => {
    const dir = tempDir({ 'bad.mjs': text });
    const err = await loadConverters({ converters: { builtin: true, dirs: [dir], packages: [] } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConverterLoadError);
    expect((err as Error).message).toMatch(new RegExp(`^converters: ${join(dir, 'bad.mjs').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    expect((err as Error).message).toMatch(message);
  });

  it('a missing directory or package', async () => {
    await expect(loadConverters({ converters: { builtin: false, dirs: ['/nonexistent/drucof-plugins'], packages: [] } })).rejects.toThrow(/^converters: \/nonexistent\/drucof-plugins: cannot read directory \(ENOENT\)/);
    await expect(loadConverters({ converters: { builtin: false, dirs: [], packages: ['drucof-converter-does-not-exist'] } })).rejects.toThrow(/^converters: package "drucof-converter-does-not-exist": cannot load/);
  });

  it('an npm package loads through the same validator', async () => {
    // A package that exists but is not a converter module: named in the error like a file.
    await expect(loadConverters({ converters: { builtin: false, dirs: [], packages: ['yaml'] } })).rejects.toThrow(/^converters: package "yaml": /);
  });
});
