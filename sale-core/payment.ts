// The payment window. POST /orders/:id/pay is a simulated provider: approve (default) or decline.
// Paying is idempotent (a paid order answers "paid" again). Unpaid reservations expire and their units
// go back to stock exactly once (the expiry script only acts on an order still 'reserved'). A payment
// that arrives after expiry takes a unit back atomically if one is free, or is refused: never oversold.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { newEventId } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { counter } from '../common/metrics.js';
import { requireShopper, type SaleContext, type SaleSettings, shopperContext } from './context.js';
import { saleError } from './errors.js';
import { saleIdOfOrder, saleKeys } from './keys.js';
import { shopperRouteLimits } from './rate-limits.js';
import { expireOrderScript, payOrderScript, type SaleRedis, takeTokensScript } from './scripts.js';

const expiredTotal = counter({ name: 'flashsale_orders_expired_total', help: 'Reservations whose payment window closed unpaid.' });
const paidTotal = counter({
  name: 'flashsale_orders_paid_total',
  help: 'Orders paid, by whether a unit had to be taken back.',
  labelNames: ['late'],
});

export type PayResult =
  | { status: 'paid'; reacquired: boolean; alreadyPaid: boolean }
  | { status: 'refused'; code: 'ORDER_NOT_FOUND' }
  | { status: 'refused'; code: 'ORDER_EXPIRED'; reason: LatePaymentRefusal };

/** Why a payment after the window could not take a unit back. */
export type LatePaymentRefusal = 'sale_ended' | 'unit_taken' | 'limit_reached';
const LATE_PAYMENT_REFUSALS: Record<LatePaymentRefusal, string> = {
  sale_ended: 'The sale has ended.',
  unit_taken: 'The unit went to another shopper.',
  limit_reached: 'You hold the most units of this product one shopper may buy.',
};

export async function payOrder(redis: SaleRedis, orderId: string, userId: string): Promise<PayResult> {
  const saleId = saleIdOfOrder(orderId);
  if (!saleId) return { status: 'refused', code: 'ORDER_NOT_FOUND' };
  const now = Date.now();
  const [outcome, a, b] = await payOrderScript(redis, {
    saleId,
    orderId,
    userId,
    paidEventId: newEventId(now),
    expiredEventId: newEventId(now),
  });
  if (outcome === 'paid') {
    if (Number(b) !== 1) paidTotal.inc({ late: Number(a) === 1 ? 'yes' : 'no' });
    return { status: 'paid', reacquired: Number(a) === 1, alreadyPaid: Number(b) === 1 };
  }
  if (a === 'ORDER_EXPIRED') return { status: 'refused', code: 'ORDER_EXPIRED', reason: String(b) as LatePaymentRefusal };
  return { status: 'refused', code: 'ORDER_NOT_FOUND' };
}

/**
 * One request's tokens from the sale's shared buckets of the client address and the shopper (the
 * takeTokens script): 0 when taken, else the ms until the first bucket that refused has one again.
 */
export async function takeShopperTokens(
  redis: SaleRedis,
  saleId: string,
  ipHash: string,
  userId: string,
  s: Pick<SaleSettings, 'ipRatePerSecond' | 'ipBurst' | 'shopperRatePerSecond' | 'shopperBurst'>,
): Promise<number> {
  return takeTokensScript(redis, { saleId, ipHash, userId, limits: s });
}

/** Expires every reservation of one sale whose window has closed; returns how many it expired. */
export async function expireReservations(redis: SaleRedis, saleId: string, batch = 200): Promise<number> {
  const k = saleKeys(saleId);
  let total = 0;
  for (;;) {
    const due = await redis.zrangebyscore(k.expiry, '-inf', Date.now(), 'LIMIT', 0, batch);
    if (due.length === 0) return total;
    const pipeline = redis.pipeline();
    for (const orderId of due) expireOrderScript(pipeline, { saleId, orderId, eventId: newEventId() });
    const results = (await pipeline.exec()) ?? [];
    let expired = 0;
    for (const [error, value] of results) if (!error && Number(value) === 1) expired++;
    total += expired;
    expiredTotal.inc(expired);
    // Orders whose window Redis's clock says is still open stay in the set: stop instead of spinning.
    if (expired === 0 || due.length < batch) return total;
  }
}

/**
 * A sale leaves the active set once it has ended, no reservation awaits payment or expiry, and its
 * outbox is empty: the relay and the sweeper then stop visiting it. (A late payment can still re-acquire
 * nothing after the end, so nothing new can enter its outbox.) So does the id a failed create left behind.
 */
async function retireIfDone(redis: SaleRedis, activeSalesKey: string, saleId: string): Promise<void> {
  const k = saleKeys(saleId);
  const [status, endsAt] = await redis.hmget(k.meta, 'status', 'ends_at');
  if (status === null) {
    // No meta: either the sale is being created (it joins the set first, under a marker) or its create
    // failed and left the id behind. Without meta a sale cannot have taken an order, so the leftover goes.
    if ((await redis.exists(k.creating)) === 0 && (await redis.xlen(k.outbox)) === 0) await redis.srem(activeSalesKey, saleId);
    return;
  }
  if (!(status === 'ended' || Date.now() >= Number(endsAt))) return;
  if ((await redis.zcard(k.expiry)) === 0 && (await redis.xlen(k.outbox)) === 0) await redis.srem(activeSalesKey, saleId);
}

