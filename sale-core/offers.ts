// Offers applied: the offer jobs (analytics) write a shopper's offer for a sale into Redis; the
// catalog shows it, the purchase script applies it atomically, and events carry its offer_id.
import { saleKeys } from './keys.js';
import type { SaleRedis } from './scripts.js';

export interface ShopperOffer {
  offer_id: string;
  kind: 'price' | 'early_access' | 'priority';
  sku: string | null;
  price: number | null;
  early_access_ms: number | null;
}

export async function readOffer(redis: SaleRedis, saleId: string, userId: string): Promise<ShopperOffer | null> {
  const o = await redis.hgetall(saleKeys(saleId).offer(userId));
  if (!o.offer_id || (o.kind !== 'price' && o.kind !== 'early_access' && o.kind !== 'priority')) return null;
  return {
    offer_id: o.offer_id,
    kind: o.kind,
    sku: o.sku ? o.sku : null,
    price: o.price !== undefined && o.price !== '' ? Number(o.price) : null,
    early_access_ms: o.early_access_ms ? Number(o.early_access_ms) : null,
  };
}

/** What the offer jobs call (and tests): one shopper's offer for one sale. */
export async function writeOffer(redis: SaleRedis, saleId: string, userId: string, offer: ShopperOffer, ttlMs?: number): Promise<void> {
  const key = saleKeys(saleId).offer(userId);
  const fields: Record<string, string> = { offer_id: offer.offer_id, kind: offer.kind, sku: offer.sku ?? '' };
  if (offer.price !== null) fields.price = String(offer.price);
  if (offer.early_access_ms !== null) fields.early_access_ms = String(offer.early_access_ms);
  await redis.del(key);
  await redis.hset(key, fields);
  if (ttlMs) await redis.pexpire(key, ttlMs);
}
