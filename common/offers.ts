// The Redis layout two modules share: the offer jobs (analytics) write a shopper's offer for a sale, the sale
// core (sale-core) reads and applies it. It lives here so neither module reaches into the other.
//
// An offer is a hash at `sale:{<saleId>}:offer:<userId>` (in the sale's hash slot, so the purchase script can
// read it in the same slot as the sale's other keys):
//   offer_id         the offer's id, carried by every event and order the offer touches
//   kind             'price' | 'early_access' | 'priority'
//   sku              the product a price offer is for ('' = every SKU)
//   price            cents per unit, for 'price'
//   early_access_ms  for 'early_access': how long before the start the shopper is admitted
//
// The offer loop also reads, never writes, a few facts of a sale that sale-core owns: the meta hash
// (`starts_at`, `ends_at`, `status`, `follow_up_sale_id`, `price:<sku>`, `limit:<sku>`), the starting stock
// per SKU (`initial`) and the set of sales not yet finished (`sales:active`).
import type { Redis } from 'ioredis';

export type OfferKind = 'price' | 'early_access' | 'priority';
export const OFFER_KINDS: readonly OfferKind[] = ['price', 'early_access', 'priority'];

export interface ShopperOffer {
  offer_id: string;
  kind: OfferKind;
  sku: string | null;
  price: number | null;
  early_access_ms: number | null;
}

/** The key of one shopper's offer for one sale. */
export function offerKey(saleId: string, userId: string): string {
  return `sale:{${saleId}}:offer:${userId}`;
}

/** sale-core's meta hash of a sale (read-only here). */
export function saleMetaKey(saleId: string): string {
  return `sale:{${saleId}}:meta`;
}

/** sale-core's starting stock per SKU of a sale (read-only here). */
export function saleInitialStockKey(saleId: string): string {
  return `sale:{${saleId}}:initial`;
}

/** sale-core's set of sales not finished yet (read-only here). */
export const ACTIVE_SALES_KEY = 'sales:active';

function isOfferKind(kind: string | undefined): kind is OfferKind {
  return kind === 'price' || kind === 'early_access' || kind === 'priority';
}

function offerFromHash(o: Record<string, string>): ShopperOffer | null {
  if (!o.offer_id || !isOfferKind(o.kind)) return null;
  return {
    offer_id: o.offer_id,
    kind: o.kind,
    sku: o.sku ? o.sku : null,
    price: o.price !== undefined && o.price !== '' ? Number(o.price) : null,
    early_access_ms: o.early_access_ms ? Number(o.early_access_ms) : null,
  };
}

function offerFields(offer: ShopperOffer): Record<string, string> {
  const fields: Record<string, string> = { offer_id: offer.offer_id, kind: offer.kind, sku: offer.sku ?? '' };
  if (offer.price !== null) fields.price = String(offer.price);
  if (offer.early_access_ms !== null) fields.early_access_ms = String(offer.early_access_ms);
  return fields;
}

/** One shopper's offer for one sale, or null when there is none (or it is not one the shop understands). */
export async function readOffer(redis: Redis, saleId: string, userId: string): Promise<ShopperOffer | null> {
  return offerFromHash(await redis.hgetall(offerKey(saleId, userId)));
}

/**
 * Writes one shopper's offer for one sale, replacing any earlier one, in one transaction: a reader never sees
 * half an offer or the fields of two. `ttlMs` (when given and not 0) makes the offer disappear that long from now.
 */
export async function writeOffer(redis: Redis, saleId: string, userId: string, offer: ShopperOffer, ttlMs?: number): Promise<void> {
  await writeOffers(redis, saleId, [{ userId, offer }], ttlMs ? Date.now() + ttlMs : undefined);
}

// Replaces each offer whole: KEYS are the offer keys; ARGV[1] is the expiry (epoch ms, '' = none), then six
// values per key: offer_id, kind, sku, price, early_access_ms ('' = absent). All keys of one call belong to one
// sale, so they share its hash slot and the script runs unchanged on Redis Cluster.
const WRITE_OFFERS = `
local expires = ARGV[1]
for i, key in ipairs(KEYS) do
  local a = 1 + (i - 1) * 5
  redis.call('DEL', key)
  local fields = {'offer_id', ARGV[a + 1], 'kind', ARGV[a + 2], 'sku', ARGV[a + 3]}
  if ARGV[a + 4] ~= '' then table.insert(fields, 'price'); table.insert(fields, ARGV[a + 4]) end
  if ARGV[a + 5] ~= '' then table.insert(fields, 'early_access_ms'); table.insert(fields, ARGV[a + 5]) end
  redis.call('HSET', key, unpack(fields))
  if expires ~= '' then redis.call('PEXPIREAT', key, expires) end
end
return #KEYS
`;

/** Offers per script call: big enough to make the round trips cheap, small enough not to stall Redis. */
const OFFERS_PER_CALL = 2000;

/**
 * Writes many offers for one sale (the offer jobs write thousands at a time), a few thousand per atomic
 * script call. Each offer is replaced whole, so writing the same offers again changes nothing: a rerun of an
 * offer job may write them twice safely. `expiresAtMs` is an absolute time (after the sale ends).
 */
