// The waiting room. Joining (POST) is the one Redis step of a waiting shopper: the join script assigns the
// place once and reads the shopper's offer, and the shopper gets the place signed (a position token: sale,
// shopper, place, issue time, and a priority or early-access offer). Polling (GET, with the token in
// X-Position-Token) verifies the signature and decides in-process: positions are admitted at the sale's
// admission rate from its start (burst first), arithmetic on the sale's meta, and the units left come from
// a per-process view of the sale refreshed by one Redis read per sale every few hundred ms (SaleViews).
// So a poll costs Redis nothing, and no number of waiting shoppers serializes on the sale's hash slot.
//
// Admitted shoppers get a signed, expiring, single-use admission ticket (single use is the purchase
// script's). Shoppers waiting behind more shoppers than there are units left are told "probably sold
// out" at once, with the time their place comes up (Retry-After): they keep the place, since those ahead
// may never buy. "Sold out" is final only when no unit is left or held. One address brings at most
// `queueAccountsPerAddress` accounts into a sale's queue (README: "Waiting room").
// Offers: 'priority' skips the queue once the sale starts; 'early_access' admits before the start.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import Type from 'typebox';
import { requireShopper, type SaleContext, type ShopperContext, shopperContext, ticketSession } from './context.js';
import { isSaleErrorCode, probablySoldOut, rejectReason, saleError, soldOut } from './errors.js';
import { SALE_ID_PATTERN } from './keys.js';
import { LocalBuckets } from './rate-limits.js';
import { joinQueueScript, type SaleRedis, saleStateScript } from './scripts.js';
import { checkPositionToken, issuePositionToken, issueTicket, type PositionToken } from './tokens.js';
import { track } from './track.js';

const QueueAnswer = Type.Object({
  status: Type.Union([Type.Literal('admitted'), Type.Literal('waiting')]),
  position: Type.Integer(),
  ahead: Type.Optional(Type.Integer({ description: 'shoppers still waiting in front of you' })),
  retry_after_ms: Type.Optional(Type.Integer({ description: 'poll again after this long' })),
  position_token: Type.Optional(Type.String({ description: 'your signed place: send it as X-Position-Token when you poll (GET)' })),
  ticket: Type.Optional(Type.String({ description: 'admission ticket for one purchase' })),
  ticket_expires_at: Type.Optional(Type.Integer()),
});
type QueueAnswer = Type.Static<typeof QueueAnswer>;

/** The request and answer header that carries the position token (the answer's also on an early "sold out"). */
export const POSITION_TOKEN_HEADER = 'x-position-token';

// Polls come back within this long even when the shopper's place is further off: the answer may change
// (the sale ended, units gone) and the shopper should hear it.
const MAX_POLL_MS = 5000;

/** What a poll knows of a sale: its meta (immutable but for the status) and the units left. */
export interface SaleView {
  /** '' when the sale does not exist. */
  status: string;
  startsAt: number;
  endsAt: number;
  admissionRate: number;
  admissionBurst: number;
  unitsLeft: number;
  /** When the first unit held by an unpaid order may come back (epoch ms); 0 when none is held. */
  heldUnitReturnsAt: number;
  fetchedAt: number;
}

/**
 * Each process's view of the sales its shoppers poll: one Redis read per sale every `refreshMs`, shared by
 * every poll (one read in flight per sale). A view up to `staleMs` old answers at once while the refresh
 * runs; an older one (or none) is waited for.
 */
export class SaleViews {
  private readonly views = new Map<string, SaleView>();
  private readonly refreshing = new Map<string, Promise<SaleView>>();
  constructor(
    private readonly redis: SaleRedis,
    private readonly refreshMs = 250,
    private readonly staleMs = 2000,
  ) {}

  async get(saleId: string, now = Date.now()): Promise<SaleView> {
    const view = this.views.get(saleId);
    const age = view ? now - view.fetchedAt : Number.POSITIVE_INFINITY;
    if (view && age < this.refreshMs) return view;
    const refresh = this.refresh(saleId);
    if (view && age < this.staleMs) {
      refresh.catch(() => {}); // a failed refresh leaves the view to age; the next poll tries again
      return view;
    }
    return refresh;
  }

  private refresh(saleId: string): Promise<SaleView> {
    let pending = this.refreshing.get(saleId);
    if (pending === undefined) {
      pending = saleStateScript(this.redis, saleId)
        .then(([status, startsAt, endsAt, rate, burst, unitsLeft, backInMs]) => {
          const fetchedAt = Date.now();
          const view: SaleView = {
            status: String(status),
            startsAt: Number(startsAt),
            endsAt: Number(endsAt),
            admissionRate: Number(rate),
            admissionBurst: Number(burst),
            unitsLeft: Number(unitsLeft),
            heldUnitReturnsAt: Number(backInMs) > 0 ? fetchedAt + Number(backInMs) : 0,
            fetchedAt,
          };
          if (this.views.size > 10_000) this.views.clear();
          this.views.set(saleId, view);
          return view;
        })
        .finally(() => this.refreshing.delete(saleId));
      this.refreshing.set(saleId, pending);
    }
    return pending;
  }
}

