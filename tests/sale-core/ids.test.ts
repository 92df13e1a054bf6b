// The pooled UUIDv7 generator of the purchase path must produce ids the event contract accepts.
import { validate, version } from 'uuid';
import { expect, it } from 'vitest';
import { newOrderEventId } from '../../sale-core/ids.js';

it('produces unique, valid UUIDv7 ids carrying the timestamp', () => {
  const ids = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    const id = newOrderEventId(1_795_000_000_000 + i);
    expect(validate(id) && version(id) === 7 && /^[0-9a-f-]{36}$/.test(id)).toBe(true);
    ids.add(id);
  }
  expect(ids.size).toBe(20_000);
  expect(newOrderEventId(0x0123456789ab).slice(0, 13)).toBe('01234567-89ab');
});

it('ids made in the same millisecond differ, and each carries its own millisecond', () => {
  const times = [1_795_000_000_000, 1_795_000_000_000, 1_795_000_000_001, 1_795_000_000_000, 0x0123456789ab];
  const ids = times.map((t) => newOrderEventId(t));
  expect(new Set(ids).size).toBe(ids.length);
  ids.forEach((id, i) => {
    const hex = times[i]!.toString(16).padStart(12, '0');
    expect(id.slice(0, 13)).toBe(`${hex.slice(0, 8)}-${hex.slice(8)}`);
  });
});
