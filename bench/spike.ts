// The spike bench (issue 11): what a flash sale's crowd costs, route by route, next to the bare fastify route.
//
//   1. Side by side, closed loop, SPIKE_PHASE_MS each: the queue poll (GET with the signed place) and the
//      catalog with If-None-Match, on sale-core and on the bare route (bench/sale-servers.ts `ceiling`).
//   2. The spike: SPIKE_SHOPPERS shoppers arrive within SPIKE_ARRIVAL_MS; each reads the catalog (with
//      If-None-Match when it has an ETag), opens a session, logs in, joins, polls at the advised interval, buys
//      once admitted, and pays or abandons; SPIKE_BOT_SHARE of them are bots (no browsing, poll at once).
//
// Per route: requests/s, p50/p99, CPU µs per request in sale-core, Redis and this load generator, and Redis
// commands per request (INFO commandstats deltas). Redis is a private server of the bench's own (same
// durability as the stack's: AOF, appendfsync always), so its CPU and command counts are sale-core's alone.
// Overall: time from the first arrival to the last shopper's final answer, units sold, oversold (must be 0).
// Servers are processes of their own; loopback only; bounded.
//
//   npm run bench:spike          (SPIKE_SHOPPERS=50000 SPIKE_UNITS=500 for the issue's figure; defaults are smaller)
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { config } from '../common/config.js';
import { createKafka, createTopicsAndWait } from '../common/kafka.js';
import { issueSession } from '../sale-core/tokens.js';

const SHOPPERS = Number(process.env.SPIKE_SHOPPERS ?? 5000);
const UNITS = Number(process.env.SPIKE_UNITS ?? 500);
const ARRIVAL_MS = Number(process.env.SPIKE_ARRIVAL_MS ?? 3000);
const BOT_SHARE = Number(process.env.SPIKE_BOT_SHARE ?? 0.05);
const PHASE_MS = Number(process.env.SPIKE_PHASE_MS ?? 5000);
const CONNECTIONS = Number(process.env.SPIKE_CONNECTIONS ?? 64);
const ADMISSION_RATE = Number(process.env.SPIKE_ADMISSION_RATE ?? 500);
const here = new URL('.', import.meta.url).pathname;
const { tokenSecret, adminToken } = config().sale;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
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
  return { url: `redis://127.0.0.1:${port}`, child, dir, client };
}

