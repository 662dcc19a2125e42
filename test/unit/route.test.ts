import { describe, expect, it } from 'vitest';
import { groupByHop } from '../../src/relay/group.ts';
import { mxHop, routeFor, routeHop } from '../../src/relay/route.ts';
import { isFinalHop } from '../../src/model/delivery.ts';
import { parseConfig } from '../../src/config/load.ts';

const smarthost = { host: '10.0.0.1', port: 2526 };
const routes = { 'example.org': { transport: 'smtp', host: 'org-hop', port: 25 }, '.sub.example.com': { transport: 'smtp', host: 'sub-hop', port: 2525 } } as const;

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

describe('final-hop routes (maildir:, lmtp:)', () => {
  const config = parseConfig({
    smarthost: '10.0.0.1:2526',
    routes: { 'example.org': '10.0.0.5:25', 'lab.test': 'maildir:/srv/lab/mail', '.lab.test': 'maildir:/srv/lab/mail', 'lmtp.test': 'lmtp:127.0.0.1:24', 'v6.test': 'lmtp:[::1]:2424' },
  });
  const hopOf = (address: string) => {
    const r = routeFor(address, config);
    if (r.kind !== 'hop') throw new Error(`no hop for ${address}`);
    return r.hop;
  };

  it('an SMTP route keeps its key and is not final', () => {
    expect(hopOf('a@example.org')).toEqual({ key: 'route:10.0.0.5:25', hosts: [{ host: '10.0.0.5', port: 25 }] });
    expect(isFinalHop(hopOf('a@example.org'))).toBe(false);
  });

  it('a maildir route is a Maildir hop with no hosts, final; subdomains through `.lab.test`', () => {
    expect(hopOf('a@LAB.test')).toEqual({ key: 'route:maildir:/srv/lab/mail', transport: 'maildir', dir: '/srv/lab/mail', hosts: [] });
    expect(hopOf('a@x.lab.test').key).toBe('route:maildir:/srv/lab/mail');
    expect(isFinalHop(hopOf('a@lab.test'))).toBe(true);
  });

  it('an lmtp route is an LMTP hop with its own key (never pooled with SMTP to the same address), final', () => {
    expect(hopOf('a@lmtp.test')).toEqual({ key: 'route:lmtp:127.0.0.1:24', transport: 'lmtp', hosts: [{ host: '127.0.0.1', port: 24 }] });
    expect(hopOf('a@v6.test').hosts).toEqual([{ host: '::1', port: 2424 }]);
    expect(isFinalHop(hopOf('a@lmtp.test'))).toBe(true);
  });

  it('the smarthost and MX hops are never final', () => {
    expect(isFinalHop(hopOf('a@elsewhere.test'))).toBe(false);
    expect(isFinalHop(mxHop('d.test', []))).toBe(false);
  });

  it('a hand-written route without a transport is SMTP', () => expect(routeHop({ host: 'h', port: 26 })).toEqual({ key: 'route:h:26', hosts: [{ host: 'h', port: 26 }] }));
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
