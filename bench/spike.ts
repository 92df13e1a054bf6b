// The spike bench (issue 11): what a flash sale's crowd costs, route by route, next to the bare fastify route.
//
//   1. Side by side, closed loop, SPIKE_PHASE_MS each: the queue poll (GET with the signed place) and the
//      catalog with If-None-Match, on sale-core and on the bare route (bench/sale-servers.ts `ceiling`). Both
//      poll phases send the same request, a shopper's (session token and position token), so the two differ
//      only in what the server does with it; a third phase sends the bare route no headers (as this bench did).
//      Then a join of a sold-out sale on both (most joins of a spike are refused so; not a target).
//      The poll, catalog and sold-out join pairs run in SPIKE_SIDE_ROUNDS rounds: each ratio is the median of the rounds'.
//   2. The sustainable rate: short probes (SPIKE_PROBE_MS each) of the spike at a given arrival rate of
//      shoppers per second, doubling from SPIKE_SEARCH_FROM until a probe fails, then bisecting, at most
//      SPIKE_PROBES probes, then the highest rate that passed must pass again (up to SPIKE_CONFIRMS tries, the next
//      lower passed rate each time). A probe passes when every route's p99 is under SPIKE_P99_MS, every shopper got a
//      final answer and nothing was oversold. A probe sells all SPIKE_UNITS (the sell-out is the heaviest
//      second of a spike). SPIKE_RATE (or SPIKE_ARRIVAL_MS) fixes the rate: no search.
//   3. The spike at that rate: SPIKE_SHOPPERS shoppers arrive within SPIKE_SHOPPERS / rate seconds; each reads
//      the catalog (with If-None-Match when it has an ETag), opens a session, logs in, joins, polls at the
//      advised interval, buys once admitted, and pays or abandons; SPIKE_BOT_SHARE of them are bots (poll at
//      once).
//
// Per route: requests/s, p50/p99; per process (sale-core, Redis, this load generator): CPU µs per request; Redis
// commands per request (INFO commandstats deltas). Redis is a private server of the bench's own (same
// durability as the stack's: AOF, appendfsync always), so its CPU and command counts are sale-core's alone.
// Overall: time from the first arrival to the last shopper's final answer, units sold, oversold. Exits 1 when
// anything was oversold or a shopper got no final answer. Servers are processes of their own; loopback only;
// bounded.
//
//   npm run bench:spike     (the issue's spike: 50,000 shoppers, 500 units, at the rate the search finds)
//   SPIKE_ONLY=poll SPIKE_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=<dir>" npm run bench:spike   (profile a poll)
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { config } from '../common/config.js';
import { createKafka } from '../common/kafka.js';
import { issueSession } from '../sale-core/tokens.js';
import { cpuMs, createBenchTopics, inRoundOrder, medianOf, startSaleServer, stopProcess } from './bench-processes.js';

const SHOPPERS = Number(process.env.SPIKE_SHOPPERS ?? 50_000);
const UNITS = Number(process.env.SPIKE_UNITS ?? 500);
const BOT_SHARE = Number(process.env.SPIKE_BOT_SHARE ?? 0.05);
const PHASE_MS = Number(process.env.SPIKE_PHASE_MS ?? 5000);
const CONNECTIONS = Number(process.env.SPIKE_CONNECTIONS ?? 64);
// Rounds of the side-by-side pairs; each ratio is the median of the rounds' (why: bench-processes.ts, Rounds).
const SIDE_ROUNDS = Math.max(1, Number(process.env.SPIKE_SIDE_ROUNDS ?? 3));
const ADMISSION_RATE = Number(process.env.SPIKE_ADMISSION_RATE ?? 500);
// The arrival rate of the spike, shoppers per second: SPIKE_RATE, or SPIKE_SHOPPERS within SPIKE_ARRIVAL_MS;
// neither: the search finds it.
const FIXED_RATE = process.env.SPIKE_RATE
  ? Number(process.env.SPIKE_RATE)
  : process.env.SPIKE_ARRIVAL_MS
    ? (SHOPPERS * 1000) / Number(process.env.SPIKE_ARRIVAL_MS)
    : undefined;