async function startServer(
  kind: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ url: string; child: ChildProcess; pids: number[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', `${here}sale-servers.ts`, kind, '0', ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [url, pids] = await new Promise<[string, number[]]>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk) => {
      out += chunk;
      const match = /READY (\S+) (\S+)/.exec(out);
      if (match) resolve([match[1]!, match[2]!.split(',').map(Number)]);
    });
    child.once('exit', (code) => reject(new Error(`${kind} exited (${code}) before it was ready`)));
  });
  return { url, child, pids: [...new Set([child.pid!, ...pids])] };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(8000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

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

async function main() {
  const load0 = loadavg();
  console.log(
    `spike bench: ${SHOPPERS} shoppers within ${ARRIVAL_MS} ms, ${UNITS} units, admission ${ADMISSION_RATE}/s, ${BOT_SHARE * 100}% bots; ` +
      `side-by-side phases of ${PHASE_MS} ms on ${CONNECTIONS} connections`,
  );
  console.log(`load average before: ${load0.map((l) => l.toFixed(2)).join(' ')} (other tenants of the machine move every figure)`);
  const redis = await startRedis();
  const kafka = createKafka('spike-admin');
  const admin = kafka.admin();
  await admin.connect();
  const suffix = randomUUID().slice(0, 8);
  const topics = { orders: `bench.orders.${suffix}`, clickstream: `bench.clickstream.${suffix}` };
  await createTopicsAndWait(
    admin,
    Object.values(topics).map((topic) => ({ topic, numPartitions: 3 })),
  );
  const servers: ChildProcess[] = [];
  const pools: Pool[] = [];
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
    const side: Record<string, ReturnType<Route['summary']> & ReturnType<typeof perRequest>> = {};
    const phase = async (name: string, pool: Pool, pids: number[], request: (i: number) => LoopRequest) => {
      const before = await costs(pids, redis.child.pid!, redis.client);
      const summary = await closedLoop(pool, request);
      side[name] = { ...summary, ...perRequest(before, await costs(pids, redis.child.pid!, redis.client), summary.requests) };
    };
    await phase('poll: bare route', bare, ceiling.pids, () => ({ path: `/sales/${waitingSale}/queue`, headers: {} }));
    await phase('poll: sale-core', core, sale.pids, (i) => {
      const p = places[i % places.length]!;
      return { path: `/sales/${waitingSale}/queue`, headers: { authorization: p.auth, 'x-position-token': p.place } };
    });
    // What a poll cost before issue 11: the join script again (the old poll ran the same Lua, two rate-limit
    // buckets written in the sale's slot per poll). Here a join of a shopper already in the queue.
    await phase('poll as before: re-join', core, sale.pids, (i) => {
      const p = places[i % places.length]!;
      return { path: `/sales/${waitingSale}/queue`, headers: { authorization: p.auth }, method: 'POST' as const };
    });
    await phase('catalog 304: bare route', bare, ceiling.pids, () => ({
      path: `/sales/${waitingSale}/catalog`,
      headers: { 'if-none-match': '"catalog-1"' },
    }));
    await phase('catalog 304: sale-core', core, sale.pids, () => ({
      path: `/sales/${waitingSale}/catalog`,
      headers: { 'if-none-match': etag },
    }));

    // ---- 2. the spike.
    const spikeSale = `spike-${suffix}`;
    const firstArrival = Date.now() + 1000;
    await createSale(spikeSale, firstArrival, UNITS);
    const routes = new Map<string, Route>();
    const timed = async (name: string, method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: unknown) => {
      const t0 = performance.now();
      const res = await call(method, path, headers, body);
      let route = routes.get(name);
      if (route === undefined) {
        route = new Route();
        routes.set(name, route);
      }
      route.record(res.status, performance.now() - t0);
      return res;
    };
    const outcomes: Record<string, number> = {};
    const count = (what: string) => {
      outcomes[what] = (outcomes[what] ?? 0) + 1;
    };
    let lastFinal = 0;
    const final = (what: string) => {
      count(what);
      lastFinal = Date.now();
    };
    let catalogEtag: string | undefined;
    const journey = async (i: number) => {
      const bot = Math.random() < BOT_SHARE;
      await sleep(Math.max(0, firstArrival + Math.random() * ARRIVAL_MS - Date.now()));
      const catalog = await timed('GET catalog', 'GET', `/sales/${spikeSale}/catalog`, catalogEtag ? { 'if-none-match': catalogEtag } : {});
      if (typeof catalog.headers.etag === 'string') catalogEtag = catalog.headers.etag;
      const session = (await timed('POST session', 'POST', '/session')).json;
      const login = await timed(
        'POST login',
        'POST',
        '/session/login',
        { authorization: `Bearer ${session.token}` },
        {
          user_id: `${bot ? 'bot' : 'shopper'}-${i}`,
          sale_id: spikeSale,
        },
      );
      const auth = { authorization: `Bearer ${login.json.token}` };
      let answer = await timed('POST queue (join)', 'POST', `/sales/${spikeSale}/queue`, auth);
      let place = answer.headers['x-position-token'];
      for (let polls = 0; ; polls++) {
        if (answer.status === 200 && answer.json.status === 'admitted') break;
        const retryMs =
          answer.status === 200
            ? answer.json.retry_after_ms
            : answer.headers['retry-after']
              ? Number(answer.headers['retry-after']) * 1000
              : -1;
        if (retryMs < 0 || polls > 200) return final(`queue ${answer.json?.error?.code ?? answer.status}`);
        // Units held by unpaid orders come back only when their window closes (a minute at least): a shopper
        // told to come back that late gives up, so the bench ends.
        if (retryMs > 10_000) return final('queue SALE_SOLD_OUT (held units: gave up)');
        await sleep(bot ? Math.min(retryMs, 200) : retryMs);
        // With a place, poll; without one (refused before it got one), join again.
        answer =
          typeof place === 'string'
            ? await timed('GET queue (poll)', 'GET', `/sales/${spikeSale}/queue`, { ...auth, 'x-position-token': place })
            : await timed('POST queue (join)', 'POST', `/sales/${spikeSale}/queue`, auth);
        if (typeof answer.headers['x-position-token'] === 'string') place = answer.headers['x-position-token'];
      }
      const bought = await timed(
        'POST purchase',
        'POST',
        `/sales/${spikeSale}/purchase`,
        { ...auth, 'idempotency-key': randomUUID() },
        { sku: 'SKU-1', ticket: answer.json.ticket },
      );
      if (bought.status !== 202) return final(`purchase ${bought.json?.error?.code ?? bought.status}`);
      if (Math.random() < 0.2) return final('reserved, abandoned');
      const paid = await timed('POST pay', 'POST', `/orders/${bought.json.order_id}/pay`, auth, {});
      final(paid.status === 200 ? 'paid' : `pay ${paid.json?.error?.code ?? paid.status}`);
    };
    const spikeBefore = await costs(sale.pids, redis.child.pid!, redis.client);
    let firstError: unknown;
    await Promise.all(
      Array.from({ length: SHOPPERS }, (_, i) =>
        journey(i).catch((error) => {
          firstError ??= error;
          final('error');
        }),
      ),
    );
    if (firstError) console.log(`first journey error: ${firstError}`);
    const spikeAfter = await costs(sale.pids, redis.child.pid!, redis.client);
    const ledger = (await call('GET', `/admin/sales/${spikeSale}`, { authorization: `Bearer ${adminToken}` })).json.ledger;
    const sold = (ledger.reserved['SKU-1'] ?? 0) + (ledger.sold['SKU-1'] ?? 0);
    const oversold = Math.max(0, sold - UNITS) + Math.max(0, -(ledger.available['SKU-1'] ?? 0));

    // ---- report
    const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');
    console.log('\nside by side (closed loop)');
    for (const [name, r] of Object.entries(side)) {
      console.log(
        `${name.padEnd(26)} ${String(r.rps).padStart(7)} req/s  p50 ${fmt(r.p50).padStart(6)} ms  p99 ${fmt(r.p99).padStart(6)} ms  ` +
          `CPU µs/req: server ${r.saleCoreUs}, Redis ${r.redisUs}, load generator ${r.loadgenUs}  Redis commands/req ${r.redisCommands}  ${JSON.stringify(r.statuses)}`,
      );
    }
    const ratio = (a: string, b: string) => ((side[a]?.rps ?? 0) / Math.max(1, side[b]?.rps ?? 0)).toFixed(2);
    console.log(`poll throughput vs bare route: ${ratio('poll: sale-core', 'poll: bare route')} (target ≥ 0.5, goal 0.7)`);
    console.log(`poll as before vs bare route: ${ratio('poll as before: re-join', 'poll: bare route')}`);
    console.log(`catalog 304 throughput vs bare route: ${ratio('catalog 304: sale-core', 'catalog 304: bare route')} (target ≥ 0.8)`);
    const spikeSeconds = (lastFinal - firstArrival) / 1000;
    const spikeRequests = [...routes.values()].reduce((sum, r) => sum + r.ms.length, 0);
    console.log(
      `\nspike: ${SHOPPERS} shoppers, every one a final answer: ${Object.values(outcomes).reduce((a, b) => a + b, 0) === SHOPPERS}`,
    );
    for (const [name, route] of routes) {
      const r = route.summary(spikeSeconds);
      console.log(
        `${name.padEnd(20)} ${String(r.requests).padStart(7)} requests  p50 ${fmt(r.p50).padStart(6)} ms  p99 ${fmt(r.p99).padStart(7)} ms  ${JSON.stringify(r.statuses)}`,
      );
    }
    const spikeCost = perRequest(spikeBefore, spikeAfter, spikeRequests);
    console.log(
      `whole spike: ${spikeRequests} requests, CPU µs/req: sale-core ${spikeCost.saleCoreUs}, Redis ${spikeCost.redisUs}; Redis commands/req ${spikeCost.redisCommands}`,
    );
    console.log(
      `first arrival → last final answer: ${spikeSeconds.toFixed(1)} s; units sold (reserved or paid) ${sold} of ${UNITS}; oversold ${oversold}`,
    );
    console.log(`outcomes: ${JSON.stringify(outcomes)}`);
    console.log(
      `load average after: ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    if (oversold !== 0) process.exitCode = 1;
  } finally {
    for (const pool of pools) await pool.close().catch(() => {});
    for (const child of servers) await stop(child);
    await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => {});
    await admin.disconnect();
    redis.client.disconnect();
    await stop(redis.child);
    rmSync(redis.dir, { recursive: true, force: true });
  }
}

await main();
