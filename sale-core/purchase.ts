// reserveUnit: the purchase. It needs an admission ticket and an Idempotency-Key; one Lua script then,
// atomically, checks the sale is live, the shopper under the limit and stock left, decrements stock,
// records the reservation with its payment deadline, counts the shopper, and appends order_reserved to
// the sale's outbox (see scripts.ts). The shopper gets 202 with the order id; a replay of the same
// key returns the same answer, even after the ticket was spent.
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { counter } from '../common/metrics.js';
import {
  envelope,
  requireShopper,
  type SaleContext,
  type SaleSettings,
  type ShopperContext,
  shopperContext,
  shopperOfTicket,
} from './context.js';
import { isSaleErrorCode, type SaleErrorCode, saleError, soldOut } from './errors.js';
import { newOrderEventId as newEventId } from './ids.js';
import { orderIdFor, SALE_ID_PATTERN, SKU_PATTERN, saleKeys } from './keys.js';
import { checkTicket, type TicketCheck } from './tokens.js';
import { track } from './track.js';

const outcomes = counter({ name: 'flashsale_purchase_outcomes_total', help: 'Purchase attempts by outcome.', labelNames: ['outcome'] });

export const PurchaseBody = Type.Object(
  {
    sku: Type.String({ pattern: SKU_PATTERN }),
    qty: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 1 })),
    ticket: Type.String({ minLength: 10, maxLength: 2048, description: 'admission ticket from the queue' }),
  },
  { additionalProperties: false },
);

export const OrderAnswer = Type.Object({
  order_id: Type.String(),
  status: Type.String(),
  sku: Type.String(),
  qty: Type.Integer(),
  price: Type.Integer({ description: 'cents per unit, after any offer' }),
  expires_at: Type.Integer({ description: 'pay before this (epoch ms)' }),
  offer_id: Type.Union([Type.String(), Type.Null()]),
});

// Bound once: looking a label set up costs a hash of the labels on every purchase.
const reservedOutcome = outcomes.labels('reserved');
const replayedOutcome = outcomes.labels('replayed');

/** Counts and records a refused purchase; returns the error to throw at the shopper. */
function rejectPurchase(sc: SaleContext, shopper: ShopperContext, saleId: string, sku: string, code: SaleErrorCode, retryAfterMs?: number) {
  outcomes.inc({ outcome: code });
  track(sc, shopper, saleId, sku, { type: 'purchase_rejected', reason: code });
  return code === 'SALE_SOLD_OUT' ? soldOut(retryAfterMs ?? 0) : saleError(code, undefined, retryAfterMs);
}

const IDEMPOTENCY_KEY = /^[A-Za-z0-9_-]{8,128}$/;

export interface ReserveRequest {
  saleId: string;
  userId: string;
  sku: string;
  qty: number;
  ticketId: string;
  ticketExpiresAt: number;
  idempotencyKey: string;
  shopper: ShopperContext;
}

export type ReserveResult =
  | { outcome: 'reserved' | 'replayed'; answer: string; botSignals: string[] }
  | { outcome: 'rejected'; code: SaleErrorCode; retryAfterMs?: number };

// The settings the purchase script needs, as its one `limits` argument (see scripts.ts), built once per
// settings object.
const limitsArgument = new WeakMap<SaleSettings, string>();
function scriptLimits(s: SaleSettings): string {
  let arg = limitsArgument.get(s);
  if (arg === undefined) {
    arg = [s.ipRatePerSecond, s.ipBurst, s.shopperRatePerSecond, s.shopperBurst, s.idempotencyTtlMs].map((n) => Math.trunc(n)).join(' ');
    limitsArgument.set(s, arg);
  }
  return arg;
}