export type Admission =
  | { outcome: 'admitted' }
  | { outcome: 'waiting' | 'outnumbered'; ahead: number; etaMs: number }
  | { outcome: 'refused'; code: 'SALE_NOT_FOUND' | 'SALE_NOT_LIVE' | 'SALE_SOLD_OUT'; retryMs: number };

/**
 * The waiting room's decision for one place at `now`, from the sale's view alone: pure arithmetic, the same
 * in every process. Positions up to `burst + (now - start) × rate` are admitted; a priority offer skips the
 * queue once the sale starts, an early-access offer admits that long before the start.
 */
export function decideAdmission(view: SaleView, place: Pick<PositionToken, 'position' | 'offer'>, now: number): Admission {
  if (view.status === '') return { outcome: 'refused', code: 'SALE_NOT_FOUND', retryMs: 0 };
  if (view.status === 'ended' || now >= view.endsAt) return { outcome: 'refused', code: 'SALE_NOT_LIVE', retryMs: 0 };
  if (view.unitsLeft <= 0) {
    const retryMs = view.heldUnitReturnsAt > 0 ? Math.max(1, view.heldUnitReturnsAt - now) : 0;
    return { outcome: 'refused', code: 'SALE_SOLD_OUT', retryMs };
  }
  const { startsAt, admissionRate: rate, admissionBurst: burst } = view;
  const offer = place.offer;
  if (offer?.kind === 'priority' && now >= startsAt) return { outcome: 'admitted' };
  if (offer?.kind === 'early_access' && now >= startsAt - offer.earlyAccessMs) return { outcome: 'admitted' };
  const admittedUpTo = now >= startsAt ? burst + Math.floor(((now - startsAt) * rate) / 1000) : 0;
  if (place.position <= admittedUpTo) return { outcome: 'admitted' };
  // When the frontier reaches this position, capped at a day (an answer must stay a sane integer).
  const etaMs = Math.min(86_400_000, Math.ceil(((place.position - admittedUpTo) * 1000) / rate) + Math.max(0, startsAt - now));
  const ahead = place.position - admittedUpTo - 1;
  return { outcome: ahead >= view.unitsLeft ? 'outnumbered' : 'waiting', ahead, etaMs };
}

/** Poll again after this long: spread (±10 %, never past MAX_POLL_MS) so a crowd admitted together does not poll in step. */
function pollAfterMs(etaMs: number): number {
  const spread = 0.9 + Math.random() * 0.2;
  return Math.max(1, Math.min(MAX_POLL_MS, Math.round(Math.min(etaMs, MAX_POLL_MS) * spread)));
}

