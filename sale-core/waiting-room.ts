// admitShopper: the waiting room. Each shopper gets a queue position once; positions are admitted at
// the sale's admission rate from its start (burst first), so arrivals beyond the rate wait instead of
// hammering the purchase path. Admitted shoppers get a signed, expiring, single-use admission ticket.
// Shoppers still waiting behind more shoppers than there are units left are told "sold out" at once.
// Offers: 'priority' skips the queue once the sale starts; 'early_access' admits before the start.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import Type from 'typebox';
import { requireShopper, type SaleContext, shopperContext, ticketSession } from './context.js';
import { isSaleErrorCode, saleError, soldOut } from './errors.js';
import { SALE_ID_PATTERN, saleKeys } from './keys.js';
import { issueTicket } from './tokens.js';
import { track } from './track.js';

const QueueAnswer = Type.Object({
  status: Type.Union([Type.Literal('admitted'), Type.Literal('waiting')]),
  position: Type.Integer(),
  ahead: Type.Optional(Type.Integer({ description: 'shoppers still waiting in front of you' })),
  retry_after_ms: Type.Optional(Type.Integer({ description: 'poll again after this long' })),
  ticket: Type.Optional(Type.String({ description: 'admission ticket for one purchase' })),
  ticket_expires_at: Type.Optional(Type.Integer()),
});

export function registerWaitingRoomRoutes(app: FastifyInstance, sc: SaleContext): void {
  const handler = (join: boolean) => async (request: FastifyRequest) => {
    const { saleId } = request.params as { saleId: string };
    const ctx = shopperContext(request, sc.settings)!;
    const userId = requireShopper(ctx);
    await sc.catalog.require(saleId);
    const k = saleKeys(saleId);
    const s = sc.settings;
    let reply: (string | number | null)[];
    try {
      reply = await sc.redis.admitShopper(
        k.meta,
        k.queue,
        k.queueCounter,
        k.stock,
        k.offer(userId),
        k.rateByIp(ctx.ipHash),
        k.rateByShopper(userId),
        k.expiry,
        userId,
        join ? 1 : 0,
        s.ipRatePerSecond,
        s.ipBurst,
        s.shopperRatePerSecond,
        s.shopperBurst,
      );
    } catch {
      throw saleError('STORE_UNAVAILABLE');
    }
    const [outcome, a, b, c, d] = reply;
    if (outcome === 'err') {
      const code = String(a);
      if (!isSaleErrorCode(code)) throw saleError('STORE_UNAVAILABLE');
      if (code === 'SALE_SOLD_OUT') throw soldOut(Number(b));
      throw saleError(code, undefined, code === 'RATE_LIMITED' ? Number(b) : undefined);
    }
    const position = Number(a);
    if (outcome === 'admitted') {
      if (Number(b) === 1) track(sc, ctx, saleId, null, { type: 'queue_joined', position });
      const expiresAt = Date.now() + s.ticketTtlSeconds * 1000;
      track(sc, ctx, saleId, null, { type: 'admitted' });
      return {
        status: 'admitted' as const,
        position,
        ticket: issueTicket({ saleId, userId, position, expiresAt, session: ticketSession(request, ctx) }, s.tokenSecret),
        ticket_expires_at: expiresAt,
      };
    }
    if (Number(d) === 1) track(sc, ctx, saleId, null, { type: 'queue_joined', position });
    return { status: 'waiting' as const, position, ahead: Number(b), retry_after_ms: Math.min(Number(c), 5000) };
  };

  const params = Type.Object({ saleId: Type.String({ pattern: SALE_ID_PATTERN }) });
  app.post(
    '/sales/:saleId/queue',
    { schema: { tags: ['shopper'], summary: 'Join the waiting room (or poll your place)', params, response: { 200: QueueAnswer } } },
    handler(true),
  );
  app.get(
    '/sales/:saleId/queue',
    {
      schema: {
        tags: ['shopper'],
        summary: 'Your place in the waiting room, or your admission ticket',
        params,
        response: { 200: QueueAnswer },
      },
    },
    handler(false),
  );
}
