// UUIDv7 event and order ids for the hot path. Same layout as common/events newEventId (48-bit ms
// timestamp, version 7, variant 10, random rest), but the random bytes come from a pooled buffer:
// one getRandomValues call per 256 ids instead of one per id, which showed up in the purchase profile.
import { randomFillSync } from 'node:crypto';

const POOL_IDS = 256;
const pool = Buffer.alloc(POOL_IDS * 10);
let offset = pool.length;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
// The timestamp's part of the id ("xxxxxxxx-xxxx-"), kept for its millisecond: the purchases of one batch, and
// their events, share it.
let prefixMs = -1;
let prefix = '';

// No closures in here: under tsx (esbuild keepNames) every closure created per call costs a defineProperty.
export function newOrderEventId(now = Date.now()): string {
  if (offset >= pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const r = offset;
  offset += 10;
  if (now !== prefixMs) {
    const ms = now.toString(16).padStart(12, '0').slice(-12);
    prefix = `${ms.slice(0, 8)}-${ms.slice(8, 12)}-`;
    prefixMs = now;
  }
  const versioned = HEX[0x70 | (pool[r]! & 0x0f)]!; // version 7 in the high nibble
  const variant = HEX[0x80 | (pool[r + 2]! & 0x3f)]!; // variant 10
  return (
    `${prefix}${versioned}${HEX[pool[r + 1]!]}-${variant}${HEX[pool[r + 3]!]}-` +
    `${HEX[pool[r + 4]!]}${HEX[pool[r + 5]!]}${HEX[pool[r + 6]!]}${HEX[pool[r + 7]!]}${HEX[pool[r + 8]!]}${HEX[pool[r + 9]!]}`
  );
}