export const waitingRoomRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  const views = new SaleViews(sc.redis);
  const pollBuckets = new LocalBuckets();

  // A join turned away as sold out, final or not: the shopper missed out (analytics counts them).
  const refusedJoin = (ctx: ShopperContext, saleId: string, position: number | null) => {
    const event = { type: 'queue_refused' as const, reason: rejectReason('SALE_SOLD_OUT') };
    track(sc, ctx, saleId, null, position === null ? event : { ...event, position });
  };

  /** The answer to a place: a ticket, the wait, or an early "sold out" that keeps the place. */
  const answer = (
    request: FastifyRequest,
    ctx: ShopperContext,
    place: PositionToken,
    token: string,
    admission: Admission,
    join: boolean,
  ) => {
    const { saleId, userId, position } = place;
    const s = sc.settings;
    if (admission.outcome === 'refused') {
      if (admission.code === 'SALE_SOLD_OUT') {
        if (join) refusedJoin(ctx, saleId, position);
        throw soldOut(admission.retryMs);
      }
      throw saleError(admission.code);
    }
    if (admission.outcome === 'outnumbered') {
      if (join) refusedJoin(ctx, saleId, position);
      const error = probablySoldOut(admission.etaMs, admission.ahead);
      error.headers[POSITION_TOKEN_HEADER] = token;
      throw error;
    }
    if (admission.outcome === 'admitted') {
      const expiresAt = Date.now() + s.ticketTtlSeconds * 1000;
      track(sc, ctx, saleId, null, { type: 'admitted' }, { offer_id: place.offer?.offerId ?? null });
      return {
        status: 'admitted' as const,
        position,
        ticket: issueTicket({ saleId, userId, position, expiresAt, session: ticketSession(request, ctx) }, s.tokenSecret),
        ticket_expires_at: expiresAt,
      } satisfies QueueAnswer;
    }
    return {
      status: 'waiting' as const,
      position,
      ahead: admission.ahead,
      retry_after_ms: pollAfterMs(admission.etaMs),
      position_token: token,
    } satisfies QueueAnswer;
  };

  const params = Type.Object({ saleId: Type.String({ pattern: SALE_ID_PATTERN }) });
  app.post(
    '/sales/:saleId/queue',
    {
      schema: {
        tags: ['shopper'],
        summary: 'Join the waiting room (or poll your place)',
        params,
        security: [{ ShopperSession: [] }],
        response: { 200: QueueAnswer },
        errorStatuses: [403, 409, 429, 503],
      },
    },
    async (request, reply) => {
      const { saleId } = request.params;
      const ctx = shopperContext(request, sc.settings)!;
      const userId = requireShopper(ctx);
      await sc.catalog.require(saleId);
      let reply_: (string | number | null)[];
      try {
        reply_ = await joinQueueScript(sc.redis, {
          saleId,
          userId,
          ipHash: ctx.ipHash,
          limits: sc.settings,
          accountsPerAddress: sc.settings.queueAccountsPerAddress,
        });
      } catch {
        throw saleError('STORE_UNAVAILABLE');
      }
      const [outcome, a, b, c, d, e, f] = reply_;
      if (outcome !== 'joined') {
        const code = String(a);
        if (!isSaleErrorCode(code)) throw saleError('STORE_UNAVAILABLE');
        if (code === 'SALE_SOLD_OUT') {
          refusedJoin(ctx, saleId, c ? Number(c) : null);
          throw soldOut(Math.max(0, Number(b)));
        }
        throw saleError(code, undefined, code === 'RATE_LIMITED' ? Math.max(1, Number(b)) : undefined);
      }
      const position = Number(a);
      const offerId = d ? String(d) : null;
      const kind = String(e);
      const place: PositionToken = {
        saleId,
        userId,
        position,
        issuedAt: Date.now(),
        ...(offerId && (kind === 'price' || kind === 'priority' || kind === 'early_access')
          ? { offer: { offerId, kind, earlyAccessMs: Number(f) } }
          : {}),
      };
      if (Number(b) === 1) track(sc, ctx, saleId, null, { type: 'queue_joined', position }, { offer_id: offerId });
      const token = issuePositionToken(place, sc.settings.tokenSecret);
      let view: SaleView;
      try {
        view = await views.get(saleId);
      } catch {
        throw saleError('STORE_UNAVAILABLE');
      }
      // The script counted the units just now: fresher than the view.
      const admission = decideAdmission({ ...view, unitsLeft: Number(c) }, place, Date.now());
      const body = answer(request, ctx, place, token, admission, true);
      reply.header(POSITION_TOKEN_HEADER, token);
      return body;
    },
  );

  app.get(
    '/sales/:saleId/queue',
    {
      schema: {
        tags: ['shopper'],
        summary: 'Your place in the waiting room, or your admission ticket',
        params,
        security: [{ ShopperSession: [] }],
        handlerHeaders: Type.Object({
          [POSITION_TOKEN_HEADER]: Type.String({
            description: 'The position_token your join returned (also its X-Position-Token header).',
          }),
        }),
        response: { 200: QueueAnswer },
        errorStatuses: [403, 409, 429, 503],
      },
    },
    async (request, reply) => {
      const { saleId } = request.params;
      const ctx = shopperContext(request, sc.settings)!;
      const userId = requireShopper(ctx);
      await sc.catalog.require(saleId);
      const s = sc.settings;
      // Abuse limits of polls, in this process (see LocalBuckets: why not in Redis).
      const wait = Math.max(
        pollBuckets.take(`ip:${ctx.ipHash}`, s.ipRatePerSecond, s.ipBurst),
        pollBuckets.take(`u:${userId}`, s.shopperRatePerSecond, s.shopperBurst),
      );
      if (wait > 0) throw saleError('RATE_LIMITED', undefined, wait);
      const token = request.headers[POSITION_TOKEN_HEADER];
      if (typeof token !== 'string' || token === '') throw saleError('QUEUE_NOT_JOINED');
      const place = checkPositionToken(token, saleId, userId, s.tokenSecret);
      if (!place) throw saleError('QUEUE_TOKEN_INVALID');
      let view: SaleView;
      try {
        view = await views.get(saleId);
      } catch {
        throw saleError('STORE_UNAVAILABLE');
      }
      const body = answer(request, ctx, place, token, decideAdmission(view, place, Date.now()), false);
      reply.header(POSITION_TOKEN_HEADER, token);
      return body;
    },
  );
};
