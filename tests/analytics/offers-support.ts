// Sales for the offer tests, created the way marketers create them (sale-core's createSale on the real
// Redis), registered in a private "active sales" set so no running sale core visits them, and removed after.
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createSale } from '../../sale-core/sales.js';
import { withSaleScripts } from '../../sale-core/scripts.js';

export const TEST_ACTIVE_SALES = `test:offers:${randomUUID().slice(0, 8)}:active`;

export function uniqueSale(base: string): string {
  return `${base}-${randomUUID().slice(0, 8)}`;
}

/** A sale starting in an hour, two SKUs: A at 50.00 (limit 2), B at 120.00 (limit 1). */
export async function createTargetSale(redis: Redis, saleId: string, opts: { startsInMs?: number; followUp?: string } = {}) {
  const startsAt = Date.now() + (opts.startsInMs ?? 3_600_000);
  const endsAt = startsAt + 3_600_000;
  const result = await createSale(
    withSaleScripts(redis),
    TEST_ACTIVE_SALES,
    {
      id: saleId,
      title: `Offer test ${saleId}`,
      starts_at: startsAt,
      ends_at: endsAt,
      payment_window_minutes: 5,
      skus: [
        { sku: 'A', title: 'Product A', price: 5000, stock: 100, limit_per_shopper: 2 },
        { sku: 'B', title: 'Product B', price: 12000, stock: 50, limit_per_shopper: 1 },
      ],
    },
    100,
  );
  if (!result.created) throw new Error(`sale ${saleId} exists already`);
  // The follow-up sale, as sale-core stores it in the sale's meta once sale definitions carry it.
  if (opts.followUp) await redis.hset(`sale:{${saleId}}:meta`, 'follow_up_sale_id', opts.followUp);
  return { startsAt, endsAt };
}

export async function dropSales(redis: Redis, saleIds: string[]): Promise<void> {
  for (const saleId of saleIds) {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `sale:{${saleId}}:*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  }
  await redis.del(TEST_ACTIVE_SALES);
}
