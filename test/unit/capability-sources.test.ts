/** The order of capability sources (issue 6 §2), over ports: no sockets, no DNS. */
import { describe, expect, it } from 'vitest';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import { resolveCapabilities, type CapabilitySources } from '../../src/capabilities/resolve.ts';
import { capabilityServers, srvName } from '../../src/capabilities/srv.ts';

const known = (source: 'config' | 'conneg' | 'srv', expression = '(type="text/plain")'): CapabilityAnswer => ({ kind: 'known', expression, source });
const failed: CapabilityAnswer = { kind: 'query-failed', reason: 'timeout', source: 'conneg' };

function sources(over: Partial<CapabilitySources> = {}) {
  const calls: string[] = [];
  const s: CapabilitySources = {
    registry: () => ({ kind: 'unknown' }),
    cached: async (rs) => (calls.push(`cache ${rs.join(',')}`), new Map()),
    srvTargets: async (d) => (calls.push(`srv ${d}`), []),
    probe: async (d, _t, rs) => (calls.push(`probe ${d} ${rs.join(',')}`), new Map(rs.map((r) => [r, known('srv')]))),
    ...over,
  };
  return { s, calls };
}

const all = (rs: readonly string[], a: CapabilityAnswer) => new Map(rs.map((r) => [r, a] as const));

describe('resolveCapabilities', () => {
  it('takes the registry first and asks nobody', async () => {
    const { s, calls } = sources({ registry: () => known('config'), askHop: async (rs) => all(rs, known('conneg')) });
    expect(await resolveCapabilities(['a@x.test'], s)).toEqual(new Map([['a@x.test', known('config')]]));
    expect(calls).toEqual([]);
  });

  it('uses a cached answer before asking again, and marks it as cached', async () => {
    const { s, calls } = sources({ cached: async () => new Map([['a@x.test', known('conneg')]]), askHop: async (rs) => all(rs, failed) });
    expect(await resolveCapabilities(['a@x.test'], s)).toEqual(new Map([['a@x.test', { ...known('conneg'), source: 'cache' }]]));
    expect(calls).toEqual([]);
  });

  it('keeps a cached failure for its TTL: the hop is not asked again', async () => {
    let asked = 0;
    const { s } = sources({ cached: async () => new Map([['a@x.test', failed]]), askHop: async (rs) => (asked++, all(rs, known('conneg'))) });
    expect((await resolveCapabilities(['a@x.test'], s)).get('a@x.test')).toEqual(failed);
    expect(asked).toBe(0);
  });

  it('asks a CONNEG hop once for every recipient not otherwise known, and skips SRV when it knows', async () => {
    const batches: string[][] = [];
    const { s, calls } = sources({
      registry: (r) => (r === 'own@x.test' ? known('config') : { kind: 'unknown' }),
      askHop: async (rs) => (batches.push([...rs]), all(rs, known('conneg'))),
    });
    const got = await resolveCapabilities(['own@x.test', 'a@x.test', 'b@y.test', 'a@x.test'], s);
    expect(batches).toEqual([['a@x.test', 'b@y.test']]);
    expect([...got.values()].map((a) => a.kind === 'known' && a.source)).toEqual(['config', 'conneg', 'conneg']);
    expect(calls.filter((c) => c.startsWith('srv'))).toEqual([]);
  });

  it('falls back to the domain’s capability servers when the hop’s query failed, one lookup per domain', async () => {
    const { s, calls } = sources({ askHop: async (rs) => all(rs, failed), srvTargets: async (d) => (calls.push(`srv ${d}`), [{ host: 'caps.x.test', port: 25 }]) });
    const got = await resolveCapabilities(['a@x.test', 'b@X.test'], s);
    expect([...got.values()]).toEqual([known('srv'), known('srv')]);
    expect(calls.filter((c) => !c.startsWith('cache'))).toEqual(['srv x.test', 'probe x.test a@x.test,b@X.test']);
  });

  it('keeps the hop’s failure when SRV finds nothing better', async () => {
    const { s } = sources({
      askHop: async (rs) => all(rs, failed),
      srvTargets: async () => [{ host: 'c', port: 25 }],
      probe: async (_d, _t, rs) => all(rs, { kind: 'query-failed', reason: 'no caps', source: 'srv' }),
    });
    expect((await resolveCapabilities(['a@x.test'], s)).get('a@x.test')).toEqual(failed);
  });

  it('a failing SRV lookup is a failed query with a transient reply (the decision waits for a retry)', async () => {
    const err = Object.assign(new Error('timeout'), { code: 'ETIMEOUT' });
    const { s } = sources({ srvTargets: async () => Promise.reject(err) });
    const a = (await resolveCapabilities(['a@x.test'], s)).get('a@x.test');
    expect(a).toMatchObject({ kind: 'query-failed', source: 'srv', reply: { code: 451, enhanced: '4.4.3' } });
  });

  it('is unknown when no source knows and none was asked (SRV switched off)', async () => {
    const { s } = sources({ srvTargets: undefined });
    expect(await resolveCapabilities(['a@x.test'], s)).toEqual(new Map([['a@x.test', { kind: 'unknown' }]]));
  });
});

describe('capabilityServers', () => {
  it('looks up _conneg._tcp.<domain> and orders by priority then weight', async () => {
    let asked = '';
    const targets = await capabilityServers('Example.ORG', async (n) => {
      asked = n;
      return [
        { name: 'b.example.org', port: 2525, priority: 20, weight: 0 },
        { name: 'a.example.org', port: 25, priority: 10, weight: 5 },
        { name: 'c.example.org', port: 25, priority: 10, weight: 50 },
      ];
    });
    expect(asked).toBe(srvName('example.org'));
    expect(targets.map((t) => t.host)).toEqual(['c.example.org', 'a.example.org', 'b.example.org']);
  });

  it('is empty when the domain has no such record', async () => {
    const err = Object.assign(new Error('none'), { code: 'ENOTFOUND' });
    expect(await capabilityServers('x.test', async () => Promise.reject(err))).toEqual([]);
  });
});
