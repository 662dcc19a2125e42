/**
 * A DNS server on 127.0.0.1 for tests (UDP only, answers from a table), so the
 * relay can be pointed at it with `dns.servers` and no test needs the network:
 *
 *   const dns = await startDnsServer({
 *     'example.net': { MX: [{ exchange: 'mx.example.net', priority: 10 }], A: ['127.0.0.1'] },
 *     '_conneg._tcp.example.net': { SRV: [{ target: 'caps.example.net', port: 2526, priority: 0, weight: 0 }] },
 *     'broken.test': 'SERVFAIL',
 *     'slow.test': 'TIMEOUT',
 *   });
 *   config.dns.servers = [`${dns.host}:${dns.port}`];
 *
 * A name not in the table gets NXDOMAIN (node: ENOTFOUND); a name in it without
 * records of the asked type gets NOERROR with no answers (node: ENODATA);
 * 'SERVFAIL' answers SERVFAIL (node: ESERVFAIL) to every query for the name;
 * 'TIMEOUT' never answers (node: ETIMEOUT). Names match case-insensitively,
 * without a trailing dot. Every query is recorded in `queries` as `TYPE name`.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import * as dnsPacket from 'dns-packet';

export interface MxEntry {
  readonly exchange: string;
  readonly priority: number;
}

export interface SrvEntry {
  /** Host name of the server; '.' means "no such service here" (RFC 2782). */
  readonly target: string;
  readonly port: number;
  readonly priority?: number;
  readonly weight?: number;
}

export interface DnsEntry {
  readonly MX?: readonly MxEntry[];
  readonly SRV?: readonly SrvEntry[];
  readonly A?: readonly string[];
  readonly AAAA?: readonly string[];
  readonly TXT?: readonly string[];
}

export type DnsRecords = Readonly<Record<string, DnsEntry | 'SERVFAIL' | 'TIMEOUT'>>;

export interface DnsServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Every query received, in order, as `TYPE name` (e.g. `SRV _conneg._tcp.example.net`); clear with `queries.length = 0`. */
  readonly queries: string[];
  /** Replaces the whole table (queries already answered are not affected). */
  set(records: DnsRecords): void;
  close(): Promise<void>;
}

const TTL = 60;
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4 } as const;

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function answersFor(name: string, type: string, entry: DnsEntry): dnsPacket.Answer[] {
  switch (type) {
    case 'MX':
      return (entry.MX ?? []).map((r) => ({ type: 'MX', name, ttl: TTL, data: { exchange: r.exchange, preference: r.priority } }));
    case 'SRV':
      return (entry.SRV ?? []).map((r) => ({
        type: 'SRV',
        name,
        ttl: TTL,
        data: { target: r.target, port: r.port, priority: r.priority ?? 0, weight: r.weight ?? 0 },
      }));
    case 'A':
      return (entry.A ?? []).map((ip) => ({ type: 'A', name, ttl: TTL, data: ip }));
    case 'AAAA':
      return (entry.AAAA ?? []).map((ip) => ({ type: 'AAAA', name, ttl: TTL, data: ip }));
    case 'TXT':
      return (entry.TXT ?? []).map((text) => ({ type: 'TXT', name, ttl: TTL, data: text }));
    default:
      return [];
  }
}

export async function startDnsServer(records: DnsRecords = {}): Promise<DnsServer> {
  let table = new Map<string, DnsRecords[string]>();
  const set = (next: DnsRecords) => {
    table = new Map(Object.entries(next).map(([name, entry]) => [normalize(name), entry]));
  };
  set(records);
  const queries: string[] = [];
  const socket = createSocket('udp4');

  socket.on('message', (msg: Buffer, from: RemoteInfo) => {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return; // not DNS: a real server would drop it too
    }
    if (query.type !== 'query') return;
    const question = query.questions?.[0];
    const reply = (rcode: number, answers: dnsPacket.Answer[] = []) => {
      const flags = dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_AVAILABLE | (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) | rcode;
      const packet = dnsPacket.encode({ type: 'response', id: query.id, flags, questions: query.questions ?? [], answers });
      socket.send(packet, from.port, from.address);
    };
    if (!question) return reply(RCODE.NOTIMP);
    const name = normalize(question.name);
    queries.push(`${question.type} ${name}`);
    const entry = table.get(name);
    if (entry === undefined) return reply(RCODE.NXDOMAIN);
    if (entry === 'TIMEOUT') return;
    if (entry === 'SERVFAIL') return reply(RCODE.SERVFAIL);
    // Answer with the name as asked (a resolver may randomize its case, DNS 0x20).
    return reply(RCODE.NOERROR, answersFor(question.name, question.type, entry));
  });

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  // A late error (e.g. sending to a client that went away) must not crash the test process.
  socket.on('error', () => {});

  return {
    host: '127.0.0.1',
    port: socket.address().port,
    queries,
    set,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
