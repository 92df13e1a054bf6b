// reserveUnit: the purchase. It needs an admission ticket and an Idempotency-Key; one Lua script then (run
// for the purchases that arrive together, see purchase-batches.ts), atomically for each, checks the sale is
// live, the shopper under the limit and stock left, decrements stock, records the reservation with its
// payment deadline, counts the shopper, and appends order_reserved to the sale's outbox (see scripts.ts).
// The shopper gets 202 with the order id; a replay of the same key returns the same answer, even after the
// ticket was spent.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { counter } from '../common/metrics.js';
import { envelope, requireShopper, type SaleContext, type ShopperContext, shopperContext, shopperOfTicket } from './context.js';
import { isSaleErrorCode, rejectReason, type SaleErrorCode, saleError, soldOut } from './errors.js';
import { newOrderEventId as newEventId } from './ids.js';
import { orderIdFor, SALE_ID_PATTERN, SKU_PATTERN } from './keys.js';
import { LocalBuckets } from './rate-limits.js';
import { answeredPurchase } from './scripts.js';
import { checkTicket, type TicketCheck } from './tokens.js';
import { track } from './track.js';

const outcomes = counter({ name: 'flashsale_purchase_outcomes_total', help: 'Purchase attempts by outcome.', labelNames: ['outcome'] });

const PurchaseBody = Type.Object(
  {
    sku: Type.String({ pattern: SKU_PATTERN }),
    qty: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 1 })),
    ticket: Type.String({ minLength: 10, maxLength: 2048, description: 'admission ticket from the queue' }),
  },
  { additionalProperties: false },
);

