import { describe, expect, it } from 'vitest';
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

  it('parses durations and sizes with units', () => {
    const c = parseConfig({ queue: { retrySchedule: ['30s', '2m', 1] }, limits: { maxMessageSize: '10MB' } });
    expect(c.queue.retrySchedule).toEqual([30_000, 120_000, 1000]);
    expect(c.limits.maxMessageSize).toBe(10 * 1024 * 1024);
  });
});
