import { describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { ConfigError, DEFAULT_CONFIG, loadConfig, parseConfig } from '../../src/config/load.ts';

describe('config', () => {
  it('the documented default file loads and equals the built-in defaults', () => {
    expect(loadConfig(DEFAULT_CONFIG, {})).toEqual(parseConfig({}, {}));
  });

  it('applies the public environment variables', () => {
    const c = parseConfig({}, { RELAY_LISTEN: '0.0.0.0:2600', RELAY_SMARTHOST: 'hop.test:2526', REDIS_URL: 'redis://r:1', RELAY_QUEUE_PREFIX: 'p1' });
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 2600 });
    expect(c.smarthost).toEqual({ host: 'hop.test', port: 2526 });
    expect(c.redis.url).toBe('redis://r:1');
    expect(c.redis.prefix).toBe('p1');
  });

  it.each([
    [{ bogus: 1 }, 'bogus: unknown key'],
    [{ limits: { maxMesageSize: 1 } }, 'limits.maxMesageSize: unknown key'],
    [{ allowNetworks: ['300.1.1.1/8'] }, 'allowNetworks.0: not an IP address or CIDR network'],
    [{ queue: { maxLifetime: 'soon' } }, 'queue.maxLifetime: "soon" is not a duration'],
    [{ smarthost: 'a:b:c' }, 'smarthost: "a:b:c" is not host:port'],
    [{ policies: { 'x@y': { refuseWord: ['a'] } } }, 'policies.x@y.refuseWord: unknown key'],
    [{ dns: { servers: ['resolver.example'] } }, 'dns.servers.0: "resolver.example" is not an IP address with an optional port'],
    [{ dns: { servers: ['127.0.0.1:99999'] } }, 'dns.servers.0: "127.0.0.1:99999" is not an IP address'],
    [{ dns: { servers: ['[127.0.0.1]:53'] } }, 'dns.servers.0: "[127.0.0.1]:53" is not an IP address'],
    [{ dns: { servers: [] } }, 'dns.servers: list at least one server'],
    [{ dns: { timeout: 0 } }, 'dns.timeout: must be between'],
    [{ dns: { timeout: 'soon' } }, 'dns.timeout: "soon" is not a duration'],
    [{ dns: { server: ['127.0.0.1'] } }, 'dns.server: unknown key'],
    [{ routes: { 'lab.test': 'maildir:' } }, 'routes.lab.test: "maildir:" names no directory'],
    [{ routes: { 'lab.test': 'maildir:   ' } }, 'routes.lab.test: "maildir:   " names no directory'],
    [{ routes: { 'lmtp.test': 'lmtp:127.0.0.1' } }, 'routes.lmtp.test: "lmtp:127.0.0.1" is not lmtp:host:port (the port is required'],
    [{ routes: { 'lmtp.test': 'lmtp:' } }, 'routes.lmtp.test: "lmtp:" is not lmtp:host:port'],
    [{ routes: { 'lmtp.test': 'lmtp:h:70000' } }, 'routes.lmtp.test: "lmtp:h:70000" is not lmtp:host:port'],
    [{ routes: { 'example.org': 'a:b:c' } }, 'routes.example.org: "a:b:c" is not host:port, lmtp:host:port or maildir:DIR'],
    [{ routes: { 'example.org': 'smtp:h:25' } }, 'routes.example.org: "smtp:h:25" is not host:port, lmtp:host:port or maildir:DIR'],
    [{ routes: { 'example.org': 25 } }, 'routes.example.org: '],
    [{ smarthost: 'maildir:var/mail' }, 'smarthost: "maildir:var/mail" is not host:port'],
  ])('rejects %o naming the key path', (raw, message) => {
    expect(() => parseConfig(raw)).toThrow(ConfigError);
    expect(() => parseConfig(raw)).toThrow(message);
  });

  it('accepts the keys of later issues (capabilities, policies) in their documented shape', () => {
    const c = parseConfig({
      capabilities: { 'fax@example.net': '(& (type="image/tiff") (color=binary))', '*@example.org': '(type="text/plain")' },
      policies: { 'postmaster@example.net': { acceptAll: true }, '*@example.net': { maxSize: 1048576, refuseTypes: ['application/x-msdownload'] } },
    });
    expect(Object.keys(c.capabilities)).toHaveLength(2);
  });

  it('dns: system resolvers, 5s, SRV on by default; servers normalized to ip:port', () => {
    expect(parseConfig({}).dns).toEqual({ timeout: 5000, srv: true });
    const c = parseConfig({ dns: { servers: ['127.0.0.1:5353', '10.0.0.1', '[::1]:53', 'fe80::1'], timeout: '500ms', srv: false } });
    expect(c.dns).toEqual({ servers: ['127.0.0.1:5353', '10.0.0.1:53', '[::1]:53', '[fe80::1]:53'], timeout: 500, srv: false });
  });

  it('routes: host:port (SMTP, port 25 by default), lmtp:host:port, maildir:DIR resolved against the working directory', () => {
    const c = parseConfig({
      routes: {
        'example.org': '10.0.0.5:25',
        'bare.test': 'mx.bare.test',
        'v6.test': '[2001:db8::1]:2525',
        'lmtp.test': 'lmtp:127.0.0.1:24',
        'LMTP6.test': 'LMTP:[::1]:2424',
        'lab.test': 'maildir:var/lab/mail',
        'abs.test': ' maildir:/srv/mail ',
      },
    });
    expect(c.routes).toEqual({
      'example.org': { transport: 'smtp', host: '10.0.0.5', port: 25 },
      'bare.test': { transport: 'smtp', host: 'mx.bare.test', port: 25 },
      'v6.test': { transport: 'smtp', host: '2001:db8::1', port: 2525 },
      'lmtp.test': { transport: 'lmtp', host: '127.0.0.1', port: 24 },
      'LMTP6.test': { transport: 'lmtp', host: '::1', port: 2424 },
      'lab.test': { transport: 'maildir', dir: resolve('var/lab/mail') },
      'abs.test': { transport: 'maildir', dir: '/srv/mail' },
    });
  });

  it('parses durations and sizes with units', () => {
    const c = parseConfig({ queue: { retrySchedule: ['30s', '2m', 1] }, limits: { maxMessageSize: '10MB' } });
    expect(c.queue.retrySchedule).toEqual([30_000, 120_000, 1000]);
    expect(c.limits.maxMessageSize).toBe(10 * 1024 * 1024);
  });
});