/** Runs expireReservations over every active sale on an interval. */
export function startExpirySweeper(redis: SaleRedis, activeSalesKey: string, intervalMs: number, log: Logger): () => Promise<void> {
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const tick = async () => {
    try {
      for (const saleId of await redis.smembers(activeSalesKey)) {
        if (stopped) return;
        await expireReservations(redis, saleId);
        await retireIfDone(redis, activeSalesKey, saleId);
      }
    } catch (error) {
      log.warn({ err: error }, 'expiry sweep failed; will retry');
    }
  };
  const timer = setInterval(() => {
    running = running.then(tick);
  }, intervalMs);
  return async () => {
    stopped = true;
    clearInterval(timer);
    await running;
  };
}

const OrderParams = Type.Object({ orderId: Type.String({ minLength: 1, maxLength: 128 }) });

export const orderRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  app.get(
    '/orders/:orderId',
    {
      onRequest: shopperRouteLimits(sc.settings, ['address', 'shopper']),
      schema: {
        tags: ['shopper'],
        summary: 'Your order and its status',
        params: OrderParams,
        security: [{ ShopperSession: [] }],
        response: {
          200: Type.Object(
            {
              order_id: Type.String(),
              sale_id: Type.String(),
              sku: Type.String(),
              qty: Type.Integer(),
              price: Type.Integer({ description: 'cents per unit' }),
              status: Type.String({ description: 'reserved, paid or expired' }),
              expires_at: Type.Integer({ description: 'epoch ms' }),
              offer_id: Type.Union([Type.String(), Type.Null()]),
              paid_at: Type.Union([Type.Integer(), Type.Null()]),
            },
            { additionalProperties: true },
          ),
        },
        errorStatuses: [429, 503],
      },
    },
    async (request) => {
      const { orderId } = request.params;
      const userId = requireShopper(shopperContext(request, sc.settings)!);
      const saleId = saleIdOfOrder(orderId);
      if (!saleId) throw saleError('ORDER_NOT_FOUND');
      const o = await sc.redis.hgetall(saleKeys(saleId).order(orderId)).catch(() => {
        throw saleError('STORE_UNAVAILABLE');
      });
      if (!o.user || o.user !== userId) throw saleError('ORDER_NOT_FOUND');
      return {
        order_id: orderId,
        sale_id: saleId,
        sku: o.sku ?? '',
        qty: Number(o.qty),
        price: Number(o.price),
        status: o.status ?? '',
        expires_at: Number(o.expires_at),
        offer_id: o.offer_id || null,
        paid_at: o.paid_at ? Number(o.paid_at) : null,
      };
    },
  );

  app.post(
    '/orders/:orderId/pay',
    {
      // Per address before anything else; the shared per-address and per-shopper buckets in Redis follow.
      onRequest: shopperRouteLimits(sc.settings, ['address']),
      schema: {
        tags: ['shopper'],
        summary: 'Pay for a reservation (simulated provider; idempotent)',
        params: OrderParams,
        body: Type.Optional(
          Type.Object(
            { outcome: Type.Optional(Type.Union([Type.Literal('approve'), Type.Literal('decline')])) },
            { additionalProperties: false },
          ),
        ),
        security: [{ ShopperSession: [] }],
        response: {
          200: Type.Object(
            { order_id: Type.String(), status: Type.String(), late_reacquired: Type.Boolean(), already_paid: Type.Boolean() },
            { additionalProperties: true },
          ),
        },
        errorStatuses: [402, 409, 429, 503],
      },
    },
    async (request) => {
      const { orderId } = request.params;
      const body = request.body ?? {};
      const shopper = shopperContext(request, sc.settings)!;
      const userId = requireShopper(shopper);
      const saleId = saleIdOfOrder(orderId);
      if (!saleId) throw saleError('ORDER_NOT_FOUND');
      const k = saleKeys(saleId);
      const wait = await takeShopperTokens(sc.redis, saleId, shopper.ipHash, userId, sc.settings).catch(() => {
        throw saleError('STORE_UNAVAILABLE');
      });
      if (wait > 0) throw saleError('RATE_LIMITED', undefined, wait);
      if (body.outcome === 'decline') {
        const status = await sc.redis.hget(k.order(orderId), 'user');
        if (status !== userId) throw saleError('ORDER_NOT_FOUND');
        throw saleError('PAYMENT_DECLINED');
      }
      let result: PayResult;
      try {
        result = await payOrder(sc.redis, orderId, userId);
      } catch {
        throw saleError('STORE_UNAVAILABLE');
      }
      if (result.status === 'refused') {
        throw result.code === 'ORDER_EXPIRED'
          ? saleError('ORDER_EXPIRED', LATE_PAYMENT_REFUSALS[result.reason])
          : saleError('ORDER_NOT_FOUND');
      }
      sc.relay.nudge();
      return { order_id: orderId, status: 'paid', late_reacquired: result.reacquired, already_paid: result.alreadyPaid };
    },
  );
};
