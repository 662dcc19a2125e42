/**
 * Redis connections. Two kinds, because they fail differently on purpose:
 * the listener's must fail fast (a client waiting on DATA gets 451 at once,
 * nothing half-stored), the worker's must wait out an outage (BullMQ's blocking
 * commands need maxRetriesPerRequest: null).
 */
import { Redis } from 'ioredis';

export function connectForListener(url: string): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    connectTimeout: 2000,
    commandTimeout: 5000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    lazyConnect: false,
  });
}

export function connectForWorker(url: string): Redis {
  return new Redis(url, {
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
}
