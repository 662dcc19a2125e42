/** access.ts: who may relay — allowNetworks (IPv4, IPv6, IPv4-mapped) or AUTH; never an open relay. */
import { describe, expect, it } from 'vitest';
import { checkConnect, checkRecipient, compilePolicy, inNetworks, mayRelay, parseAddress, parseNetworks } from '../../src/inbound/access.ts';

const defaults = ['127.0.0.0/8', '::1/128'];

describe('inNetworks', () => {
  it.each([
    // address, networks, inside?
    ['127.0.0.1', defaults, true],
    ['127.255.0.9', defaults, true],
    ['::1', defaults, true],
    ['::ffff:127.0.0.1', defaults, true], // dual-stack listener reports IPv4 peers mapped
    ['::FFFF:7f00:1', defaults, true],
    ['10.9.9.7', defaults, false],
    ['10.9.9.7', ['10.9.9.0/24'], true],
    ['10.9.10.7', ['10.9.9.0/24'], false],
    ['127.0.0.1', ['10.9.9.0/24'], false],
    ['::2', defaults, false],
    ['2001:db8::5', ['2001:db8::/32'], true],
    ['2001:db9::5', ['2001:db8::/32'], false],
    ['192.0.2.1', ['192.0.2.1'], true], // a bare address is a host network
    ['192.0.2.2', ['192.0.2.1'], false],
    ['10.1.2.3', ['::ffff:10.0.0.0/104'], true], // an IPv4 network written as mapped IPv6
    ['::ffff:10.1.2.3', ['::ffff:10.0.0.0/104'], true],
    ['11.1.2.3', ['::ffff:10.0.0.0/104'], false],
    ['0.0.0.0', ['0.0.0.0/0'], true],
    ['::1', ['0.0.0.0/0'], false], // an IPv4 network never matches an IPv6 client
    ['127.0.0.1', [], false],
    ['not-an-ip', defaults, false],
    ['', defaults, false],
  ] as const)('%s in %j → %s', (address, networks, inside) => {
    expect(inNetworks(address, parseNetworks(networks))).toBe(inside);
  });
});

describe('parseAddress', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['[192.0.2.1]', '192.0.2.1'],
    ['IPv6:2001:db8::1', '2001:db8::1'],
    ['x', undefined],
  ])('%s → %s', (text, expected) => {
    expect(parseAddress(text)?.toString()).toBe(expected);
  });
});

describe('mayRelay / checkConnect / checkRecipient', () => {
  const inside = '10.9.9.5';
  const outside = '127.0.0.1';
  const nets = ['10.9.9.0/24'];
  it.each([
    // authConfigured, address, user, connect reply, rcpt reply
    [false, inside, undefined, undefined, undefined],
    [false, outside, undefined, '554 5.7.1', '550 5.7.1'],
    [true, inside, undefined, undefined, undefined],
    [true, outside, undefined, undefined, '550 5.7.1'],
    [true, outside, 'alice', undefined, undefined],
    [true, outside, '', undefined, '550 5.7.1'], // an empty user is no user
    [true, 'garbage', undefined, undefined, '550 5.7.1'],
    [false, 'garbage', undefined, '554 5.7.1', '550 5.7.1'],
  ] as const)('auth=%s client=%s user=%s → connect %s, rcpt %s', (auth, address, user, atConnect, atRcpt) => {
    const policy = compilePolicy(nets, auth);
    const client = { address, ...(user !== undefined && { user }) };
    const c = checkConnect(policy, client);
    const r = checkRecipient(policy, client);
    expect(c && `${c.code} ${c.enhanced}`).toBe(atConnect);
    expect(r && `${r.code} ${r.enhanced}`).toBe(atRcpt);
    expect(mayRelay(policy, client)).toBe(atRcpt === undefined);
  });

  it('is never an open relay: with no networks and no AUTH everyone is refused', () => {
    const policy = compilePolicy([], false);
    for (const address of ['127.0.0.1', '::1', '10.0.0.1', '8.8.8.8']) {
      expect(checkConnect(policy, { address })?.code).toBe(554);
      expect(checkRecipient(policy, { address })?.code).toBe(550);
    }
  });
});
