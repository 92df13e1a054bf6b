// Sales, the marketer's side: create a sale (stock loaded into Redis at creation), read it, end it
// early. And the catalog's static/dynamic split: the catalog (titles, prices, images) is an immutable
// snapshot served from process memory with an ETag, so a CDN or browser absorbs the reads and the hot
// path never touches Redis; live stock is a separate tiny endpoint with a one-second cache.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { ReplyError } from 'ioredis';
import Type from 'typebox';
import { type SaleContext, shopperContext } from './context.js';
import { saleError } from './errors.js';
import { SALE_ID_PATTERN, SKU_PATTERN, saleKeys } from './keys.js';
import { readOffer } from './offers.js';
import { shopperRouteLimits } from './rate-limits.js';
import { createSaleScript, type SaleRedis, stockLedgerScript } from './scripts.js';
import { track } from './track.js';

// Times a sale may name. The schema holds the fixed bounds (no sale before 2020 or after 2100); createSale
// adds the ones relative to now: a start at most SALE_MAX_LEAD_MS ahead, a length of at most
// SALE_MAX_LENGTH_MS. Without them a start of 1e300 was stored, and every wait computed from it overflowed.
const EARLIEST_MS = Date.UTC(2020, 0, 1);
const LATEST_MS = Date.UTC(2100, 0, 1);
const SALE_MAX_LEAD_MS = 366 * 24 * 3_600_000;
const SALE_MAX_LENGTH_MS = 31 * 24 * 3_600_000;

