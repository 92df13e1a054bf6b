// Rate limits of the lighter shopper routes: session, login, clickstream events, order reads, catalog and
// stock. The join and the payment take their tokens in Redis, inside their scripts (shared by every process,
// one round trip with the work itself); polls and purchases count in LocalBuckets below. These routes either
// touch no shared state at all (session, catalog snapshots) or are cheap reads, and a Redis call per request
// would cost them more than the work. So they are counted by @fastify/rate-limit in this process's memory:
// with N processes behind a load balancer a client gets up to N times the configured budget, which still
// bounds a flood per process, and none of these routes moves stock. A 429 carries our coded error and
// Retry-After (seconds until the window ends).
import rateLimit, { type CreateRateLimitOptions } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { type SaleSettings, sessionOfRequest } from './context.js';
import { saleError } from './errors.js';
import { GenerationalMap } from './generational-map.js';

const WINDOW_MS = 60_000;
// Counters each limit keeps (least recently seen dropped first): room for the addresses and shoppers of a
// spike within one window. With the plugin's default (5,000), a client cycling through that many addresses
// would push out the counters of its first ones and start them afresh. Each route's limit has a store of
// its own, and `cache` must be given to each.
const COUNTERS_PER_LIMIT = 50_000;

/** Registers the plugin (no limit of its own: each route asks for the ones it needs). */
export async function registerRateLimits(app: FastifyInstance): Promise<void> {
  await app.register(rateLimit, { global: false });
}

/** createRateLimit with the store size: the plugin reads `cache` from these options, its types omit it. */
function limiter(app: FastifyInstance, options: CreateRateLimitOptions) {
  return app.createRateLimit({ ...options, cache: COUNTERS_PER_LIMIT } as CreateRateLimitOptions);
}

export type LimitBy = 'address' | 'shopper';

/**
 * An onRequest hook that counts the request against the client address (IPv6 grouped by subnet, the
 * plugin's default key) and, when the request carries a valid session token, against that shopper (the
 * user id once logged in, else the session): 429 RATE_LIMITED when either budget of this route is spent.
 * Runs before the body is parsed, so a flood costs the server as little as possible.
 */
export function shopperRouteLimits(app: FastifyInstance, settings: SaleSettings, by: LimitBy[]): onRequestAsyncHookHandler {
  const limiters = by.map((kind) =>
    kind === 'address'
      ? limiter(app, { max: settings.addressRequestsPerMinute, timeWindow: WINDOW_MS })
      : limiter(app, {
          max: settings.shopperRequestsPerMinute,
          timeWindow: WINDOW_MS,
          // No session: nothing to count per shopper (the address budget still applies).
          keyGenerator: (request: FastifyRequest) => {
            const session = sessionOfRequest(request, settings);
            return session ? (session.userId ? `u:${session.userId}` : `s:${session.sessionId}`) : '';
          },
          allowList: (_request: FastifyRequest, key: string | number) => key === '',
        }),
  );
  return async (request) => {
    for (const limiter of limiters) {
      const result = await limiter(request);
      if (!result.isAllowed && result.isExceeded) throw saleError('RATE_LIMITED', undefined, result.ttl);
    }
  };
}

/**
 * Token buckets in this process's memory, with the same rate and burst as the shared ones in Redis: the
 * abuse limit of queue polls and purchases. A poll reads no shared state (it verifies a signed place and decides
 * from a per-process view of the sale), so a bucket in Redis would put back the one cost polling was rid of: a
 * durable write in the sale's hash slot per poll, serialized on one Redis core. A purchase needs a signed,
 * single-use admission ticket, so a flood without one is refused before Redis, and one ticket buys once: the
 * buckets in Redis only bounded how often a shopper re-ran the script, at the price of creating two keys per
 * purchase in the sale's slot. Per process, a client gets up to N times the budget from N processes; neither
 * route can take more stock or a better place that way, so that bound is enough.
 *
 * Bounded: two generations of `capacity / 2` buckets (GenerationalMap); a bucket not asked for during a whole
 * generation starts afresh (full).
 */
export class LocalBuckets {
  private readonly buckets: GenerationalMap<{ tokens: number; at: number }>;
  constructor(capacity = 200_000) {
    this.buckets = new GenerationalMap(capacity / 2);
  }

  /** When this key last asked for a token (taken or not), epoch ms; undefined when unknown here. */
  lastAsked(key: string): number | undefined {
    return this.buckets.get(key)?.at;
  }

  /** 0 when a token was taken, else the ms until one is available (nothing taken). */
  take(key: string, ratePerSecond: number, burst: number, now = Date.now()): number {
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: burst, at: now };
      this.buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) * ratePerSecond) / 1000);
      bucket.at = now;
    }
    if (bucket.tokens < 1) return Math.ceil(((1 - bucket.tokens) * 1000) / ratePerSecond);
    bucket.tokens -= 1;
    return 0;
  }
}
