// The per-process request counts of the light shopper routes (rate-limits.ts RequestWindows) on explicit
// clocks, and the address they count a request against (addressGroup).
import { describe, expect, it } from 'vitest';
import { addressGroup } from '../../sale-core/client-address.js';
import { RequestWindows } from '../../sale-core/rate-limits.js';

describe('RequestWindows', () => {
  it('lets `max` requests through per window, then refuses until the window ends, and starts afresh after', () => {
    const windows = new RequestWindows(3, 60_000);
    const t = 5_000_000;
    for (let i = 0; i < 3; i++) expect(windows.count('a', t + i)).toBe(0);
    expect(windows.count('a', t + 10_000)).toBe(50_000); // the window began with the first request
    expect(windows.count('a', t + 59_999)).toBe(1);
    expect(windows.count('b', t + 10_000)).toBe(0); // another key, another window
    expect(windows.count('a', t + 60_000)).toBe(0);
  });

  it('forgets keys a whole generation of others came after, and keeps the ones still asking', () => {
    const windows = new RequestWindows(1, 60_000, 4);
    expect(windows.count('steady', 0)).toBe(0);
    for (let i = 0; i < 20; i++) {
      windows.count(`passer-${i}`, 1);
      expect(windows.count('steady', 1), 'a steady key keeps its spent window').toBeGreaterThan(0);
    }
    expect(windows.count('passer-0', 2)).toBe(0);
  });
});

describe('addressGroup', () => {
  it('counts IPv4 as is, also when it arrives IPv4-mapped', () => {
    expect(addressGroup('203.0.113.9')).toBe('203.0.113.9');
    expect(addressGroup('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(addressGroup('::FFFF:cb00:7109')).toBe('203.0.113.9');
  });

  it('counts IPv6 by its /64, however it is written', () => {
    const group = addressGroup('2001:db8:aa:bb:1:2:3:4');
    expect(group).toBe('2001:db8:aa:bb::/64');
    for (const same of [
      '2001:db8:aa:bb::1',
      '2001:0DB8:00aa:00bb:ffff:ffff:ffff:ffff',
      '2001:db8:aa:bb::1.2.3.4',
      '2001:db8:aa:bb::9%eth0',
    ]) {
      expect(addressGroup(same), same).toBe(group);
    }
    expect(addressGroup('2001:db8:aa:bc::1')).not.toBe(group);
    expect(addressGroup('::1')).toBe('0:0:0:0::/64');
    expect(addressGroup('2001:db8::')).toBe('2001:db8:0:0::/64');
  });

  it('never throws: what is not an address (a forwarded header, say) is counted as its text', () => {
    for (const junk of ['', 'unknown', '::ffff:999.1.1.1', ':::', '1.2.3.4, 5.6.7.8']) {
      expect(() => addressGroup(junk), junk).not.toThrow();
    }
    expect(addressGroup('Unknown')).toBe('unknown');
  });
});
