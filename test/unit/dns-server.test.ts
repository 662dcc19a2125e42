import { promises as nodeDns } from 'node:dns';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { capabilityServers } from '../../src/capabilities/srv.ts';
import { createDns, type Dns } from '../../src/ops/dns.ts';
import { startDnsServer, type DnsRecords, type DnsServer } from '../helpers/dns-server.ts';

const RECORDS: DnsRecords = {
  'example.net': {
    MX: [
      { exchange: 'mx2.example.net', priority: 20 },
      { exchange: 'mx1.example.net', priority: 10 },
    ],
    A: ['127.0.0.1'],
  },
  '_conneg._tcp.example.net': {
    SRV: [
      { target: 'caps-b.example.net', port: 2601, priority: 10, weight: 5 },
      { target: 'caps-a.example.net', port: 2600, priority: 0, weight: 0 },
      { target: 'caps-c.example.net', port: 2602, priority: 10, weight: 50 },
    ],
  },
  '_conneg._tcp.none.example': { SRV: [{ target: '.', port: 0 }] },
  'nosrv.example': { MX: [{ exchange: 'mx.nosrv.example', priority: 0 }] },
  'broken.test': 'SERVFAIL',
  '_conneg._tcp.broken.test': 'SERVFAIL',
  'slow.test': 'TIMEOUT',
};

let server: DnsServer;
let dns: Dns;

beforeAll(async () => {
  server = await startDnsServer(RECORDS);
  dns = createDns({ servers: [`127.0.0.1:${server.port}`], timeout: 500, srv: true });
});
afterAll(() => server.close());
beforeEach(() => {
  server.set(RECORDS);
  server.queries.length = 0;
});

describe('loopback DNS server', () => {
  it('listens on 127.0.0.1', () => {
    expect(server.host).toBe('127.0.0.1');
    expect(server.port).toBeGreaterThan(0);
  });

  it('answers MX', async () => {
    expect(await dns.resolveMx('example.net')).toEqual([
      { exchange: 'mx2.example.net', priority: 20 },
      { exchange: 'mx1.example.net', priority: 10 },
    ]);
    expect(server.queries).toEqual(['MX example.net']);
  });

  it('matches names case-insensitively and without the trailing dot', async () => {
    expect(await dns.resolveMx('Example.NET.')).toHaveLength(2);
    expect(server.queries).toEqual(['MX example.net']);
  });

  it('answers SRV', async () => {
    const records = await dns.resolveSrv('_conneg._tcp.example.net');
    expect(records).toHaveLength(3);
    expect(records).toContainEqual({ name: 'caps-a.example.net', port: 2600, priority: 0, weight: 0 });
    expect(server.queries).toEqual(['SRV _conneg._tcp.example.net']);
  });

  it('answers A', async () => {
    const resolver = new nodeDns.Resolver({ timeout: 500, tries: 1 });
    resolver.setServers([`127.0.0.1:${server.port}`]);
    expect(await resolver.resolve4('example.net')).toEqual(['127.0.0.1']);
    expect(server.queries).toEqual(['A example.net']);
  });

  it('NODATA for a known name without that type: ENODATA', async () => {
    await expect(dns.resolveSrv('example.net')).rejects.toMatchObject({ code: 'ENODATA' });
    await expect(dns.resolveMx('_conneg._tcp.example.net')).rejects.toMatchObject({ code: 'ENODATA' });
  });

  it('NXDOMAIN for an unknown name: ENOTFOUND', async () => {
    await expect(dns.resolveMx('nowhere.test')).rejects.toMatchObject({ code: 'ENOTFOUND', hostname: 'nowhere.test' });
    expect(server.queries).toEqual(['MX nowhere.test']);
  });

  it('SERVFAIL: ESERVFAIL', async () => {
    await expect(dns.resolveMx('broken.test')).rejects.toMatchObject({ code: 'ESERVFAIL' });
  });

  it('TIMEOUT never answers: ETIMEOUT after two tries', async () => {
    await expect(dns.resolveMx('slow.test')).rejects.toMatchObject({ code: 'ETIMEOUT' });
    expect(server.queries).toEqual(['MX slow.test', 'MX slow.test']);
  });

  it('set() replaces the table', async () => {
    server.set({ 'example.net': { MX: [{ exchange: 'other.example.net', priority: 5 }] } });
    expect(await dns.resolveMx('example.net')).toEqual([{ exchange: 'other.example.net', priority: 5 }]);
    await expect(dns.resolveMx('nosrv.example')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });
});

describe('capabilityServers over the configured resolver', () => {
  it('returns SRV targets in RFC 2782 order', async () => {
    expect(await capabilityServers('Example.net', dns.resolveSrv)).toEqual([
      { host: 'caps-a.example.net', port: 2600 },
      { host: 'caps-c.example.net', port: 2602 },
      { host: 'caps-b.example.net', port: 2601 },
    ]);
    expect(server.queries).toEqual(['SRV _conneg._tcp.example.net']);
  });

  it('[] when the domain publishes none (NODATA, NXDOMAIN, or target ".")', async () => {
    expect(await capabilityServers('nosrv.example', dns.resolveSrv)).toEqual([]);
    expect(await capabilityServers('nowhere.test', dns.resolveSrv)).toEqual([]);
    expect(await capabilityServers('none.example', dns.resolveSrv)).toEqual([]);
  });

  it('a failing resolver is an error, not "none" (the caller retries later)', async () => {
    await expect(capabilityServers('broken.test', dns.resolveSrv)).rejects.toMatchObject({ code: 'ESERVFAIL' });
  });
});
