import { describe, expect, it } from 'vitest';
import { groupByHop } from '../../src/relay/group.ts';
import { mxHop, routeFor } from '../../src/relay/route.ts';

const smarthost = { host: '10.0.0.1', port: 2526 };
const routes = { 'example.org': { host: 'org-hop', port: 25 }, '.sub.example.com': { host: 'sub-hop', port: 2525 } };

describe('routeFor', () => {
  it.each([
    ['a@example.org', { routes, smarthost, mx: false }, 'route:org-hop:25'],
    ['a@EXAMPLE.ORG', { routes, smarthost, mx: false }, 'route:org-hop:25'],
    ['a@x.sub.example.com', { routes, smarthost, mx: false }, 'route:sub-hop:2525'],
    ['a@sub.example.com', { routes, smarthost, mx: false }, 'smarthost:10.0.0.1:2526'],
    ['a@other.net', { routes, smarthost, mx: true }, 'smarthost:10.0.0.1:2526'],
  ])('%s goes to %s', (addr, config, key) => {
    const r = routeFor(addr, config);
    expect(r.kind === 'hop' && r.hop.key).toBe(key);
  });

  it('uses MX when configured and nothing else matches', () => expect(routeFor('a@other.net', { routes: {}, mx: true })).toEqual({ kind: 'mx', domain: 'other.net' }));
  it('has no route when nothing is configured', () => expect(routeFor('a@other.net', { routes: {}, mx: false })).toEqual({ kind: 'none' }));
});

describe('mxHop', () => {
  it('orders MX hosts by preference', () =>
    expect(mxHop('d.test', [{ exchange: 'b', priority: 20 }, { exchange: 'a', priority: 10 }]).hosts.map((h) => h.host)).toEqual(['a', 'b']));
  it('falls back to the domain itself (implicit MX)', () => expect(mxHop('d.test', []).hosts).toEqual([{ host: 'd.test', port: 25 }]));
});

describe('groupByHop', () => {
  const h1 = { key: 'a', hosts: [] };
  const h2 = { key: 'b', hosts: [] };
  it('groups by hop and splits at the transaction limit', () => {
    const groups = groupByHop(
      [0, 1, 2, 3, 4].map((index) => ({ index, hop: index === 2 ? h2 : h1 })),
      2,
    );
    expect(groups.map((g) => [g.hop.key, g.indices])).toEqual([
      ['a', [0, 1]],
      ['a', [3, 4]],
      ['b', [2]],
    ]);
  });
});
