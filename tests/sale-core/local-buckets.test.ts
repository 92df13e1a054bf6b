// The in-process token buckets of polls and purchases (rate-limits.ts LocalBuckets), on explicit clocks.
import { describe, expect, it } from 'vitest';
import { LocalBuckets } from '../../sale-core/rate-limits.js';

describe('LocalBuckets', () => {
  it('gives the burst, then refuses with the ms until the next token, and refills with time', () => {
    const buckets = new LocalBuckets();
    const t = 1_000_000;
    for (let i = 0; i < 3; i++) expect(buckets.take('u:a', 10, 3, t)).toBe(0);
    expect(buckets.take('u:a', 10, 3, t)).toBe(100); // 10 per second: one token per 100 ms
    expect(buckets.take('u:a', 10, 3, t + 50)).toBe(50); // a refused take spends nothing
    expect(buckets.take('u:a', 10, 3, t + 100)).toBe(0);
    expect(buckets.take('u:b', 10, 3, t + 100)).toBe(0); // another key, another bucket
  });

  it('never holds more than the burst, however long the key was idle', () => {
    const buckets = new LocalBuckets();
    expect(buckets.take('k', 1, 2, 0)).toBe(0);
    const later = 1_000_000_000;
    expect(buckets.take('k', 1, 2, later)).toBe(0);
    expect(buckets.take('k', 1, 2, later)).toBe(0);
    expect(buckets.take('k', 1, 2, later)).toBeGreaterThan(0);
  });

  it('remembers when a key last asked, refused or not', () => {
    const buckets = new LocalBuckets();
    expect(buckets.lastAsked('k')).toBeUndefined();
    buckets.take('k', 1, 1, 500);
    buckets.take('k', 1, 1, 700); // refused
    expect(buckets.lastAsked('k')).toBe(700);
  });

  it('keeps a bounded number of keys: one not asked for during two generations starts afresh', () => {
    const buckets = new LocalBuckets(4); // generations of 2 keys
    expect(buckets.take('spent', 1, 1, 0)).toBe(0);
    expect(buckets.take('spent', 1, 1, 0)).toBeGreaterThan(0);
    buckets.take('x1', 1, 1, 0); // 'spent' is in the older generation now, still counted
    expect(buckets.take('spent', 1, 1, 0)).toBeGreaterThan(0); // and moves back into the newer one
    for (const k of ['y1', 'y2', 'y3', 'y4']) buckets.take(k, 1, 1, 0);
    expect(buckets.lastAsked('spent')).toBeUndefined(); // forgotten
    expect(buckets.take('spent', 1, 1, 0)).toBe(0);
  });
});
