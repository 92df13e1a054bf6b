// The order store on the real PostgreSQL: statuses only move forward, replays change nothing.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresPool } from '../../common/postgres.js';
import { applyOrderEvents, ensureOrderStore } from '../../ingest/index.js';
import { parseFence } from '../../ingest/replay-fence.js';
import { orderEvent, uniqueSale } from './support/events.js';

describe('order store', () => {
  let pool: pg.Pool;

  beforeAll(async () => {
    pool = createPostgresPool({ max: 2 });
    // Twice at once: several ingest processes may start together.
    await Promise.all([ensureOrderStore(pool), ensureOrderStore(pool)]);
  });
  afterAll(async () => pool?.end());

  const statusOf = async (orderId: string) =>
    (await pool.query<{ status: string }>('SELECT status FROM orders WHERE order_id = $1', [orderId])).rows.map((row) => row.status);
  const historyOf = async (orderId: string) =>
    (
      await pool.query<{ status: string }>('SELECT status FROM order_status_history WHERE order_id = $1 ORDER BY changed_at', [orderId])
    ).rows.map((row) => row.status);

  it('is hash-partitioned by order id', async () => {
    const { rows } = await pool.query<{ parts: string }>(
      "SELECT count(*) AS parts FROM pg_inherits WHERE inhparent IN ('orders'::regclass, 'order_status_history'::regclass)",
    );
    expect(Number(rows[0]!.parts)).toBe(16);
  });

  it('moves reserved → paid, never back and never on to expired', async () => {
    const sale = uniqueSale('store');
    const id = `order-${sale}`;
    const t = Date.now();
    const reserved = orderEvent(sale, id, 'reserved', 1, t);
    const paid = orderEvent(sale, id, 'paid', 1, t + 10);
    expect(await applyOrderEvents(pool, [reserved, paid])).toBe(2);
    expect(await applyOrderEvents(pool, [orderEvent(sale, id, 'expired', 1, t + 20), reserved, paid])).toBe(0);
    expect(await statusOf(id)).toEqual(['paid']);
    expect(await historyOf(id)).toEqual(['reserved', 'paid']);
  });

  it('moves reserved → expired, and expired → paid when a late payment took a unit back', async () => {
    const sale = uniqueSale('store');
    const id = `order-${sale}`;
    const t = Date.now();
    const expired = orderEvent(sale, id, 'expired', 2, t + 10);
    await applyOrderEvents(pool, [orderEvent(sale, id, 'reserved', 2, t), expired]);
    expect(await statusOf(id)).toEqual(['expired']);
    // sale-core emits order_paid after order_expired only when the payment re-acquired a unit.
    const latePaid = orderEvent(sale, id, 'paid', 2, t + 20);
    expect(await applyOrderEvents(pool, [latePaid])).toBe(1);
    expect(await statusOf(id)).toEqual(['paid']);
    // Paid is final: the expiry replayed changes nothing.
    expect(await applyOrderEvents(pool, [expired, latePaid])).toBe(0);
    expect(await statusOf(id)).toEqual(['paid']);
    expect(await historyOf(id)).toEqual(['reserved', 'expired', 'paid']);
  });

  it('fills in the reservation when it arrives after the payment', async () => {
    const sale = uniqueSale('store');
    const id = `order-${sale}`;
    const t = Date.now();
    expect(await applyOrderEvents(pool, [orderEvent(sale, id, 'paid', 4, t + 10)])).toBe(1);
    expect(await applyOrderEvents(pool, [orderEvent(sale, id, 'reserved', 4, t)])).toBe(1);
    const { rows } = await pool.query<{ status: string; reserved_at: Date | null; expires_at: Date | null }>(
      'SELECT status, reserved_at, expires_at FROM orders WHERE order_id = $1',
      [id],
    );
    expect(rows[0]?.status).toBe('paid');
    expect(rows[0]?.reserved_at?.getTime()).toBe(t);
    expect(rows[0]?.expires_at).not.toBeNull();
    // A replay of the reservation changes nothing more.
    expect(await applyOrderEvents(pool, [orderEvent(sale, id, 'reserved', 4, t)])).toBe(0);
  });

  it('rolls a failed batch back whole, so its retry applies it once', async () => {
    const sale = uniqueSale('store');
    const id = `order-${sale}`;
    const broken = { ...orderEvent(sale, `${id}-b`, 'reserved', 3), price: -1 };
    await expect(applyOrderEvents(pool, [orderEvent(sale, id, 'reserved', 3), broken])).rejects.toThrow();
    expect(await statusOf(id)).toEqual([]);
  });
});

describe('replay fence metadata', () => {
  it('names the range to re-cut, and ignores anything else', () => {
    expect(parseFence('100', JSON.stringify({ fence: 1, to: '149' }))).toEqual({ from: '100', to: '149' });
    expect(parseFence('100', null)).toBeUndefined();
    expect(parseFence('100', '')).toBeUndefined();
    expect(parseFence('100', 'not json')).toBeUndefined();
    expect(parseFence('150', JSON.stringify({ fence: 1, to: '149' }))).toBeUndefined();
    expect(parseFence('-1', JSON.stringify({ fence: 1, to: '149' }))).toBeUndefined();
  });
});