const PROBE_MS = Number(process.env.SPIKE_PROBE_MS ?? 4000);
const PROBES = Number(process.env.SPIKE_PROBES ?? 7);
const SEARCH_FROM = Number(process.env.SPIKE_SEARCH_FROM ?? 250);
// Probes that confirm the highest rate passed (see the search).
const CONFIRMS = Number(process.env.SPIKE_CONFIRMS ?? 2);
const P99_MS = Number(process.env.SPIKE_P99_MS ?? 50);
// The longest the spike's arrivals may last (the whole bench should stay within a few minutes).
const MAX_ARRIVAL_MS = Number(process.env.SPIKE_MAX_ARRIVAL_MS ?? 150_000);
// What to run: `all` (default), `side` (the side-by-side phases only), `poll` (only the two poll phases, for
// profiling), `spike` (the rate search and the spike only).
const ONLY = process.env.SPIKE_ONLY ?? 'all';
if (!['all', 'side', 'poll', 'spike'].includes(ONLY)) throw new Error(`SPIKE_ONLY=${ONLY}: one of all, side, poll, spike`);
// Extra node arguments for the server processes, space-separated (`--cpu-prof --cpu-prof-dir=<dir>`).
const SERVER_NODE_ARGS = (process.env.SPIKE_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
const { tokenSecret, adminToken } = config().sale;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function startRedis(): Promise<{ url: string; child: ChildProcess; dir: string; client: Redis }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'spike-redis-'));
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'],
    { stdio: 'ignore' },
  );
  // The bench's Redis goes with the bench, however it ends.
  process.once('exit', () => child.kill('SIGKILL'));
  const deadline = Date.now() + 10_000;
  while (!(await listening(port))) {
    if (Date.now() > deadline) throw new Error('the bench Redis did not start');
    await sleep(100);
  }
  const client = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
  // Redis records every event (a command, an fsync of the AOF) slower than this: a latency of the spike's
  // routes that Redis caused shows up here (LATENCY LATEST, after each run).
  await client.config('SET', 'latency-monitor-threshold', '10');
  return { url: `redis://127.0.0.1:${port}`, child, dir, client };
}

/** Redis's slow events since the last call (event: latest and longest ms, count), then forgotten. */
async function redisStalls(redis: Redis): Promise<string> {
  const latest = (await redis.call('LATENCY', 'LATEST')) as [string, number, number, number][];
  await redis.call('LATENCY', 'RESET');
  return latest.length === 0
    ? 'none over 10 ms'
    : latest.map(([event, , last, max]) => `${event} max ${max} ms (latest ${last} ms)`).join(', ');
}

const startServer = (kind: string, args: string[], env: Record<string, string>) => startSaleServer(kind, args, env, SERVER_NODE_ARGS);

/** Total Redis command calls so far (INFO commandstats), and per command. */
async function commandCalls(redis: Redis): Promise<Map<string, number>> {
  const info = await redis.info('commandstats');
  const calls = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(match[1]!, Number(match[2]));
  return calls;
}

/** Latencies of one route, in ms. */
class Route {
  readonly ms: number[] = [];
  readonly statuses: Record<number, number> = {};
  record(status: number, ms: number) {
    this.ms.push(ms);
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
  }
  summary(seconds: number) {
    const sorted = Float64Array.from(this.ms).sort();
    const at = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : Number.NaN);
    return { requests: sorted.length, rps: Math.round(sorted.length / seconds), p50: at(0.5), p99: at(0.99), statuses: this.statuses };
  }
}

interface Costs {
  server: number;
  redis: number;
  loadgen: number;
  calls: Map<string, number>;
}

async function costs(serverPids: number[], redisPid: number, redis: Redis): Promise<Costs> {
  const usage = process.cpuUsage();
  return {
    server: serverPids.reduce((sum, pid) => sum + cpuMs(pid), 0),
    redis: cpuMs(redisPid),
    loadgen: (usage.user + usage.system) / 1000,
    calls: await commandCalls(redis),
  };
}

function perRequest(before: Costs, after: Costs, requests: number) {
  const n = Math.max(1, requests);
  let calls = 0;
  for (const [name, count] of after.calls) if (name !== 'info') calls += count - (before.calls.get(name) ?? 0);
  return {
    saleCoreUs: Math.round(((after.server - before.server) * 1000) / n),
    redisUs: Math.round(((after.redis - before.redis) * 1000) / n),
    loadgenUs: Math.round(((after.loadgen - before.loadgen) * 1000) / n),
    redisCommands: Number((calls / n).toFixed(3)),
  };
}

