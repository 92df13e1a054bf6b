// The waiting room. Joining (POST) is the one Redis step of a waiting shopper: the join script assigns the
// place once and reads the shopper's offer, and the shopper gets the place signed (a position token: sale,
// shopper, place, issue time, and a priority or early-access offer). Polling (GET, with the token in
// X-Position-Token) verifies the signature and decides in-process: positions are admitted at the sale's
// admission rate from its start (burst first), arithmetic on the sale's meta, and the units left come from
// a per-process view of the sale refreshed by one Redis read per sale every few hundred ms (SaleViews).
// So a poll costs Redis nothing, and no number of waiting shoppers serializes on the sale's hash slot. Once the
// units are gone, a join is answered from that view too ("sold out", and when a held unit may come back). A poll
// costs the process little too: a token is verified once and remembered (VerifiedPlaces), the view in memory
// answers without a promise, and the answer does not echo the token the shopper sent.
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
import { GenerationalMap } from './generational-map.js';
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
  position_token: Type.Optional(
    Type.String({
      description: 'your signed place, from the join (a poll does not repeat it): send it as X-Position-Token when you poll (GET)',
    }),
  ),
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
    return this.peek(saleId, now) ?? this.refresh(saleId);
  }

  /**
   * The view when one young enough to answer with is at hand (a refresh started if it is older than
   * `refreshMs`), else undefined: what `get` answers at once, without a promise, for the poll's fast path.
   */
  peek(saleId: string, now = Date.now()): SaleView | undefined {
    const view = this.views.get(saleId);
    if (view === undefined) return undefined;
    const age = now - view.fetchedAt;
    if (age < this.refreshMs) return view;
    if (age >= this.staleMs) return undefined;
    this.refresh(saleId).catch(() => {}); // a failed refresh leaves the view to age; the next poll tries again
    return view;
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

/**
 * The position tokens this process has verified, by their text. A shopper polls with the same token every
 * few seconds, and verifying it (an HMAC, a base64 decode, a JSON parse) was the largest cost of a poll of
 * our own. A token's payload is immutable and has no expiry, so a token found here needs no new check of
 * its signature; its binding does, on every poll: the place must be of the sale in the path and of the
 * shopper of the session. Only verified tokens are kept (a forged one is checked, and refused, every time).
 * Bounded: two generations of `generation` tokens (GenerationalMap); a token not seen for a whole generation is
 * verified again.
 */
export class VerifiedPlaces {
  private readonly places: GenerationalMap<PositionToken>;
  constructor(
    private readonly secret: string,
    generation = 50_000,
  ) {
    this.places = new GenerationalMap(generation);
  }

  /** The place `token` signs for `userId` in sale `saleId`; null when forged, altered, or another sale's or shopper's. */
  check(token: string, saleId: string, userId: string): PositionToken | null {
    let place = this.places.get(token);
    if (place === undefined) {
      place = checkPositionToken(token, saleId, userId, this.secret) ?? undefined;
      if (place === undefined) return null;
      this.places.set(token, place);
    }
    return place.saleId === saleId && place.userId === userId ? place : null;
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
  const places = new VerifiedPlaces(sc.settings.tokenSecret);

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
      if (join) error.headers[POSITION_TOKEN_HEADER] = token;
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
      ...(join ? { position_token: token } : {}),
    } satisfies QueueAnswer;
  };

  // Once a sale's units are gone, nearly every join is a shopper to turn away (in a spike bench run, 49,661 of
  // 50,445 joins). Those are answered from this process's view of the sale, as polls are: no Redis command, where
  // the join script takes two rate tokens (a durable write in the sale's slot) to say the same. Their abuse limit
  // is then this process's, as a poll's. The view is read again every 250 ms while joins or polls come (and
  // answers at most 2 s old), so a unit that came back since is found at the shopper's retry (Retry-After is at
  // least a second, and spread over ten, see soldOut). The refusal event has the
  // shopper's place when the request brings its position token (the script would have looked it up).
  const turnAwayBuckets = new LocalBuckets();
  const soldOutByView = (request: FastifyRequest, ctx: ShopperContext, userId: string, saleId: string, now: number) => {
    const view = views.peek(saleId, now);
    if (view === undefined) {
      views.get(saleId).catch(() => {}); // read for the joins to come; this one goes to the script
      return null;
    }
    const verdict = decideAdmission(view, { position: Number.MAX_SAFE_INTEGER }, now);
    if (verdict.outcome !== 'refused' || verdict.code !== 'SALE_SOLD_OUT') return null;
    const s = sc.settings;
    const wait = Math.max(
      turnAwayBuckets.take(`ip:${ctx.ipHash}`, s.ipRatePerSecond, s.ipBurst, now),
      turnAwayBuckets.take(`u:${userId}`, s.shopperRatePerSecond, s.shopperBurst, now),
    );
    if (wait > 0) return saleError('RATE_LIMITED', undefined, wait);
    const token = request.headers[POSITION_TOKEN_HEADER];
    const place = typeof token === 'string' && token !== '' ? places.check(token, saleId, userId) : null;
    refusedJoin(ctx, saleId, place?.position ?? null);
    return soldOut(verdict.retryMs);
  };

  /** A poll's abuse limits (in this process: see LocalBuckets, why not in Redis), then its verified place. */
  const placeOf = (request: FastifyRequest, ctx: ShopperContext, userId: string, saleId: string, now: number) => {
    const s = sc.settings;
    const wait = Math.max(
      pollBuckets.take(`ip:${ctx.ipHash}`, s.ipRatePerSecond, s.ipBurst, now),
      pollBuckets.take(`u:${userId}`, s.shopperRatePerSecond, s.shopperBurst, now),
    );
    if (wait > 0) throw saleError('RATE_LIMITED', undefined, wait);
    const token = request.headers[POSITION_TOKEN_HEADER];
    if (typeof token !== 'string' || token === '') throw saleError('QUEUE_NOT_JOINED');
    const place = places.check(token, saleId, userId);
    if (!place) throw saleError('QUEUE_TOKEN_INVALID');
    return { place, token };
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
      const turnedAway = soldOutByView(request, ctx, userId, saleId, Date.now());
      if (turnedAway) throw turnedAway;
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
    // Not async: a poll answered from the view in memory (the common case, the view is refreshed every
    // 250 ms) is decided and sent without a promise; only a poll that must wait for Redis (the sale not
    // seen yet, or its view too old) goes the async way.
    (request) => {
      const { saleId } = request.params;
      const ctx = shopperContext(request, sc.settings)!;
      const userId = requireShopper(ctx);
      const now = Date.now();
      // A view that knows the sale: it exists, so it has a catalog (the create script writes both at once).
      const view = views.peek(saleId, now);
      if (view !== undefined && view.status !== '') {
        const { place, token } = placeOf(request, ctx, userId, saleId, now);
        return answer(request, ctx, place, token, decideAdmission(view, place, now), false);
      }
      return (async () => {
        await sc.catalog.require(saleId);
        const { place, token } = placeOf(request, ctx, userId, saleId, Date.now());
        let view: SaleView;
        try {
          view = await views.get(saleId);
        } catch {
          throw saleError('STORE_UNAVAILABLE');
        }
        return answer(request, ctx, place, token, decideAdmission(view, place, Date.now()), false);
      })();
    },
  );
};
