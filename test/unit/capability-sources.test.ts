/** The order of capability sources (issue 6 §2), over ports: no sockets, no DNS. */
import { describe, expect, it } from 'vitest';
import type { CapabilityAnswer } from '../../src/model/capability.ts';
import { resolveCapabilities, type CapabilitySources } from '../../src/capabilities/resolve.ts';
import { capabilityServers, srvName } from '../../src/capabilities/srv.ts';

const known = (source: 'config' | 'conneg' | 'srv', expression = '(type="text/plain")'): CapabilityAnswer => ({ kind: 'known', expression, source });
const failed: CapabilityAnswer = { kind: 'query-failed', reason: 'timeout', source: 'conneg' };

function sources(over: Partial<CapabilitySources> = {}) {
  const calls: string[] = [];
  const remembered: [string, CapabilityAnswer][] = [];
  const s: CapabilitySources = {
    registry: () => (calls.push('registry'), { kind: 'unknown' }),
    cached: async () => (calls.push('cache'), undefined),
    remember: async (r, a) => void remembered.push([r, a]),
    srvTargets: async () => (calls.push('srv'), []),
    probe: async () => (calls.push('probe'), known('srv')),
    ...over,
  };
  return { s, calls, remembered };
}

describe('resolveCapabilities', () => {
  it('takes the registry first and asks nobody', async () => {
    const { s, calls } = sources({ registry: () => known('config'), askHop: async () => known('conneg') });
    expect(await resolveCapabilities('a@x.test', s)).toEqual(known('config'));
    expect(calls).toEqual([]);
  });

  it('uses a cached answer before asking again', async () => {
    const { s, calls } = sources({ cached: async () => known('conneg'), askHop: async () => failed });
    expect(await resolveCapabilities('a@x.test', s)).toEqual({ ...known('conneg'), source: 'cache' });
    expect(calls).not.toContain('srv');
  });

  it('asks a CONNEG hop, remembers the answer, and skips SRV when it knows', async () => {
    const { s, calls, remembered } = sources({ askHop: async () => known('conneg') });
    expect(await resolveCapabilities('a@x.test', s)).toEqual(known('conneg'));
    expect(remembered).toEqual([['a@x.test', known('conneg')]]);
    expect(calls).not.toContain('srv');
  });

  it('falls back to the domain’s capability servers when the hop’s query failed', async () => {
    const { s } = sources({ askHop: async () => failed, srvTargets: async () => [{ host: 'caps.x.test', port: 25 }] });
    expect(await resolveCapabilities('a@x.test', s)).toEqual(known('srv'));
  });

  it('keeps the hop’s failure when SRV finds nothing better', async () => {
    const { s, remembered } = sources({ askHop: async () => failed, srvTargets: async () => [{ host: 'c', port: 25 }], probe: async () => ({ kind: 'query-failed', reason: 'no caps', source: 'srv' }) });
    expect(await resolveCapabilities('a@x.test', s)).toEqual(failed);
    expect(remembered).toEqual([['a@x.test', failed]]);
  });

  it('is unknown when no source knows and none was asked', async () => {
    const { s, remembered } = sources();
    expect(await resolveCapabilities('a@x.test', s)).toEqual({ kind: 'unknown' });
    expect(remembered).toEqual([]);
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