/** A closed loop of CONNECTIONS workers for PHASE_MS; `request(i)` makes the i-th request. */
type LoopRequest = { path: string; headers: Record<string, string>; method?: 'GET' | 'POST' };
async function closedLoop(pool: Pool, request: (i: number) => LoopRequest) {
  const route = new Route();
  const end = Date.now() + PHASE_MS;
  let i = 0;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (Date.now() < end) {
        const r = request(i++);
        const t0 = performance.now();
        const res = await pool.request({ method: r.method ?? 'GET', path: r.path, headers: r.headers });
        await res.body.dump();
        route.record(res.statusCode, performance.now() - t0);
      }
    }),
  );
  return route.summary((Date.now() - started) / 1000);
}

/** What one run of the spike (a probe, or the spike itself) gave. */
interface SpikeRun {
  shoppers: number;
  units: number;
  rate: number;
  routes: Map<string, Route>;
  outcomes: Record<string, number>;
  /** Shoppers left without a final answer (an error, the store away, a limit, polls that never ended). */
  unanswered: number;
  /** From the first arrival to the last shopper's final answer. */
  seconds: number;
  requests: number;
  cost: ReturnType<typeof perRequest>;
  sold: number;
  oversold: number;
  worst: { route: string; p99: number };
  /** The load generator's event-loop delay during the run (ms). */
  loadgenLoopMs: { p99: number; max: number };
  /** Redis's events slower than 10 ms during the run (LATENCY LATEST). */
  redisStalls: string;
  /** The seconds (since the first arrival) with the most answers over SPIKE_P99_MS. */
  slowSeconds: string[];
}

/** An outcome that is not a final answer: the shopper was left not knowing whether to buy or go. */
const unansweredOutcome = (what: string) =>
  what === 'error' || what === 'queue: gave up polling' || /STORE_UNAVAILABLE|RATE_LIMITED|INTERNAL|\b5\d\d\b/.test(what);

const passes = (run: SpikeRun) => run.unanswered === 0 && run.oversold === 0 && run.worst.p99 < P99_MS;

