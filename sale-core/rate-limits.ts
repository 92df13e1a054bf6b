// Rate limits of the lighter shopper routes: session, login, clickstream events, order reads, catalog and
// stock. The join and the payment take their tokens in Redis, inside their scripts (shared by every process,
// one round trip with the work itself); polls and purchases count in LocalBuckets below. These routes either
// touch no shared state at all (session, catalog snapshots) or are cheap reads, and a Redis call per request
// would cost them more than the work. So they are counted in this process's memory, per route, in windows of a
// minute: with N processes behind a load balancer a client gets up to N times the configured budget, which still
// bounds a flood per process, and none of these routes moves stock. A 429 carries our coded error and
// Retry-After (seconds until the window ends).
//
// The counting is ours, not @fastify/rate-limit's (which these routes used before): its asynchronous hook, key
// generator and store cost the catalog's 304 a fifth of its CPU, ~6 µs of ~35 per request, and made it the one
// light route clearly slower than the bare fastify yardstick under a spike (bench/README.md, "The spike").
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import { addressGroup } from './client-address.js';
import { type SaleSettings, sessionOfRequest } from './context.js';
import { saleError } from './errors.js';
import { GenerationalMap } from './generational-map.js';

const WINDOW_MS = 60_000;
// Counters each limit keeps: room for the addresses and shoppers of a spike within one window. A client that
// cycles through more addresses than that only gets fresh counters for addresses it no longer uses.
const COUNTERS_PER_LIMIT = 50_000;

/**
 * Requests per key in fixed windows, in this process's memory: a key's window starts at its first request and
 * lasts `windowMs`; the request that goes over `max` within it is refused until the window ends. Bounded by
 * two generations of counters (GenerationalMap): a key not seen for a whole generation starts afresh.
 */
export class RequestWindows {
  private readonly windows: GenerationalMap<{ count: number; endsAt: number }>;
  constructor(
    private readonly max: number,
    private readonly windowMs = WINDOW_MS,
    counters = COUNTERS_PER_LIMIT,
  ) {
    this.windows = new GenerationalMap(counters);
  }

  /** Counts a request: 0 when it is within the budget, else the ms until the key's window ends. */
  count(key: string, now = Date.now()): number {
    let window = this.windows.get(key);
    if (window === undefined || now >= window.endsAt) {
      window = { count: 0, endsAt: now + this.windowMs };
      this.windows.set(key, window);
    }
    window.count += 1;
    return window.count > this.max ? window.endsAt - now : 0;
  }
}

export type LimitBy = 'address' | 'shopper';

/**
 * An onRequest hook that counts the request against the client address (IPv6 by its /64) and, when the request
 * carries a valid session token, against that shopper (the user id once logged in, else the session): 429
 * RATE_LIMITED when either budget of this route is spent. Runs before the body is parsed, so a flood costs the
 * server as little as possible; a callback hook, not an async one, since it runs on every request of the route.
 */
export function shopperRouteLimits(settings: SaleSettings, by: LimitBy[]): onRequestHookHandler {
  const byAddress = by.includes('address') ? new RequestWindows(settings.addressRequestsPerMinute) : null;
  const byShopper = by.includes('shopper') ? new RequestWindows(settings.shopperRequestsPerMinute) : null;
  return (request: FastifyRequest, _reply: FastifyReply, done: (error?: Error) => void) => {
    const now = Date.now();
    let wait = byAddress ? byAddress.count(addressGroup(request.ip), now) : 0;
    if (wait === 0 && byShopper) {
      // No session: nothing to count per shopper (the address budget still applies).
      const session = sessionOfRequest(request, settings);
      if (session) wait = byShopper.count(session.userId ? `u:${session.userId}` : `s:${session.sessionId}`, now);
    }
    done(wait === 0 ? undefined : saleError('RATE_LIMITED', undefined, wait));
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
