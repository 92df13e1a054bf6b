// Sales, the marketer's side: create a sale (stock loaded into Redis at creation), read it, end it
// early. And the catalog's static/dynamic split: the catalog (titles, prices, images) is an immutable
// snapshot served from process memory with an ETag, so a CDN or browser absorbs the reads and the hot
// path never touches Redis; live stock is a separate tiny endpoint with a one-second cache.
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import Type from 'typebox';
import { type SaleContext, shopperContext } from './context.js';
import { saleError } from './errors.js';
import { SALE_ID_PATTERN, SKU_PATTERN, saleKeys } from './keys.js';
import { readOffer } from './offers.js';
import type { SaleRedis } from './scripts.js';

export const SaleDefinition = Type.Object(
  {
    id: Type.String({ pattern: SALE_ID_PATTERN, description: 'lower-case letters, digits and "-", up to 40' }),
    title: Type.String({ minLength: 1, maxLength: 200 }),
    starts_at: Type.Integer({ minimum: 0, description: 'epoch ms' }),
    ends_at: Type.Integer({ minimum: 0, description: 'epoch ms, after starts_at' }),
    payment_window_minutes: Type.Number({ exclusiveMinimum: 0, maximum: 24 * 60 }),
    admission_rate_per_second: Type.Optional(
      Type.Number({ minimum: 0.01, maximum: 1_000_000, description: 'shoppers admitted per second after the burst' }),
    ),
    admission_burst: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })),
    skus: Type.Array(
      Type.Object(
        {
          sku: Type.String({ pattern: SKU_PATTERN }),
          title: Type.String({ minLength: 1, maxLength: 200 }),
          price: Type.Integer({ minimum: 0, maximum: 100_000_000, description: 'cents' }),
          stock: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
          limit_per_shopper: Type.Integer({ minimum: 1, maximum: 100 }),
          image_url: Type.Optional(Type.String({ format: 'uri', maxLength: 1000 })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 200 },
    ),
  },
  { additionalProperties: false },
);
export type SaleDefinition = Type.Static<typeof SaleDefinition>;

export interface CatalogProduct {
  sku: string;
  title: string;
  price: number;
  limit_per_shopper: number;
  image_url?: string;
}

export interface Catalog {
  id: string;
  title: string;
  starts_at: number;
  ends_at: number;
  payment_window_minutes: number;
  products: CatalogProduct[];
}

interface Snapshot {
  catalog: Catalog | null;
  body: string;
  etag: string;
  skus: Map<string, CatalogProduct>;
  fetchedAt: number;
  refreshing?: Promise<Snapshot>;
}

/**
 * In-process catalog snapshots. A catalog never changes once created, so a snapshot is kept for good;
 * a missing sale is remembered for a second so unknown ids cannot hammer Redis.
 */
export class CatalogSnapshots {
  private snapshots = new Map<string, Snapshot>();
  private loading = new Map<string, Promise<Snapshot>>();

  constructor(private readonly redis: SaleRedis) {}

  async get(saleId: string): Promise<Snapshot> {
    const cached = this.snapshots.get(saleId);
    if (cached && (cached.catalog || Date.now() - cached.fetchedAt < 1000)) return cached;
    let pending = this.loading.get(saleId);
    if (!pending) {
      pending = this.load(saleId).finally(() => this.loading.delete(saleId));
      this.loading.set(saleId, pending);
    }
    return pending;
  }

  private async load(saleId: string): Promise<Snapshot> {
    let raw: string | null;
    try {
      raw = await this.redis.get(saleKeys(saleId).catalog);
    } catch {
      throw saleError('STORE_UNAVAILABLE');
    }
    const catalog = raw ? (JSON.parse(raw) as Catalog) : null;
    const body = raw ?? '';
    const snapshot: Snapshot = {
      catalog,
      body,
      etag: `"${createHash('sha1').update(body).digest('base64url')}"`,
      skus: new Map((catalog?.products ?? []).map((p) => [p.sku, p])),
      fetchedAt: Date.now(),
    };
    if (this.snapshots.size > 10_000) this.snapshots.clear();
    this.snapshots.set(saleId, snapshot);
    return snapshot;
  }