export const SaleDefinition = Type.Object(
  {
    id: Type.String({ pattern: SALE_ID_PATTERN, description: 'lower-case letters, digits and "-", up to 40' }),
    title: Type.String({ minLength: 1, maxLength: 200 }),
    starts_at: Type.Integer({
      minimum: EARLIEST_MS,
      maximum: LATEST_MS,
      description: 'epoch ms; at most 366 days from now',
    }),
    ends_at: Type.Integer({
      minimum: EARLIEST_MS,
      maximum: LATEST_MS,
      description: 'epoch ms, after starts_at and at most 31 days after it',
    }),
    // At least one minute: a shorter window expires a reservation before a person can pay for it.
    payment_window_minutes: Type.Number({ minimum: 1, maximum: 24 * 60 }),
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
          // Web addresses only: the catalog is shown in shoppers' browsers, where a javascript: or data: URL runs.
          image_url: Type.Optional(Type.String({ format: 'uri', pattern: '^[Hh][Tt][Tt][Pp][Ss]?://', maxLength: 1000 })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 200 },
    ),
    follow_up_sale_id: Type.Optional(
      Type.String({
        pattern: SALE_ID_PATTERN,
        description: "the sale this one leads to: the offer jobs make offers for it from this sale's clickstream",
      }),
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

/** The checks of a definition the schema cannot make: relative to now, or across fields. */
function checkSaleDefinition(def: SaleDefinition, now: number): void {
  if (def.starts_at > now + SALE_MAX_LEAD_MS) throw saleError('SALE_INVALID', 'starts_at must be at most 366 days from now.');
  if (def.ends_at <= def.starts_at) throw saleError('SALE_INVALID', 'ends_at must be after starts_at.');
  if (def.ends_at - def.starts_at > SALE_MAX_LENGTH_MS) throw saleError('SALE_INVALID', 'ends_at must be at most 31 days after starts_at.');
  if (def.follow_up_sale_id === def.id) throw saleError('SALE_INVALID', 'follow_up_sale_id must name another sale.');
}

// How long a sale being created may stay in the active set without its meta before the sweeper takes it
// for the leftover of a create that failed (see createSale).
const CREATING_MS = 60_000;

/** Creates a sale and loads its stock into Redis; refuses an id that exists (sales are immutable). */
export async function createSale(
  redis: SaleRedis,
  activeSalesKey: string,
  def: SaleDefinition,
  defaultAdmissionRate: number,
  now = Date.now(),
): Promise<CreateSaleResult> {
  checkSaleDefinition(def, now);
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
    created_at: now,
    ...(def.follow_up_sale_id ? { follow_up_sale_id: def.follow_up_sale_id } : {}),
  };
  const k = saleKeys(def.id);
  // Registered before the sale exists: if this process dies between the two steps, the relay and the
  // sweeper still visit a sale that may take orders. The marker tells the sweeper that an id without meta
  // is being created; once it lapses, such an id is the leftover of a create that failed, and is retired.
  await redis.set(k.creating, '1', 'PX', CREATING_MS);
  await redis.sadd(activeSalesKey, def.id);
  let created: number;
  try {
    created = await createSaleScript(redis, {
      saleId: def.id,
      metaJson: JSON.stringify(meta),
      catalogJson: JSON.stringify(catalog),
      skusJson: JSON.stringify(def.skus),
    });
  } catch (error) {
    // Nothing was stored (the script checks before it writes, and a refused value stops it before the
    // first write): take the id back out, unless a sale of that id exists after all. When Redis is away
    // this fails too, and the sweeper retires the id once the marker lapses.
    await forgetFailedCreate(redis, activeSalesKey, def.id).catch(() => {});
    throw error;
  }
  await redis.del(k.creating);
  return created === 1 ? { created: true, catalog } : { created: false };
}

async function forgetFailedCreate(redis: SaleRedis, activeSalesKey: string, saleId: string): Promise<void> {
  const k = saleKeys(saleId);
  await redis.del(k.creating);
  if ((await redis.exists(k.meta)) === 0) await redis.srem(activeSalesKey, saleId);
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
  const [available, reserved, sold, initial] = await stockLedgerScript(redis, saleId);
  return { available: pairs(available!), reserved: pairs(reserved!), sold: pairs(sold!), initial: pairs(initial!) };
}

async function saleStatus(redis: SaleRedis, saleId: string) {
  const [status, startsAt, endsAt, followUp] = await redis.hmget(
    saleKeys(saleId).meta,
    'status',
    'starts_at',
    'ends_at',
    'follow_up_sale_id',
  );
  if (!status) return null;
  const now = Date.now();
  const ended = status === 'ended' || now >= Number(endsAt);
  return {
    state: ended ? 'ended' : now >= Number(startsAt) ? 'live' : 'scheduled',
    starts_at: Number(startsAt),
    ends_at: Number(endsAt),
    follow_up_sale_id: followUp || null,
  };
}

// Compared as digests, so the time the comparison takes says nothing about how much of the token matched.
const digest = (text: string) => createHash('sha256').update(text).digest();

function requireAdmin(request: FastifyRequest, adminToken: string): void {
  const given = digest(request.headers.authorization ?? '');
  if (!timingSafeEqual(given, digest(`Bearer ${adminToken}`))) throw saleError('ADMIN_REQUIRED');
}

const SaleParams = Type.Object({ saleId: Type.String({ pattern: SALE_ID_PATTERN }) });

/** What every answer that shows a sale's catalog documents (the admin answers add to it). */
const CatalogFields = {
  id: Type.String(),
  title: Type.String(),
  starts_at: Type.Integer(),
  ends_at: Type.Integer(),
  products: Type.Array(
    Type.Object(
      { sku: Type.String(), title: Type.String(), price: Type.Integer(), limit_per_shopper: Type.Integer() },
      { additionalProperties: true },
    ),
  ),
};

/** A Redis failure as the shopper or marketer sees it; our own coded errors pass through. */
const store = <T>(p: Promise<T>) =>
  p.catch((error) => {
    throw error?.code && error.statusCode ? error : saleError('STORE_UNAVAILABLE');
  });

export const saleRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  // The marketer's routes in a plugin of their own, whose onRequest hook checks the admin token before
  // fastify parses and validates the body: a caller without the token learns nothing about the schema.
  await app.register(async (admin) => {
    admin.addHook('onRequest', async (request) => requireAdmin(request, sc.settings.adminToken));
    await admin.register(adminRoutes, { sc });
  });
  await app.register(catalogRoutes, { sc });
};

const adminRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  app.post(
    '/admin/sales',
    {
      schema: {
        tags: ['admin'],
        summary: 'Create a sale and load its stock',
        body: SaleDefinition,
        security: [{ AdminToken: [] }],
        response: {
          201: Type.Object(CatalogFields, { additionalProperties: true, description: 'The sale as created: its catalog' }),
        },
        errorStatuses: [409, 503],
      },
    },
    async (request, reply) => {
      const def = request.body;
      const result = await store(
        createSale(sc.redis, sc.settings.activeSalesKey, def, sc.settings.admissionRatePerSecond).catch((error) => {
          // Redis answered but refused a value (cjson cannot hold a lone UTF-16 surrogate): the definition's
          // fault, not an outage, and nothing was stored (see createSale).
          if (error instanceof ReplyError && /unicode/i.test(error.message)) {
            throw saleError('SALE_INVALID', 'A text field holds characters that cannot be stored (a lone UTF-16 surrogate).');
          }
          throw error;
        }),
      );
      if (!result.created) throw saleError('SALE_EXISTS');
      sc.catalog.forget(def.id);
      reply.code(201).send(result.catalog);
    },
  );

  app.get(
    '/admin/sales/:saleId',
    {
      schema: {
        tags: ['admin'],
        summary: 'A sale with its live stock ledger',
        params: SaleParams,
        security: [{ AdminToken: [] }],
        response: {
          200: Type.Object(
            { ...CatalogFields, status: Type.String(), ledger: Type.Object({}, { additionalProperties: true }) },
            { additionalProperties: true },
          ),
        },
        errorStatuses: [503],
      },
    },
    async (request) => {
      const { saleId } = request.params;
      const snapshot = await sc.catalog.require(saleId);
      const [status, ledger] = await store(Promise.all([saleStatus(sc.redis, saleId), readStockLedger(sc.redis, saleId)]));
      return { ...snapshot.catalog, status: status?.state ?? 'ended', follow_up_sale_id: status?.follow_up_sale_id ?? null, ledger };
    },
  );

  app.post(
    '/admin/sales/:saleId/end',
    {
      schema: {
        tags: ['admin'],
        summary: 'End a sale early',
        params: SaleParams,
        security: [{ AdminToken: [] }],
        response: { 200: Type.Object({ id: Type.String(), status: Type.Literal('ended') }) },
        errorStatuses: [503],
      },
    },
    async (request) => {
      const { saleId } = request.params;
      await sc.catalog.require(saleId);
      await store(sc.redis.hset(saleKeys(saleId).meta, 'status', 'ended', 'ended_at', Date.now()));
      return { id: saleId, status: 'ended' as const };
    },
  );
};

const catalogRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  app.get(
    '/sales/:saleId/catalog',
    {
      onRequest: shopperRouteLimits(sc.settings, ['address']),
      schema: {
        tags: ['shopper'],
        summary: 'The sale catalog (cacheable; ETag)',
        params: SaleParams,
        // Anyone may read it; a logged-in shopper's token gets the copy with that shopper's offer applied.
        security: [{}, { ShopperSession: [] }],
        handlerHeaders: Type.Object({
          'if-none-match': Type.Optional(Type.String({ description: 'The ETag of your copy: 304 when it is current.' })),
        }),
        response: {
          200: Type.Object(CatalogFields, { additionalProperties: true }),
          304: Type.Null({ description: 'Not modified: the copy named by If-None-Match is current.' }),
        },
        errorStatuses: [429, 503],
      },
    },
    async (request, reply) => {
      const { saleId } = request.params;
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
          // The offer shown: analytics counts "shown" from this page view.
          track(sc, shopper, saleId, null, { type: 'page_view', path: `/sales/${saleId}/catalog` }, { offer_id: offer.offer_id });
          return { ...snapshot.catalog, products, offer };
        }
      }
      reply.header('etag', snapshot.etag).header('cache-control', 'public, max-age=30, stale-while-revalidate=300');
      // No body at all: `null` would be serialized as "null" with its content-length, which a 304 must not have.
      if (request.headers['if-none-match'] === snapshot.etag) return reply.code(304).send(undefined as unknown as null);
      // The snapshot's JSON, made once (a string with a JSON content type is sent as is): the type names
      // the shape of the bytes.
      reply.type('application/json').send(snapshot.body as unknown as Catalog);
    },
  );

  // Live stock: tiny and short-lived, so a CDN can still absorb a spike of polls.
  const stockCache = new Map<string, { at: number; body: { sale_id: string; status: string; available: Record<string, number> } }>();
  app.get(
    '/sales/:saleId/stock',
    {
      onRequest: shopperRouteLimits(sc.settings, ['address']),
      schema: {
        tags: ['shopper'],
        summary: 'Units left per SKU (cached for one second)',
        params: SaleParams,
        response: {
          200: Type.Object({
            sale_id: Type.String(),
            status: Type.String({ description: 'scheduled, live or ended' }),
            available: Type.Record(Type.String(), Type.Integer()),
          }),
        },
        errorStatuses: [429, 503],
      },
    },
    async (request, reply) => {
      const { saleId } = request.params;
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
};

/** Units each shopper holds per SKU (`<user>|<sku>` → units), without the spent tickets and answers the same hash keeps. */
export async function readHoldings(redis: SaleRedis, saleId: string): Promise<Record<string, number>> {
  const all = await redis.hgetall(saleKeys(saleId).bought);
  const held: Record<string, number> = {};
  for (const [field, units] of Object.entries(all))
    if (!field.startsWith('ticket:') && !field.startsWith('idem:')) held[field] = Number(units);
  return held;
}
