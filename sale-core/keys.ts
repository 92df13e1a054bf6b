// Redis key layout. Every key of one sale lives in the hash slot of `{<saleId>}`, so each multi-key
// Lua script touches one slot and runs unchanged on Redis Cluster.
//
// Offers are written by the offer jobs (analytics) at `sale:{<saleId>}:offer:<userId>`, a hash:
//   offer_id, kind ('price' | 'early_access' | 'priority'), sku (optional: '' = every SKU),
//   price (cents, for 'price'), early_access_ms (for 'early_access': how long before the start).

/** Ids of sales whose outbox the relay and the expiry sweeper watch. Not in a sale's slot: read alone. */
export const ACTIVE_SALES = 'sales:active';

export const SALE_ID_PATTERN = '^[a-z0-9][a-z0-9-]{0,39}$';
export const SKU_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';

// A purchase needs twelve of a sale's key names: they are built once per sale, not once per request.
const keysBySale = new Map<string, SaleKeys>();

export function saleKeys(saleId: string): SaleKeys {
  let keys = keysBySale.get(saleId);
  if (keys === undefined) {
    if (keysBySale.size > 10_000) keysBySale.clear();
    keys = keyNames(saleId);
    keysBySale.set(saleId, keys);
  }
  return keys;
}

function keyNames(saleId: string) {
  const p = `sale:{${saleId}}:`;
  return {
    meta: `${p}meta`, // the sale's state and times, and price:<sku> / limit:<sku> (per-shopper limit)
    catalog: `${p}catalog`,
    stock: `${p}stock`, // available units per SKU
    reserved: `${p}reserved`, // reserved, not yet paid
    sold: `${p}sold`, // paid
    initial: `${p}initial`,
    // "<user>|<sku>" → units the shopper holds (reserved or paid); "ticket:<id>" → 1 once spent;
    // "idem:<user>:<key>" → a purchase's answer under its idempotency key (scripts.ts RESERVE_UNITS)
    bought: `${p}bought`,
    expiry: `${p}expiry`, // order id → expires_at (ms)
    outbox: `${p}outbox`, // order events waiting for Kafka
    viewed: `${p}viewed`, // shoppers who viewed a product (bot signal input)
    queue: `${p}queue`, // user → waiting-room position
    queueCounter: `${p}queue:n`,
    queueAddresses: `${p}queue:ip`, // ip hash → accounts that joined the queue from that address
    creating: `${p}creating`, // set while the sale is being created (see createSale)
    relayLease: `${p}relay-lease`,
    order: (orderId: string) => `${p}order:${orderId}`,
    rateByIp: (ipHash: string) => `${p}bucket:ip:${ipHash}`, // token buckets (scripts.ts TAKE_TOKEN)
    rateByShopper: (userId: string) => `${p}bucket:u:${userId}`,
    offer: (userId: string) => `${p}offer:${userId}`,
  };
}

export type SaleKeys = ReturnType<typeof keyNames>;

/** Order ids carry their sale id, so `/orders/:id` finds the sale's slot without a lookup. */
export function orderIdFor(saleId: string, uuid: string): string {
  return `${saleId}.${uuid}`;
}

export function saleIdOfOrder(orderId: string): string | null {
  const match = /^([a-z0-9][a-z0-9-]{0,39})\.[0-9a-f-]{36}$/.exec(orderId);
  return match ? match[1]! : null;
}
