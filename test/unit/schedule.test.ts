import { describe, expect, it } from 'vitest';
import { isExpired, retryDelay } from '../../src/queue/schedule.ts';

const schedule = [300_000, 600_000, 1_200_000, 2_400_000, 3_600_000];

describe('retryDelay', () => {
  it.each([
    [1, 300_000],
    [2, 600_000],
    [3, 1_200_000],
    [5, 3_600_000],
    [40, 3_600_000],
  ])('after %i failed attempts waits %i ms', (n, ms) => expect(retryDelay(n, schedule)).toBe(ms));

  it.each([
    [120, 120_000],
    [0, 1000],
    [999_999, 3_600_000],
  ])('a hint of %i s moves the attempt to %i ms (bounded)', (hint, ms) => expect(retryDelay(1, schedule, hint)).toBe(ms));
});

describe('isExpired', () => {
  const day = 86_400_000;
  it('is not expired inside the lifetime', () => expect(isExpired('2026-01-01T00:00:00Z', 5 * day, Date.parse('2026-01-05T23:59:59Z'))).toBe(false));
  it('is expired at the lifetime', () => expect(isExpired('2026-01-01T00:00:00Z', 5 * day, Date.parse('2026-01-06T00:00:00Z'))).toBe(true));
});