const OrderAnswer = Type.Object({
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
function rejectPurchase(
  sc: SaleContext,
  shopper: ShopperContext,
  saleId: string,
  sku: string,
  code: SaleErrorCode,
  retryAfterMs?: number,
  offerId: string | null = null,
  botSignals: string[] = [],
) {
  outcomes.inc({ outcome: code });
  track(
    sc,
    shopper,
    saleId,
    sku,
    { type: 'purchase_rejected', reason: rejectReason(code) },
    { offer_id: offerId, bot_signals: botSignals },
  );
  return code === 'SALE_SOLD_OUT' ? soldOut(retryAfterMs ?? 0) : saleError(code, undefined, retryAfterMs);
}

const IDEMPOTENCY_KEY = /^[A-Za-z0-9_-]{8,128}$/;

export interface ReserveRequest {
  saleId: string;
  userId: string;
  sku: string;
  qty: number;
  ticketId: string;
  idempotencyKey: string;
  shopper: ShopperContext;
  /** The shopper's previous attempt came less than 100 ms before (the inhuman_rate signal); see purchaseRoutes. */
  rapid?: boolean;
}

/** `offerId`: the shopper's offer for the SKU, as the script found it (null: none, or not read yet). */
export type ReserveResult =
  | { outcome: 'reserved' | 'replayed'; answer: string; botSignals: string[]; offerId: string | null }
  | { outcome: 'rejected'; code: SaleErrorCode; retryAfterMs?: number; offerId: string | null; botSignals: string[] };

/** The atomic reservation; the HTTP route and the race tests both call this. */
export async function reserveUnit(sc: SaleContext, r: ReserveRequest): Promise<ReserveResult> {
  // The order id is "<sale>.<the order_reserved event's UUIDv7>": unique, time-ordered, and the script
  // reads the event id back out of it.
  const reply = await sc.purchases.reserve({
    saleId: r.saleId,
    userId: r.userId,
    sku: r.sku,
    qty: r.qty,
    orderId: orderIdFor(r.saleId, newEventId()),
    ticketId: r.ticketId,
    idempotencyKey: r.idempotencyKey,
    sessionId: r.shopper.session.sessionId,
    envelopeJson: JSON.stringify(envelope(r.shopper, r.saleId, r.sku)).slice(0, -1),
    rapid: r.rapid === true,
  });
  const [outcome, a, b, c, d] = reply;
  const offerId = c ? String(c) : null;
  // The answer is JSON the script built (see scripts.ts): sent as is, not parsed and re-serialised.
  if (outcome === 'ok') return { outcome: 'reserved', answer: String(a), botSignals: b ? String(b).split(',') : [], offerId };
  if (outcome === 'replay') return { outcome: 'replayed', answer: String(a), botSignals: [], offerId };
  // Redis refused a command of this purchase alone (the rest of its batch went on): the route answers 503.
  if (outcome === 'failed') throw new Error(`the purchase script failed: ${String(a)}`);
  const code = String(a);
  if (!isSaleErrorCode(code)) throw new Error(`reserveUnit answered an unknown code ${code}`);
  return {
    outcome: 'rejected',
    code,
    retryAfterMs: code === 'SALE_SOLD_OUT' ? Number(b) : undefined,
    offerId,
    botSignals: d ? String(d).split(',') : [],
  };
}

// An attempt this soon after the shopper's previous one is faster than a person clicks (a bot signal).
const INHUMAN_MS = 100;

export const purchaseRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  // The purchase's abuse limits, per address and per shopper, in this process (see LocalBuckets: why not in
  // Redis). Taken before the ticket is looked at, so a flood of made-up tickets costs no Redis read either.
  const buckets = new LocalBuckets();
  app.post(
    '/sales/:saleId/purchase',
    {
      schema: {
        tags: ['shopper'],
        summary: 'Reserve units (needs an admission ticket and an Idempotency-Key header)',
        params: Type.Object({ saleId: Type.String({ pattern: SALE_ID_PATTERN }) }),
        body: PurchaseBody,
        security: [{ ShopperSession: [] }],
        handlerHeaders: Type.Object({
          'idempotency-key': Type.String({
            pattern: '^[A-Za-z0-9_-]{8,128}$',
            description: 'One key per purchase: a retry with the same key gets the same answer and never buys twice.',
          }),
        }),
        response: { 202: OrderAnswer },
        errorStatuses: [403, 409, 422, 429, 503],
      },
    },
    async (request, reply) => {
      // The attempt happened when the request arrived: its event is built after the script (it carries the
      // bot signals the script saw) but stamped with this, so a funnel orders attempt before reserved.
      const arrivedAt = Date.now();
      const { saleId } = request.params;
      const body = request.body;
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
      const s = sc.settings;
      const now = Date.now();
      const shopperKey = `u:${userId}`;
      const previous = buckets.lastAsked(shopperKey);
      const wait = Math.max(
        buckets.take(`ip:${shopper.ipHash}`, s.ipRatePerSecond, s.ipBurst, now),
        buckets.take(shopperKey, s.shopperRatePerSecond, s.shopperBurst, now),
      );
      if (wait > 0) throw rejectPurchase(sc, shopper, saleId, body.sku, 'RATE_LIMITED', wait);
      const ticket: TicketCheck = !early.ok || early.ticket.userId === userId ? early : { ok: false, code: 'TICKET_INVALID' };
      if (!ticket.ok) {
        // A retry of an answered purchase still gets its answer, even once the ticket has expired.
        const prior = await answeredPurchase(sc.redis, { saleId, userId, idempotencyKey: key }).catch(() => null);
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
          idempotencyKey: key,
          shopper,
          rapid: previous !== undefined && now - previous < INHUMAN_MS,
        });
      } catch (error) {
        track(sc, shopper, saleId, body.sku, { type: 'purchase_attempt', qty }, { ts: arrivedAt });
        request.log.warn({ err: error }, 'reserveUnit failed: Redis unavailable, or it refused a command of this purchase');
        throw rejectPurchase(sc, shopper, saleId, body.sku, 'STORE_UNAVAILABLE', 1000);
      }
      track(
        sc,
        shopper,
        saleId,
        body.sku,
        { type: 'purchase_attempt', qty },
        { bot_signals: result.botSignals, offer_id: result.offerId, ts: arrivedAt },
      );
      if (result.outcome === 'rejected')
        throw rejectPurchase(sc, shopper, saleId, body.sku, result.code, result.retryAfterMs, result.offerId, result.botSignals);
      (result.outcome === 'reserved' ? reservedOutcome : replayedOutcome).inc();
      // JSON the script built, in OrderAnswer's shape (see scripts.ts): a string with a JSON content type is
      // sent as is, so the type says what the bytes are, not what is passed.
      reply
        .code(202)
        .type('application/json; charset=utf-8')
        .send(result.answer as unknown as Type.Static<typeof OrderAnswer>);
    },
  );
};
