// What an answered request leaves behind on every service: its count and its time in Prometheus, per route
// and status, and a log line only when it was slow.
//
// Why not fastify's access log (a line when a request arrives, another when it is answered): in a flash sale's
// spike those two lines cost a catalog 304 more CPU than the route itself (bench/README.md, "Access log"), and
// every request an abuser sends, refused or not, would become log volume. The metrics keep what the lines told,
// in aggregate; ACCESS_LOG=all brings fastify's lines back when someone needs to follow single requests.
//
// Why counted here and not with prom-client's Counter and Histogram: their updates hash the label values and
// allocate on every call, which profiled at about a tenth of a catalog 304's CPU. A route's series are found
// once, when the route is added, and a request only adds to plain numbers; prom-client reads them at a scrape.
import type { FastifyInstance, FastifyReply, FastifyRequest, onResponseHookHandler } from 'fastify';
import { registry } from './metrics.js';

/** Upper bounds (seconds) of the time buckets: a shopper route answers in milliseconds; the spike targets a p99 under 50 ms. */
const BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** At most this many slow-request lines a second per service: a slow dependency must not become a flood of lines. */
export const SLOW_LINES_PER_SECOND = 10;

/** The requests of one method on one route (its pattern, or `unmatched`) of one service. */
class Series {
  readonly statuses = new Map<number, number>();
  /** Requests per bucket, not cumulative (the last slot: over the last bound). */
  readonly inBucket = new Array<number>(BOUNDS.length + 1).fill(0);
  seconds = 0;
  timed = 0;

  constructor(readonly labels: { service: string; method: string; route: string }) {}

  count(status: number): void {
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
  }

  time(seconds: number): void {
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]!) i++;
    this.inBucket[i]!++;
    this.seconds += seconds;
    this.timed++;
  }
}

const REQUESTS = 'flashsale_http_requests_total';
const DURATION = 'flashsale_http_request_duration_seconds';

/**
 * A metric as prom-client reads any metric (a name, a type and get()), its values made at a scrape. Registered once
 * per registry: a module loaded twice (tests) finds the first one's metric and shares its table.
 */
function scraped(name: string, type: 'counter' | 'histogram', help: string, values: (table: Map<string, Series>) => unknown[]) {
  const existing = registry.getSingleMetric(name) as unknown as { table: Map<string, Series> } | undefined;
  if (existing) return existing.table;
  const table = new Map<string, Series>();
  const shape = { name, help, type, aggregator: 'sum' };
  registry.registerMetric({ ...shape, table, get: () => ({ ...shape, values: values(table) }), reset: () => {} } as never);
  return table;
}

const requestCounts = (table: Map<string, Series>) =>
  [...table.values()].flatMap((s) => [...s.statuses].map(([status, value]) => ({ labels: { ...s.labels, status }, value })));

const requestTimes = (table: Map<string, Series>) =>
  [...table.values()]
    .filter((s) => s.timed > 0)
    .flatMap((s) => {
      let cumulative = 0;
      const buckets = BOUNDS.map((le, i) => {
        cumulative += s.inBucket[i]!;
        return { labels: { ...s.labels, le }, value: cumulative, metricName: `${DURATION}_bucket` };
      });
      return [
        ...buckets,
        { labels: { ...s.labels, le: '+Inf' }, value: s.timed, metricName: `${DURATION}_bucket` },
        { labels: s.labels, value: s.seconds, metricName: `${DURATION}_sum` },
        { labels: s.labels, value: s.timed, metricName: `${DURATION}_count` },
      ];
    });

// One table per process, shared by its services (main.ts runs several), each series labelled with its service.
const table = scraped(
  REQUESTS,
  'counter',
  'Answered HTTP requests by service, method, route (its pattern; `unmatched` for none) and status.',
  requestCounts,
);
scraped(DURATION, 'histogram', 'From a request’s arrival to its answer, by service, method and route.', () => requestTimes(table));

function seriesOf(service: string, method: string, route: string): Series {
  const key = `${service} ${method} ${route}`;
  let s = table.get(key);
  if (s === undefined) {
    s = new Series({ service, method, route });
    table.set(key, s);
  }
  return s;
}

// Answers that are streams (server-sent events): how long one stayed open is not how long a request took.
const streams = new WeakSet<object>();

/** Says this answer is a stream: counted, but neither timed nor logged as slow when it ends. */
export function answeredAsStream(reply: FastifyReply): void {
  streams.add(reply.raw);
}

export interface RequestRecordOptions {
  /** The service's name, the `service` label. */
  service: string;
  /** A request answered after this long gets a warning line (unless fastify logs every request). */
  slowMs: number;
  /** fastify logs every request itself (ACCESS_LOG=all): no slow lines of ours on top. */
  fastifyLogsAll: boolean;
}

/**
 * Counts and times every request of `app`'s routes, and logs the slow ones. Returns `unmatched`, for the hook that
 * refuses a request no route matches (it never reaches a route's hooks): counted by status, not timed.
 */
export function recordRequests(app: FastifyInstance, options: RequestRecordOptions): { unmatched(method: string, status: number): void } {
  let windowStart = 0;
  let linesInWindow = 0;
  let skipped = 0;

  const logSlow = (request: FastifyRequest, reply: FastifyReply, route: string, elapsedMs: number) => {
    const now = Date.now();
    if (now - windowStart >= 1000) {
      windowStart = now;
      linesInWindow = 0;
    }
    if (linesInWindow >= SLOW_LINES_PER_SECOND) {
      skipped++;
      return;
    }
    linesInWindow++;
    // The path without its query: a query may carry what does not belong in a log.
    request.log.warn(
      {
        method: request.method,
        route,
        path: request.url.split('?')[0],
        statusCode: reply.statusCode,
        responseTimeMs: Math.round(elapsedMs),
        ...(skipped > 0 ? { slowNotLogged: skipped } : {}),
      },
      'slow request',
    );
    skipped = 0;
  };

  // A hook of each route's own, holding the route's series per method: found once, when the route is added.
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const byMethod = new Map(methods.map((m) => [m.toUpperCase(), seriesOf(options.service, m.toUpperCase(), route.url)]));
    const record: onResponseHookHandler = (request, reply, done) => {
      const elapsedMs = reply.elapsedTime;
      const s = byMethod.get(request.method) ?? seriesOf(options.service, request.method, route.url);
      s.count(reply.statusCode);
      if (streams.has(reply.raw)) return done();
      s.time(elapsedMs / 1000);
      if (elapsedMs >= options.slowMs && !options.fastifyLogsAll) logSlow(request, reply, route.url, elapsedMs);
      done();
    };
    const own = route.onResponse;
    route.onResponse = own === undefined ? [record] : [...(Array.isArray(own) ? own : [own]), record];
  });

  return { unmatched: (method, status) => seriesOf(options.service, method, 'unmatched').count(status) };
}