  /** The sale's catalog, or SALE_NOT_FOUND. */
  async require(saleId: string): Promise<Snapshot & { catalog: Catalog }> {
    const snapshot = await this.get(saleId);
    if (!snapshot.catalog) throw saleError('SALE_NOT_FOUND');
    return snapshot as Snapshot & { catalog: Catalog };
  }

  forget(saleId: string): void {
    this.snapshots.delete(saleId);
  }
}

export type CreateSaleResult = { created: true; catalog: Catalog } | { created: false };

/** Creates a sale and loads its stock into Redis; refuses an id that exists (sales are immutable). */
export async function createSale(
  redis: SaleRedis,
  activeSalesKey: string,
  def: SaleDefinition,
  defaultAdmissionRate: number,
): Promise<CreateSaleResult> {
  if (def.ends_at <= def.starts_at) throw saleError('SALE_INVALID', 'ends_at must be after starts_at.');
  const seen = new Set<string>();
  for (const s of def.skus) {
    if (seen.has(s.sku)) throw saleError('SALE_INVALID', `SKU ${s.sku} appears twice.`);
    seen.add(s.sku);
  }
  const catalog: Catalog = {
    id: def.id,
    title: def.title,
    starts_at: def.starts_at,
    ends_at: def.ends_at,
    payment_window_minutes: def.payment_window_minutes,
    products: def.skus.map((s) => ({
      sku: s.sku,
      title: s.title,
      price: s.price,
      limit_per_shopper: s.limit_per_shopper,
      ...(s.image_url ? { image_url: s.image_url } : {}),
    })),
  };
  const rate = def.admission_rate_per_second ?? defaultAdmissionRate;
  const meta = {
    status: 'scheduled',
    title: def.title,
    starts_at: def.starts_at,
    ends_at: def.ends_at,
    window_ms: Math.round(def.payment_window_minutes * 60_000),
    admission_rate: rate,
    admission_burst: def.admission_burst ?? Math.ceil(rate),
    created_at: Date.now(),
  };
  const k = saleKeys(def.id);
  // Registered first: the relay and the sweeper then never miss a sale that has orders.
  await redis.sadd(activeSalesKey, def.id);
  const created = await redis.createSale(
    k.meta,
    k.catalog,
    k.stock,
    k.reserved,
    k.sold,
    k.initial,
    JSON.stringify(meta),
    JSON.stringify(catalog),
    JSON.stringify(def.skus),
  );
  return created === 1 ? { created: true, catalog } : { created: false };
}

export interface StockLedger {
  available: Record<string, number>;
  reserved: Record<string, number>;
  sold: Record<string, number>;
  initial: Record<string, number>;
}

function pairs(list: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < list.length; i += 2) out[list[i]!] = Number(list[i + 1]);
  return out;
}

/** One atomic read of the four stock counters (available + reserved + sold == initial). */
export async function readStockLedger(redis: SaleRedis, saleId: string): Promise<StockLedger> {
  const k = saleKeys(saleId);
  const [available, reserved, sold, initial] = await redis.stockLedger(k.stock, k.reserved, k.sold, k.initial);
  return { available: pairs(available!), reserved: pairs(reserved!), sold: pairs(sold!), initial: pairs(initial!) };
}

async function saleStatus(redis: SaleRedis, saleId: string) {
  const [status, startsAt, endsAt] = await redis.hmget(saleKeys(saleId).meta, 'status', 'starts_at', 'ends_at');
  if (!status) return null;
  const now = Date.now();
  const ended = status === 'ended' || now >= Number(endsAt);
  return { state: ended ? 'ended' : now >= Number(startsAt) ? 'live' : 'scheduled', starts_at: Number(startsAt), ends_at: Number(endsAt) };
}

function requireAdmin(request: FastifyRequest, adminToken: string): void {
  const header = request.headers.authorization ?? '';
  if (header !== `Bearer ${adminToken}`) throw saleError('ADMIN_REQUIRED');
}

const SaleParams = Type.Object({ saleId: Type.String({ pattern: SALE_ID_PATTERN }) });