async function main() {
  const load0 = loadavg();
  console.log(
    `spike bench: ${SHOPPERS} shoppers, ${UNITS} units, admission ${ADMISSION_RATE}/s, ${BOT_SHARE * 100}% bots, ` +
      `${FIXED_RATE ? `${Math.round(FIXED_RATE)} shoppers/s (given)` : `rate searched (${PROBES} probes of ${PROBE_MS} ms at most, from ${SEARCH_FROM}/s)`}; ` +
      `side-by-side phases of ${PHASE_MS} ms on ${CONNECTIONS} connections`,
  );
  console.log(`load average before: ${load0.map((l) => l.toFixed(2)).join(' ')} (other tenants of the machine move every figure)`);
  const redis = await startRedis();
  const kafka = createKafka('spike-admin');
  const admin = kafka.admin();
  await admin.connect();
  const suffix = randomUUID().slice(0, 8);
  const topics = await createBenchTopics(admin, suffix);
  const servers: ChildProcess[] = [];
  const pools: Pool[] = [];
  const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');
  const loadNow = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
  try {
    const open = {
      REDIS_URL: redis.url,
      // One address brings the whole crowd: the per-address limits would (rightly) stop it.
      SALE_RATE_IP_PER_SECOND: '1000000',
      SALE_RATE_IP_BURST: '1000000',
      SALE_QUEUE_ACCOUNTS_PER_IP: '100000000',
      SALE_RATE_ADDRESS_PER_MINUTE: '100000000',
      SALE_RATE_SHOPPER_PER_SECOND: '1000000',
      SALE_RATE_SHOPPER_BURST: '1000000',
    };
    const ceiling = await startServer('ceiling', [], {});
    const sale = await startServer('sale-core', [topics.orders, topics.clickstream], open);
    servers.push(ceiling.child, sale.child);
    const bare = new Pool(ceiling.url, { connections: CONNECTIONS });
    const core = new Pool(sale.url, { connections: CONNECTIONS });
    pools.push(bare, core);
    const call = async (method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: unknown) => {
      const res = await core.request({
        method,
        path,
        headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.body.text();
      return { status: res.statusCode, headers: res.headers, json: text ? JSON.parse(text) : null };
    };
    const createSale = async (id: string, startsAt: number, units: number) => {
      const created = await call(
        'POST',
        '/admin/sales',
        { authorization: `Bearer ${adminToken}` },
        {
          id,
          title: 'Spike',
          starts_at: startsAt,
          ends_at: startsAt + 3_600_000,
          payment_window_minutes: 1,
          admission_rate_per_second: ADMISSION_RATE,
          admission_burst: 1,
          skus: [{ sku: 'SKU-1', title: 'Limited sneaker', price: 12_900, stock: units, limit_per_shopper: 1 }],
        },
      );
      if (created.status !== 201) throw new Error(`create ${id}: ${created.status} ${JSON.stringify(created.json)}`);
    };
    const bearer = (userId: string) =>
      `Bearer ${issueSession({ sessionId: randomUUID(), anonId: `anon-${userId}`, userId, expiresAt: Date.now() + 3_600_000 }, tokenSecret)}`;

    // ---- 1. side by side: polls and catalog reads.
    type SidePhase = ReturnType<Route['summary']> & ReturnType<typeof perRequest>;
    /** Each side-by-side phase's measurements, one per round it ran in. */
    const side: Record<string, SidePhase[]> = {};
    if (ONLY !== 'spike') {
      const waitingSale = `spike-wait-${suffix}`;
      // Starts in an hour, with more units than pollers: every poll answers "waiting".
      await createSale(waitingSale, Date.now() + 3_600_000, 1_000_000);
      const places: { auth: string; place: string }[] = [];
      for (let i = 0; i < 2000; i++) {
        const auth = bearer(`poller-${i}`);
        const joined = await call('POST', `/sales/${waitingSale}/queue`, { authorization: auth });
        places.push({ auth, place: String(joined.headers['x-position-token']) });
      }
      const etag = String((await call('GET', `/sales/${waitingSale}/catalog`)).headers.etag);
      const phase = async (name: string, pool: Pool, pids: number[], request: (i: number) => LoopRequest) => {
        const before = await costs(pids, redis.child.pid!, redis.client);
        const summary = await closedLoop(pool, request);
        const rounds = side[name] ?? [];
        rounds.push({ ...summary, ...perRequest(before, await costs(pids, redis.child.pid!, redis.client), summary.requests) });
        side[name] = rounds;
      };
      // A shopper's poll: the session token and the signed place. The bare route gets the very same request.
      const shopperPoll = (i: number) => {
        const p = places[i % places.length]!;
        return { path: `/sales/${waitingSale}/queue`, headers: { authorization: p.auth, 'x-position-token': p.place } };
      };
      /** The bare route's phase and sale-core's, in the round's order. */
      const pair = async (round: number, bareSide: () => Promise<void>, coreSide: () => Promise<void>) => {
        for (const side of inRoundOrder(round, [bareSide, coreSide])) await side();
      };
      for (let round = 0; round < SIDE_ROUNDS; round++)
        await pair(
          round,
          () => phase('poll: bare route', bare, ceiling.pids, shopperPoll),
          () => phase('poll: sale-core', core, sale.pids, shopperPoll),
        );
      // Once each, for comparison (not targets). The yardstick as this bench measured it before: the bare route
      // without a shopper's headers (the load generator builds, and the server parses, some 400 bytes less per
      // request).
      await phase('poll: bare, no headers', bare, ceiling.pids, () => ({ path: `/sales/${waitingSale}/queue`, headers: {} }));
      if (ONLY !== 'poll') {
        // What a poll cost before issue 11: the join script again (the old poll ran the same Lua, two rate-limit
        // buckets written in the sale's slot per poll). Here a join of a shopper already in the queue.
        await phase('poll as before: re-join', core, sale.pids, (i) => {
          const p = places[i % places.length]!;
          return { path: `/sales/${waitingSale}/queue`, headers: { authorization: p.auth }, method: 'POST' as const };
        });
        for (let round = 0; round < SIDE_ROUNDS; round++)
          await pair(
            round,
            () =>
              phase('catalog 304: bare route', bare, ceiling.pids, () => ({
                path: `/sales/${waitingSale}/catalog`,
                headers: { 'if-none-match': '"catalog-1"' },
              })),
            () =>
              phase('catalog 304: sale-core', core, sale.pids, () => ({
                path: `/sales/${waitingSale}/catalog`,
                headers: { 'if-none-match': etag },
              })),
          );
      }
      if (ONLY !== 'poll') {
        // Most of a spike's joins come after the sell-out and are refused from the process's view of the sale:
        // what a refusal costs (CPU per request; the bare route answers a constant 409 to the same request).
        const soldOutSale = `spike-soldout-${suffix}`;
        await createSale(soldOutSale, Date.now() - 1000, 0);
        const joiners = places.map((p) => p.auth);
        const soldOutJoin = (i: number) => ({
          path: `/sales/${soldOutSale}/queue`,
          headers: { authorization: joiners[i % joiners.length]! },
          method: 'POST' as const,
        });
        await call('POST', `/sales/${soldOutSale}/queue`, { authorization: joiners[0]! }); // the process reads the sale's view
        await new Promise((r) => setTimeout(r, 500));
        for (let round = 0; round < SIDE_ROUNDS; round++)
          await pair(
            round,
            () => phase('join, sold out: bare route', bare, ceiling.pids, soldOutJoin),
            () => phase('join, sold out: sale-core', core, sale.pids, soldOutJoin),
          );
      }
      console.log('\nside by side (closed loop)');
      for (const [name, rounds] of Object.entries(side))
        for (const [round, r] of rounds.entries()) {
          const label = rounds.length > 1 ? `${name} (${round + 1})` : name;
          console.log(
            `${label.padEnd(30)} ${String(r.rps).padStart(7)} req/s  p50 ${fmt(r.p50).padStart(6)} ms  p99 ${fmt(r.p99).padStart(6)} ms  ` +
              `CPU µs/req: server ${r.saleCoreUs}, Redis ${r.redisUs}, load generator ${r.loadgenUs}  Redis commands/req ${r.redisCommands}  ${JSON.stringify(r.statuses)}`,
          );
        }
      console.log(`load average: ${loadNow()}`);
    }

    // ---- 2. the spike: `shoppers` arriving at `rate` per second on a sale of its own with `units`.
    let runs = 0;
    const spike = async (shoppers: number, units: number, rate: number): Promise<SpikeRun> => {
      const saleId = `spike-${suffix}-${++runs}`;
      const arrivalMs = (shoppers * 1000) / rate;
      const firstArrival = Date.now() + 1000;
      await createSale(saleId, firstArrival, units);
      const routes = new Map<string, Route>();
      const timed = async (name: string, method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: unknown) => {
        const t0 = performance.now();
        const res = await call(method, path, headers, body);
        let route = routes.get(name);
        if (route === undefined) {
          route = new Route();
          routes.set(name, route);
        }
        const ms = performance.now() - t0;
        route.record(res.status, ms);
        // When the slow answers came: by second since the first arrival (a crowd coming back in step shows).
        const second = Math.floor((Date.now() - ms - firstArrival) / 1000);
        const slot = timeline.get(second) ?? { requests: 0, slow: 0, max: 0 };
        slot.requests++;
        if (ms >= P99_MS) slot.slow++;
        slot.max = Math.max(slot.max, ms);
        timeline.set(second, slot);
        return res;
      };
      const timeline = new Map<number, { requests: number; slow: number; max: number }>();
      const outcomes: Record<string, number> = {};
      let lastFinal = 0;
      const final = (what: string) => {
        outcomes[what] = (outcomes[what] ?? 0) + 1;
        lastFinal = Date.now();
      };
      let catalogEtag: string | undefined;
      const journey = async (i: number) => {
        const bot = Math.random() < BOT_SHARE;
        const catalog = await timed('GET catalog', 'GET', `/sales/${saleId}/catalog`, catalogEtag ? { 'if-none-match': catalogEtag } : {});
        if (typeof catalog.headers.etag === 'string') catalogEtag = catalog.headers.etag;
        const session = (await timed('POST session', 'POST', '/session')).json;
        const login = await timed(
          'POST login',
          'POST',
          '/session/login',
          { authorization: `Bearer ${session.token}` },
          { user_id: `${bot ? 'bot' : 'shopper'}-${runs}-${i}`, sale_id: saleId },
        );
        const auth = { authorization: `Bearer ${login.json.token}` };
        let answer = await timed('POST queue (join)', 'POST', `/sales/${saleId}/queue`, auth);
        let place = answer.headers['x-position-token'];
        for (let polls = 0; ; polls++) {
          if (answer.status === 200 && answer.json.status === 'admitted') break;
          const retryMs =
            answer.status === 200
              ? answer.json.retry_after_ms
              : answer.headers['retry-after']
                ? Number(answer.headers['retry-after']) * 1000
                : -1;
          if (retryMs < 0) return final(`queue ${answer.json?.error?.code ?? answer.status}`);
          if (polls > 200) return final('queue: gave up polling');
          // Units held by unpaid orders come back only when their window closes (a minute at least): a shopper
          // told to come back that late gives up, so the bench ends.
          if (retryMs > 10_000) return final('queue SALE_SOLD_OUT (held units: gave up)');
          await sleep(bot ? Math.min(retryMs, 200) : retryMs);
          // With a place, poll; without one (refused before it got one), join again.
          answer =
            typeof place === 'string'
              ? await timed('GET queue (poll)', 'GET', `/sales/${saleId}/queue`, { ...auth, 'x-position-token': place })
              : await timed('POST queue (join)', 'POST', `/sales/${saleId}/queue`, auth);
          if (typeof answer.headers['x-position-token'] === 'string') place = answer.headers['x-position-token'];
        }
        const bought = await timed(
          'POST purchase',
          'POST',
          `/sales/${saleId}/purchase`,
          { ...auth, 'idempotency-key': randomUUID() },
          { sku: 'SKU-1', ticket: answer.json.ticket },
        );
        if (bought.status !== 202) return final(`purchase ${bought.json?.error?.code ?? bought.status}`);
        if (Math.random() < 0.2) return final('reserved, abandoned');
        const paid = await timed('POST pay', 'POST', `/orders/${bought.json.order_id}/pay`, auth, {});
        final(paid.status === 200 ? 'paid' : `pay ${paid.json?.error?.code ?? paid.status}`);
      };
      const before = await costs(sale.pids, redis.child.pid!, redis.client);
      // This process's own event-loop delay: a latency the load generator caused is not the server's.
      const loop = monitorEventLoopDelay({ resolution: 10 });
      loop.enable();
      let firstError: unknown;
      // Shoppers arrive evenly at `rate`, each started when it arrives: 50,000 journeys asleep at once would
      // make this process's own garbage collection a part of every latency measured.
      const journeys: Promise<void>[] = [];
      for (let i = 0; i < shoppers; i++) {
        const wait = firstArrival + (i / shoppers) * arrivalMs - Date.now();
        if (wait >= 1) await sleep(wait);
        journeys.push(
          journey(i).catch((error) => {
            firstError ??= error;
            final('error');
          }),
        );
      }
      await Promise.all(journeys);
      loop.disable();
      if (firstError) console.log(`first journey error: ${firstError}`);
      const stalls = await redisStalls(redis.client);
      const after = await costs(sale.pids, redis.child.pid!, redis.client);
      const ledger = (await call('GET', `/admin/sales/${saleId}`, { authorization: `Bearer ${adminToken}` })).json.ledger;
      const sold = (ledger.reserved['SKU-1'] ?? 0) + (ledger.sold['SKU-1'] ?? 0);
      const requests = [...routes.values()].reduce((sum, r) => sum + r.ms.length, 0);
      let worst = { route: '-', p99: 0 };
      for (const [name, route] of routes) {
        const p99 = route.summary(1).p99;
        if (p99 > worst.p99) worst = { route: name, p99 };
      }
      return {
        shoppers,
        units,
        rate,
        routes,
        outcomes,
        unanswered: Object.entries(outcomes).reduce((sum, [what, n]) => sum + (unansweredOutcome(what) ? n : 0), 0),
        seconds: (lastFinal - firstArrival) / 1000,
        requests,
        cost: perRequest(before, after, requests),
        sold,
        oversold: Math.max(0, sold - units) + Math.max(0, -(ledger.available['SKU-1'] ?? 0)),
        worst,
        loadgenLoopMs: { p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
        redisStalls: stalls,
        slowSeconds: [...timeline]
          .filter(([, slot]) => slot.slow > 0)
          .sort((a, b) => b[1].slow - a[1].slow)
          .slice(0, 4)
          .map(([second, slot]) => `+${second} s: ${slot.slow} of ${slot.requests} over ${P99_MS} ms, slowest ${slot.max.toFixed(0)} ms`),
      };
    };

    let final: SpikeRun | undefined;
    let sustainable: number | undefined;
    const probes: string[] = [];
    let oversoldInProbes = 0;
    if (ONLY === 'all' || ONLY === 'spike') {
      // ---- 2a. the sustainable rate: double until a probe fails, then bisect. A first run of one second's
      // shoppers warms the server up (JIT, scripts loaded into Redis): a cold start must not fail the first probe.
      const warmShoppers = Math.max(1, Math.round(SEARCH_FROM));
      const warm = await spike(warmShoppers, Math.min(UNITS, Math.ceil(warmShoppers / 5)), SEARCH_FROM);
      oversoldInProbes += warm.oversold;
      console.log(
        `\nwarm-up: ${warmShoppers} shoppers in 1 s, worst p99 ${fmt(warm.worst.p99)} ms (${warm.worst.route}), oversold ${warm.oversold}`,
      );
      if (FIXED_RATE) {
        sustainable = FIXED_RATE;
      } else {
        console.log(`searching the sustainable rate: every route's p99 under ${P99_MS} ms, every shopper a final answer`);
        const probeAt = async (rate: number, label: string) => {
          const shoppers = Math.max(1, Math.round((rate * PROBE_MS) / 1000));
          // All the spike's units: selling them out (units ÷ admission rate, about a second) is the spike's
          // heaviest moment, purchases and payments on top of the arrivals, and a probe must include all of it.
          // A probe of a few seconds gives that moment a larger share of its requests than the spike does, so
          // its p99 is the stricter of the two.
          const probe = await spike(shoppers, UNITS, rate);
          oversoldInProbes += probe.oversold;
          const ok = passes(probe);
          console.log(
            `${label}: ${rate} shoppers/s (${shoppers} shoppers, ${probe.units} units): worst p99 ${fmt(probe.worst.p99)} ms (${probe.worst.route}), ` +
              `unanswered ${probe.unanswered}, oversold ${probe.oversold}, last answer after ${probe.seconds.toFixed(1)} s, ` +
              `load generator loop delay max ${probe.loadgenLoopMs.max.toFixed(0)} ms, Redis slow events: ${probe.redisStalls} → ${ok ? 'sustained' : 'not sustained'}`,
          );
          probes.push(`${rate}/s ${ok ? 'yes' : 'no'} (p99 ${probe.worst.p99.toFixed(0)} ms)`);
          return ok;
        };
        const passedRates: number[] = [];
        let passed = 0;
        let failed = Number.POSITIVE_INFINITY;
        let rate = SEARCH_FROM;
        for (let i = 1; i <= PROBES && rate >= 1; i++) {
          if (await probeAt(rate, `probe ${i}`)) {
            passed = rate;
            passedRates.push(rate);
          } else {
            failed = rate;
          }
          if (failed === Number.POSITIVE_INFINITY) rate *= 2;
          else if (passed === 0) rate = Math.floor(rate / 2);
          else if (failed - passed <= Math.max(25, passed * 0.1)) break;
          else rate = Math.round((passed + failed) / 2);
        }
        // The highest rate that passed is the luckiest of several noisy probes (other tenants of the machine move
        // the p99 of a sell-out by 2x between runs): it must pass once more, else the next lower rate that passed
        // is tried; after CONFIRMS failed confirmations, the next one is taken as it is.
        for (const [n, candidate] of passedRates.sort((a, b) => b - a).entries()) {
          if (n >= CONFIRMS) {
            sustainable = candidate;
            console.log(`${candidate}/s taken without a confirmation (${CONFIRMS} failed)`);
            break;
          }
          if (await probeAt(candidate, `confirm ${n + 1}`)) {
            sustainable = candidate;
            break;
          }
        }
        if (sustainable === undefined) console.log(`no rate passed twice: the spike runs at the lowest rate tried (${rate}/s)`);
        sustainable ??= Math.max(1, rate);
      }

      // ---- 2b. the spike at that rate (within the bench's time budget: a low rate means fewer shoppers).
      const shoppers = Math.min(SHOPPERS, Math.max(1, Math.round((sustainable * MAX_ARRIVAL_MS) / 1000)));
      if (shoppers < SHOPPERS) {
        console.log(
          `\n${SHOPPERS} shoppers at ${Math.round(sustainable)}/s would arrive over ${(SHOPPERS / sustainable).toFixed(0)} s, ` +
            `past SPIKE_MAX_ARRIVAL_MS (${MAX_ARRIVAL_MS} ms): the spike runs with ${shoppers}`,
        );
      }
      console.log(
        `\nthe spike: ${shoppers} shoppers at ${Math.round(sustainable)}/s (arrivals over ${(shoppers / sustainable).toFixed(1)} s), ${UNITS} units`,
      );
      final = await spike(shoppers, UNITS, sustainable);
      const seconds = Math.max(0.001, final.seconds);
      for (const [name, route] of final.routes) {
        const r = route.summary(seconds);
        console.log(
          `${name.padEnd(20)} ${String(r.requests).padStart(7)} requests  ${String(r.rps).padStart(6)}/s  p50 ${fmt(r.p50).padStart(6)} ms  p99 ${fmt(r.p99).padStart(7)} ms  ${JSON.stringify(r.statuses)}`,
        );
      }
      console.log(
        `whole spike: ${final.requests} requests; CPU µs per request: sale-core ${final.cost.saleCoreUs}, Redis ${final.cost.redisUs}, ` +
          `load generator ${final.cost.loadgenUs}; Redis commands per request ${final.cost.redisCommands}; ` +
          `load generator event-loop delay p99 ${final.loadgenLoopMs.p99.toFixed(1)} ms, max ${final.loadgenLoopMs.max.toFixed(0)} ms`,
      );
      console.log(
        `first arrival → last final answer: ${final.seconds.toFixed(1)} s; units sold (reserved or paid) ${final.sold} of ${UNITS}; oversold ${final.oversold}; ` +
          `shoppers without a final answer ${final.unanswered}`,
      );
      console.log(`outcomes: ${JSON.stringify(final.outcomes)}`);
      console.log(`Redis slow events during the spike: ${final.redisStalls}`);
      console.log(`seconds with the most answers over ${P99_MS} ms: ${final.slowSeconds.join('; ') || 'none'}`);
    }

    // ---- the targets, one line each
    console.log('\ntargets');
    // Round k's sale-core phase over round k's bare phase (a phase run once pairs with every round), and the
    // median of those.
    const ratio = (a: string, b: string) => {
      const [x, y] = [side[a], side[b]];
      if (!x || !y) return undefined;
      const at = (list: SidePhase[], k: number) => list[Math.min(k, list.length - 1)]!.rps;
      return medianOf(Array.from({ length: Math.max(x.length, y.length) }, (_, k) => at(x, k) / Math.max(1, at(y, k))));
    };
    const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
    const poll = ratio('poll: sale-core', 'poll: bare route');
    if (poll !== undefined) {
      console.log(
        `poll throughput vs bare route: ${poll.median.toFixed(2)}${poll.spread} (target ≥ 0.5, goal 0.7): ${verdict(poll.median >= 0.5)}` +
          `${poll.median >= 0.7 ? ', goal reached' : ''}; Redis commands per poll ${Math.max(...side['poll: sale-core']!.map((r) => r.redisCommands))} ` +
          '(target 0; the per-sale view refresh and background reads only)',
      );
    }
    const bareNoHeaders = ratio('poll: sale-core', 'poll: bare, no headers');
    if (bareNoHeaders !== undefined)
      console.log(
        `poll throughput vs bare route sent no headers (the yardstick before): ${bareNoHeaders.median.toFixed(2)}${bareNoHeaders.spread}`,
      );
    const asBefore = ratio('poll as before: re-join', 'poll: bare route');
    if (asBefore !== undefined) console.log(`poll as before (re-join) vs bare route: ${asBefore.median.toFixed(2)}${asBefore.spread}`);
    const catalog = ratio('catalog 304: sale-core', 'catalog 304: bare route');
    if (catalog !== undefined)
      console.log(
        `catalog 304 throughput vs bare route: ${catalog.median.toFixed(2)}${catalog.spread} (target ≥ 0.8): ${verdict(catalog.median >= 0.8)}`,
      );
    const soldOutJoin = ratio('join, sold out: sale-core', 'join, sold out: bare route');
    if (soldOutJoin !== undefined)
      console.log(
        `sold-out join throughput vs bare route: ${soldOutJoin.median.toFixed(2)}${soldOutJoin.spread} (not a target; most joins of a spike)`,
      );
    if (final && sustainable !== undefined) {
      console.log(
        `sustainable rate: ${Math.round(sustainable)} shoppers/s${FIXED_RATE ? ' (given, not searched)' : ` (probes of ${PROBE_MS} ms: ${probes.join(', ')})`}`,
      );
      const p99s = [...final.routes].map(([name, route]) => `${name} ${route.summary(1).p99.toFixed(1)}`).join(', ');
      console.log(
        `spike p99 per route at that rate, ms: ${p99s} (target < ${P99_MS} on every route): ${verdict(final.worst.p99 < P99_MS)}`,
      );
      console.log(
        `spike (${final.shoppers} shoppers): every shopper a final answer: ${final.unanswered === 0 ? 'yes' : `NO (${final.unanswered} without)`}; oversold ${final.oversold} (must be 0)` +
          `${oversoldInProbes > 0 ? `; oversold in the probes ${oversoldInProbes}` : ''}; last final answer ${final.seconds.toFixed(1)} s after the first arrival`,
      );
      if (final.oversold > 0 || final.unanswered > 0 || oversoldInProbes > 0) process.exitCode = 1;
    }
    console.log(`load average after: ${loadNow()}`);
  } finally {
    for (const pool of pools) await pool.close().catch(() => {});
    for (const child of servers) await stopProcess(child);
    await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => {});
    await admin.disconnect();
    redis.client.disconnect();
    await stopProcess(redis.child);
    rmSync(redis.dir, { recursive: true, force: true });
  }
}

await main();