/** The atomic reservation; the HTTP route and the race tests both call this. */
export async function reserveUnit(sc: SaleContext, r: ReserveRequest): Promise<ReserveResult> {
  const k = saleKeys(r.saleId);
  const s = sc.settings;
  // The order id is "<sale>.<the order_reserved event's UUIDv7>": unique, time-ordered, and the script
  // reads the event id back out of it.
  const orderId = orderIdFor(r.saleId, newEventId());
  const reply = await sc.redis.reserveUnit(
    k.meta,
    k.stock,
    k.reserved,
    k.bought,
    k.idempotency(r.userId, r.idempotencyKey),
    k.ticketUsed(r.ticketId),
    k.order(orderId),
    k.expiry,
    k.outbox,
    k.rateByIp(r.shopper.ipHash),
    k.rateByShopper(r.userId),
    k.offer(r.userId),
    k.viewed,
    r.userId,
    r.sku,
    r.qty,
    orderId,
    r.ticketExpiresAt,
    JSON.stringify(envelope(r.shopper, r.saleId, r.sku)).slice(0, -1), // the script appends the order's fields
    scriptLimits(s),
    r.shopper.session.sessionId,
  );
  const [outcome, a, b] = reply;
  // The answer is JSON the script built (see scripts.ts): sent as is, not parsed and re-serialised.
  if (outcome === 'ok') return { outcome: 'reserved', answer: String(a), botSignals: b ? String(b).split(',') : [] };
  if (outcome === 'replay') return { outcome: 'replayed', answer: String(a), botSignals: [] };
  const code = String(a);
  if (!isSaleErrorCode(code)) throw new Error(`reserveUnit answered an unknown code ${code}`);
  return { outcome: 'rejected', code, retryAfterMs: code === 'RATE_LIMITED' || code === 'SALE_SOLD_OUT' ? Number(b) : undefined };
}

export function registerPurchaseRoutes(app: FastifyInstance, sc: SaleContext): void {
  app.post(
    '/sales/:saleId/purchase',
    {
      schema: {
        tags: ['shopper'],
        summary: 'Reserve units (needs an admission ticket and an Idempotency-Key header)',
        params: Type.Object({ saleId: Type.String({ pattern: SALE_ID_PATTERN }) }),
        body: PurchaseBody,
        response: { 202: OrderAnswer },
      },
    },
    async (request, reply) => {
      const { saleId } = request.params as { saleId: string };
      const body = request.body as Type.Static<typeof PurchaseBody>;
      const qty = body.qty ?? 1;
      // The ticket first: when it names this request's session token, it is the shopper's identity too
      // (one signature check instead of two). Otherwise the session is verified as on every other route,
      // and the errors come in the same order as there.
      const early = checkTicket(body.ticket, saleId, null, sc.settings.tokenSecret);
      const bound = early.ok ? shopperOfTicket(request, early.ticket, sc.settings) : null;
      const shopper = bound ?? shopperContext(request, sc.settings)!;
      const userId = requireShopper(shopper);
      const key = request.headers['idempotency-key'];
      if (typeof key !== 'string' || !IDEMPOTENCY_KEY.test(key)) throw saleError('IDEMPOTENCY_KEY_REQUIRED');

      const { skus } = await sc.catalog.require(saleId);
      if (!skus.has(body.sku)) throw rejectPurchase(sc, shopper, saleId, body.sku, 'SKU_NOT_FOUND');
      const ticket: TicketCheck = !early.ok || early.ticket.userId === userId ? early : { ok: false, code: 'TICKET_INVALID' };
      if (!ticket.ok) {
        // A retry of an answered purchase still gets its answer, even once the ticket has expired.
        const prior = await sc.redis.get(saleKeys(saleId).idempotency(userId, key)).catch(() => null);
        if (prior?.startsWith(`${body.sku}|${qty}\n`)) return reply.code(202).send(JSON.parse(prior.slice(prior.indexOf('\n') + 1)));
        throw rejectPurchase(sc, shopper, saleId, body.sku, ticket.code);
      }

      let result: ReserveResult;
      try {
        result = await reserveUnit(sc, {
          saleId,
          userId,
          sku: body.sku,
          qty,
          ticketId: ticket.ticket.ticketId,
          ticketExpiresAt: ticket.ticket.expiresAt,
          idempotencyKey: key,
          shopper,
        });
      } catch (error) {
        track(sc, shopper, saleId, body.sku, { type: 'purchase_attempt', qty });
        request.log.warn({ err: error }, 'reserveUnit failed: Redis unavailable');
        throw rejectPurchase(sc, shopper, saleId, body.sku, 'STORE_UNAVAILABLE', 1000);
      }
      // The attempt is recorded after the script, so it carries the bot signals the script saw.
      track(
        sc,
        shopper,
        saleId,
        body.sku,
        { type: 'purchase_attempt', qty },
        { bot_signals: result.outcome === 'rejected' ? [] : result.botSignals },
      );
      if (result.outcome === 'rejected') throw rejectPurchase(sc, shopper, saleId, body.sku, result.code, result.retryAfterMs);
      (result.outcome === 'reserved' ? reservedOutcome : replayedOutcome).inc();
      reply.code(202).type('application/json; charset=utf-8').send(result.answer);
    },
  );
}
