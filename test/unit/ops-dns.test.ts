import { createSocket, type Socket } from 'node:dgram';
import { getServers } from 'node:dns';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.ts';
import { createDns } from '../../src/ops/dns.ts';

/** A UDP socket on loopback that receives queries and never answers. */
async function silentServer(): Promise<{ socket: Socket; port: number; received: () => number }> {
  const socket = createSocket('udp4');
  let count = 0;
  socket.on('message', () => count++);
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return { socket, port: socket.address().port, received: () => count };
}

/** A loopback UDP port with nothing bound to it (queries get ICMP port unreachable). */
async function closedPort(): Promise<number> {
  const { socket, port } = await silentServer();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

const open: Socket[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

describe('createDns', () => {
  it('asks the system resolvers when no servers are configured', () => {
    const dns = createDns(parseConfig({}).dns);
    expect(dns.servers()).toEqual(getServers());
  });

  it('asks exactly the configured servers, IPv4 and IPv6, ports kept', () => {
    const { dns: config } = parseConfig({ dns: { servers: ['127.0.0.1', '127.0.0.2:5353', '[::1]:5300', '::1'] } });
    expect(config.servers).toEqual(['127.0.0.1:53', '127.0.0.2:5353', '[::1]:5300', '[::1]:53']);
    // node prints port 53 by omitting it
    expect(createDns(config).servers()).toEqual(['127.0.0.1', '127.0.0.2:5353', '[::1]:5300', '::1']);
  });

  it('gives up after two tries of `timeout` each, with code ETIMEOUT', async () => {
    const silent = await silentServer();
    open.push(silent.socket);
    const dns = createDns({ servers: [`127.0.0.1:${silent.port}`], timeout: 200 });
    const started = Date.now();
    const err = await dns.resolveMx('example.net').then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err?.code).toBe('ETIMEOUT');
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(silent.received()).toBe(2);
  });

  it('keeps node error codes: ECONNREFUSED when nothing listens', async () => {
    const dns = createDns({ servers: [`127.0.0.1:${await closedPort()}`], timeout: 500 });
    await expect(dns.resolveMx('example.net')).rejects.toMatchObject({ code: 'ECONNREFUSED', hostname: 'example.net' });
    await expect(dns.resolveSrv('_conneg._tcp.example.net')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('accepts the full dns config, srv flag included', () => {
    expect(() => createDns({ servers: ['127.0.0.1:53'], timeout: 5000, srv: false })).not.toThrow();
  });
});
