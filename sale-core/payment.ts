// The payment window. POST /orders/:id/pay is a simulated provider: approve (default) or decline.
// Paying is idempotent (a paid order answers "paid" again). Unpaid reservations expire and their units
// go back to stock exactly once (the expiry script only acts on an order still 'reserved'). A payment
// that arrives after expiry takes a unit back atomically if one is free, or is refused: never oversold.
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { newEventId } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { counter } from '../common/metrics.js';
import { requireShopper, type SaleContext, shopperContext } from './context.js';
import { isSaleErrorCode, saleError } from './errors.js';
import { saleIdOfOrder, saleKeys } from './keys.js';
import type { SaleRedis } from './scripts.js';

const expiredTotal = counter({ name: 'flashsale_orders_expired_total', help: 'Reservations whose payment window closed unpaid.' });
const paidTotal = counter({
  name: 'flashsale_orders_paid_total',
  help: 'Orders paid, by whether a unit had to be taken back.',
  labelNames: ['late'],
});

export type PayResult =
  | { status: 'paid'; reacquired: boolean; alreadyPaid: boolean }
  | { status: 'refused'; code: 'ORDER_NOT_FOUND' | 'ORDER_EXPIRED' };

export async function payOrder(redis: SaleRedis, orderId: string, userId: string): Promise<PayResult> {
  const saleId = saleIdOfOrder(orderId);
  if (!saleId) return { status: 'refused', code: 'ORDER_NOT_FOUND' };
  const k = saleKeys(saleId);
  const now = Date.now();
  const [outcome, a, b] = await redis.payOrder(
    k.order(orderId),
    k.stock,
    k.reserved,
    k.sold,
    k.bought,
    k.expiry,
    k.outbox,
    k.meta,
    userId,
    orderId,
    newEventId(now),
    newEventId(now),
  );
  if (outcome === 'paid') {
    if (Number(b) !== 1) paidTotal.inc({ late: Number(a) === 1 ? 'yes' : 'no' });
    return { status: 'paid', reacquired: Number(a) === 1, alreadyPaid: Number(b) === 1 };
  }
  return { status: 'refused', code: a === 'ORDER_EXPIRED' ? 'ORDER_EXPIRED' : 'ORDER_NOT_FOUND' };
}

/** Expires every reservation of one sale whose window has closed; returns how many it expired. */
export async function expireReservations(redis: SaleRedis, saleId: string, batch = 200): Promise<number> {
  const k = saleKeys(saleId);
  let total = 0;
  for (;;) {
    const due = await redis.zrangebyscore(k.expiry, '-inf', Date.now(), 'LIMIT', 0, batch);
    if (due.length === 0) return total;
    const pipeline = redis.pipeline();
    for (const orderId of due) {
      (pipeline as unknown as SaleRedis).expireOrder(
        k.order(orderId),
        k.stock,
        k.reserved,
        k.bought,
        k.expiry,
        k.outbox,
        orderId,
        newEventId(),
      );
    }
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
 * nothing after the end, so nothing new can enter its outbox.)
 */
async function retireIfDone(redis: SaleRedis, activeSalesKey: string, saleId: string): Promise<void> {
  const k = saleKeys(saleId);
  const [status, endsAt] = await redis.hmget(k.meta, 'status', 'ends_at');
  // No meta yet means the sale is being created (it joins the set first): keep it.
  if (status === null || !(status === 'ended' || Date.now() >= Number(endsAt))) return;
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

export function registerOrderRoutes(app: FastifyInstance, sc: SaleContext): void {
  app.get(
    '/orders/:orderId',
    { schema: { tags: ['shopper'], summary: 'Your order and its status', params: OrderParams } },
    async (request) => {
      const { orderId } = request.params as { orderId: string };
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
        sku: o.sku,
        qty: Number(o.qty),
        price: Number(o.price),
        status: o.status,
        expires_at: Number(o.expires_at),
        offer_id: o.offer_id || null,
        paid_at: o.paid_at ? Number(o.paid_at) : null,
      };
    },
  );

  app.post(
    '/orders/:orderId/pay',
    {
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
      },
    },
    async (request) => {
      const { orderId } = request.params as { orderId: string };
      const body = (request.body ?? {}) as { outcome?: 'approve' | 'decline' };
      const shopper = shopperContext(request, sc.settings)!;
      const userId = requireShopper(shopper);
      const saleId = saleIdOfOrder(orderId);
      if (!saleId) throw saleError('ORDER_NOT_FOUND');
      const k = saleKeys(saleId);
      const wait = await sc.redis
        .takeTokens(
          k.rateByIp(shopper.ipHash),
          k.rateByShopper(userId),
          sc.settings.ipRatePerSecond,
          sc.settings.ipBurst,
          sc.settings.shopperRatePerSecond,
          sc.settings.shopperBurst,
        )
        .catch(() => {
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
      if (result.status === 'refused') throw saleError(isSaleErrorCode(result.code) ? result.code : 'ORDER_NOT_FOUND');
      sc.relay.nudge();
      return { order_id: orderId, status: 'paid', late_reacquired: result.reacquired, already_paid: result.alreadyPaid };
    },
  );
}
