/** capabilities/registry.ts: the config `capabilities` (A10) — exact address first, then `*@domain`. */
import { describe, expect, it } from 'vitest';
import { RecipientTable, capabilityRegistry, normalizeAddress, registryLookup } from '../../src/capabilities/registry.ts';

const caps = {
  'fax@example.net': '(& (type="image/tiff") (color=binary))',
  '*@example.net': '(type="text/plain")',
  '*@example.org': '  (type="text/html")  ',
  '*@bücher.example': '(type="image/png")',
  'Boss@Example.COM': '(type="text/plain")',
  'empty@example.com': '   ',
};

describe('capabilityRegistry', () => {
  const registry = capabilityRegistry(caps);
  it.each([
    ['fax@example.net', '(& (type="image/tiff") (color=binary))'], // exact wins over *@domain
    ['FAX@EXAMPLE.NET', '(& (type="image/tiff") (color=binary))'],
    ['other@example.net', '(type="text/plain")'],
    ['x@example.org', '(type="text/html")'], // trimmed
    ['x@bücher.example', '(type="image/png")'],
    ['x@xn--bcher-kva.example', '(type="image/png")'], // A-label = U-label
    ['boss@example.com', '(type="text/plain")'],
  ])('%s → known %s from config', (rcpt, expression) => {
    expect(registry(rcpt)).toEqual({ kind: 'known', expression, source: 'config' });
  });

  it.each(['x@sub.example.net', 'x@example.com', 'empty@example.com', 'postmaster', 'fax@example.net.evil'])('%s → unknown', (rcpt) => {
    expect(registry(rcpt)).toEqual({ kind: 'unknown' });
  });

  it('is also a CapabilityLookup port', async () => {
    await expect(registryLookup(caps)('fax@example.net')).resolves.toMatchObject({ kind: 'known', source: 'config' });
    await expect(registryLookup({})('fax@example.net')).resolves.toEqual({ kind: 'unknown' });
  });
});

describe('RecipientTable', () => {
  it('exact, then *@domain, no merging; the first spelling of a duplicate key wins', () => {
    const t = new RecipientTable({ 'a@x.test': 1, '*@x.test': 2, 'A@X.TEST': 3 });
    expect(t.get('a@x.test')).toBe(1);
    expect(t.get('b@x.test')).toBe(2);
    expect(t.get('b@y.test')).toBeUndefined();
  });

  it.each([
    ['User@Example.COM', 'user@example.com'],
    ['u@bücher.example', 'u@xn--bcher-kva.example'],
    ['*@Bücher.Example', '*@xn--bcher-kva.example'],
    ['u@[192.0.2.1]', 'u@[192.0.2.1]'],
    ['postmaster', 'postmaster'],
  ])('normalizeAddress(%s) = %s', (input, out) => {
    expect(normalizeAddress(input)).toBe(out);
  });
});
