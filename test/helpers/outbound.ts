/**
 * The outbound tests' common set-up: scripted next hops and pools with short
 * timeouts, all closed after each test.
 */
import { afterEach } from 'vitest';
import { silentLogger } from '../../src/ops/log.ts';
import { OutboundPool, type OutboundOptions } from '../../src/outbound/index.ts';
import { startNextHop, type NextHopPeer, type NextHopScript } from '../peers/next-hop.ts';

export function outboundHarness(defaults: Partial<OutboundOptions> = {}) {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  return {
    async peer(script?: NextHopScript): Promise<NextHopPeer> {
      const p = await startNextHop(script);
      cleanups.push(() => p.close());
      return p;
    },
    pool(over: Partial<OutboundOptions> = {}): OutboundPool {
      const p = new OutboundPool({
        hostname: 'relay.test',
        connectionsPerHop: 2,
        connectTimeout: 3000,
        greetingTimeout: 3000,
        commandTimeout: 3000,
        idleReuse: 5000,
        tlsVerify: false,
        log: silentLogger,
        ...defaults,
        ...over,
      });
      cleanups.push(() => p.close());
      return p;
    },
  };
}
