// Who a client is, as far as its address can tell: the one key every per-address limit and the clickstream's
// ip_hash are made from (context.ts hashes it; the light routes' limits count it as is, rate-limits.ts).
import { isIPv6 } from 'node:net';

/**
 * The address a client is counted and known by: an IPv4 address as is (also when it arrives IPv4-mapped), an
 * IPv6 address by its /64, the block one subscriber usually holds, so cycling through one's own block buys
 * nothing. Never throws: with trusted proxies the address comes from X-Forwarded-For, and anything that is not
 * an IPv6 address is counted as the text it is.
 */
export function addressGroup(ip: string): string {
  // IPv4 holds no ':', so the common case skips isIPv6's regular expression.
  if (!ip.includes(':') || !isIPv6(ip)) return ip.toLowerCase();
  const groups = ipv6Groups(ip.toLowerCase().split('%')[0]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const [high = 0, low = 0] = groups.slice(6);
    return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** The eight 16-bit groups of an address isIPv6 accepted (no zone), "::" and a dotted IPv4 tail expanded. */
function ipv6Groups(address: string): number[] {
  const parse = (part: string) =>
    part === ''
      ? []
      : part.split(':').flatMap((g) => {
          if (!g.includes('.')) return [Number.parseInt(g, 16)];
          const [a = 0, b = 0, c = 0, d = 0] = g.split('.').map(Number);
          return [(a << 8) | b, (c << 8) | d];
        });
  const [head = '', tail] = address.split('::');
  const left = parse(head);
  if (tail === undefined) return left;
  const right = parse(tail);
  return [...left, ...new Array<number>(Math.max(0, 8 - left.length - right.length)).fill(0), ...right];
}