export function registerSaleRoutes(app: FastifyInstance, sc: SaleContext): void {
  const store = <T>(p: Promise<T>) =>
    p.catch((error) => {
      throw error?.code && error.statusCode ? error : saleError('STORE_UNAVAILABLE');
    });

  app.post(
    '/admin/sales',
    { schema: { tags: ['admin'], summary: 'Create a sale and load its stock', body: SaleDefinition } },
    async (request, reply) => {
      requireAdmin(request, sc.settings.adminToken);
      const def = request.body as SaleDefinition;
      const result = await store(createSale(sc.redis, sc.settings.activeSalesKey, def, sc.settings.admissionRatePerSecond));
      if (!result.created) throw saleError('SALE_EXISTS');
      sc.catalog.forget(def.id);
      reply.code(201).send(result.catalog);
    },
  );

  app.get(
    '/admin/sales/:saleId',
    { schema: { tags: ['admin'], summary: 'A sale with its live stock ledger', params: SaleParams } },
    async (request) => {
      requireAdmin(request, sc.settings.adminToken);
      const { saleId } = request.params as { saleId: string };
      const snapshot = await sc.catalog.require(saleId);
      const [status, ledger] = await store(Promise.all([saleStatus(sc.redis, saleId), readStockLedger(sc.redis, saleId)]));
      return { ...snapshot.catalog, status: status?.state, ledger };
    },
  );

  app.post(
    '/admin/sales/:saleId/end',
    { schema: { tags: ['admin'], summary: 'End a sale early', params: SaleParams } },
    async (request) => {
      requireAdmin(request, sc.settings.adminToken);
      const { saleId } = request.params as { saleId: string };
      await sc.catalog.require(saleId);
      await store(sc.redis.hset(saleKeys(saleId).meta, 'status', 'ended', 'ended_at', Date.now()));
      return { id: saleId, status: 'ended' };
    },
  );

  app.get(
    '/sales/:saleId/catalog',
    { schema: { tags: ['shopper'], summary: 'The sale catalog (cacheable; ETag)', params: SaleParams } },
    async (request, reply) => {
      const { saleId } = request.params as { saleId: string };
      const snapshot = await sc.catalog.require(saleId);
      // A logged-in shopper with an offer gets a private, personalised copy; everyone else the shared one.
      const shopper = request.headers.authorization ? shopperContext(request, sc.settings, false) : null;
      if (shopper?.session.userId) {
        const offer = await readOffer(sc.redis, saleId, shopper.session.userId).catch(() => null);
        if (offer) {
          const products = snapshot.catalog.products.map((p) =>
            offer.kind === 'price' && offer.price !== null && (!offer.sku || offer.sku === p.sku)
              ? { ...p, price: offer.price, list_price: p.price }
              : p,
          );
          reply.header('cache-control', 'private, no-store');
          return { ...snapshot.catalog, products, offer };
        }
      }
      reply.header('etag', snapshot.etag).header('cache-control', 'public, max-age=30, stale-while-revalidate=300');
      if (request.headers['if-none-match'] === snapshot.etag) return reply.code(304).send();
      reply.type('application/json').send(snapshot.body);
    },
  );

  // Live stock: tiny and short-lived, so a CDN can still absorb a spike of polls.
  const stockCache = new Map<string, { at: number; body: unknown }>();
  app.get(
    '/sales/:saleId/stock',
    { schema: { tags: ['shopper'], summary: 'Units left per SKU (cached for one second)', params: SaleParams } },
    async (request, reply) => {
      const { saleId } = request.params as { saleId: string };
      await sc.catalog.require(saleId);
      reply.header('cache-control', 'public, max-age=1');
      const cached = stockCache.get(saleId);
      if (cached && Date.now() - cached.at < 500) return cached.body;
      const [status, ledger] = await store(Promise.all([saleStatus(sc.redis, saleId), readStockLedger(sc.redis, saleId)]));
      const body = { sale_id: saleId, status: status?.state ?? 'ended', available: ledger.available };
      if (stockCache.size > 10_000) stockCache.clear();
      stockCache.set(saleId, { at: Date.now(), body });
      return body;
    },
  );
}