export async function writeOffers(
  redis: Redis,
  saleId: string,
  offers: readonly { userId: string; offer: ShopperOffer }[],
  expiresAtMs?: number,
): Promise<void> {
  for (let start = 0; start < offers.length; start += OFFERS_PER_CALL) {
    const chunk = offers.slice(start, start + OFFERS_PER_CALL);
    const keys: string[] = [];
    const args: string[] = [expiresAtMs === undefined ? '' : String(expiresAtMs)];
    for (const { userId, offer } of chunk) {
      keys.push(offerKey(saleId, userId));
      const fields = offerFields(offer);
      args.push(fields.offer_id!, fields.kind!, fields.sku!, fields.price ?? '', fields.early_access_ms ?? '');
    }
    try {
      await redis.eval(WRITE_OFFERS, keys.length, ...keys, ...args);
    } catch (error) {
      throw new Error(`writing offers for sale ${saleId} failed: ${(error as Error).message}`, { cause: error });
    }
  }
}

/**
 * Who has been decided for a sale, offer or hold-out, and by which run: a hash `sale:{<saleId>}:offer-decisions`
 * (field = user id, value = run id). The batch job and the real-time consumer both claim a shopper here before
 * they record a decision, so "one offer per shopper per sale" holds when they decide at the same moment
 * (neither can see the other's decision in the warehouse yet, and a hold-out leaves no offer key to find).
 */
export function offerDecisionsKey(saleId: string): string {
  return `sale:{${saleId}}:offer-decisions`;
}

// KEYS[1] the decisions hash. ARGV[1] the run id, ARGV[2] '1' when a shopper this run claimed before stays
// this run's (a rerun of a batch run that died midway), ARGV[3] the expiry (epoch ms, '' = none), then user ids.
// Returns the user ids this run holds.
const CLAIM_SHOPPERS = `
local run, resume, held = ARGV[1], ARGV[2] == '1', {}
for i = 4, #ARGV do
  local user = ARGV[i]
  if redis.call('HSETNX', KEYS[1], user, run) == 1 or (resume and redis.call('HGET', KEYS[1], user) == run) then
    table.insert(held, user)
  end
end
if ARGV[3] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return held
`;

/**
 * Claims shoppers of a sale for one run's decisions; returns those this run holds. A shopper another run (or,
 * without `resume`, this one) already claimed is not this run's to decide. `expiresAtMs`: when the claims go
 * (after the sale ends, with the offers).
 */
export async function claimShoppers(
  redis: Redis,
  saleId: string,
  runId: string,
  userIds: readonly string[],
  options: { resume: boolean; expiresAtMs?: number },
): Promise<Set<string>> {
  const held = new Set<string>();
  for (let start = 0; start < userIds.length; start += OFFERS_PER_CALL) {
    const chunk = userIds.slice(start, start + OFFERS_PER_CALL);
    const args = [runId, options.resume ? '1' : '0', options.expiresAtMs === undefined ? '' : String(options.expiresAtMs), ...chunk];
    const mine = (await redis.eval(CLAIM_SHOPPERS, 1, offerDecisionsKey(saleId), ...args)) as string[];
    for (const user of mine) held.add(user);
  }
  return held;
}

/** What the offer loop needs to know of a sale (from sale-core's keys). */
export interface SaleFacts {
  saleId: string;
  status: string;
  startsAt: number;
  endsAt: number;
  followUpSaleId: string | null;
  /** Price per SKU, cents. */
  prices: Record<string, number>;
  /** Most units one shopper may buy, per SKU. */
  limits: Record<string, number>;
  /** Starting stock per SKU. */
  initialStock: Record<string, number>;
}

/** The sale's facts, or null when there is no such sale. */
export async function readSaleFacts(redis: Redis, saleId: string): Promise<SaleFacts | null> {
  const [meta, initial] = await Promise.all([redis.hgetall(saleMetaKey(saleId)), redis.hgetall(saleInitialStockKey(saleId))]);
  if (!meta.status) return null;
  const prices: Record<string, number> = {};
  const limits: Record<string, number> = {};
  for (const [field, value] of Object.entries(meta)) {
    if (field.startsWith('price:')) prices[field.slice(6)] = Number(value);
    else if (field.startsWith('limit:')) limits[field.slice(6)] = Number(value);
  }
  return {
    saleId,
    status: meta.status,
    startsAt: Number(meta.starts_at),
    endsAt: Number(meta.ends_at),
    followUpSaleId: meta.follow_up_sale_id ? meta.follow_up_sale_id : null,
    prices,
    limits,
    initialStock: Object.fromEntries(Object.entries(initial).map(([sku, units]) => [sku, Number(units)])),
  };
}

/**
 * The sale a shopper of `saleId` should get an offer for: the one the sale names as its follow-up, else the
 * scheduled sale (not ended, not started yet) that starts first after it. Null when there is none.
 */
export async function followUpSaleOf(
  redis: Redis,
  saleId: string,
  now = Date.now(),
  activeSalesKey = ACTIVE_SALES_KEY,
): Promise<string | null> {
  const named = await redis.hget(saleMetaKey(saleId), 'follow_up_sale_id');
  if (named) return named;
  const candidates = (await redis.smembers(activeSalesKey)).filter((id) => id !== saleId);
  let best: { id: string; startsAt: number } | null = null;
  for (const id of candidates) {
    const [status, startsAt] = await redis.hmget(saleMetaKey(id), 'status', 'starts_at');
    const start = Number(startsAt);
    if (!status || status === 'ended' || !(start > now)) continue;
    if (!best || start < best.startsAt || (start === best.startsAt && id < best.id)) best = { id, startsAt: start };
  }
  return best?.id ?? null;
}
