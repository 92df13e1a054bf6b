// The three servers of the purchase benchmark, each started as its own process by bench/sale-purchase.ts:
//   ceiling      a bare fastify route that parses the purchase body and returns a constant
//   service-ceiling  the same route on common/http's service app (what every service here pays)
//   pg-baseline  the naive purchase: decrement stock in PostgreSQL under a row lock per purchase
//   sale-core    the real purchase path (startSaleCore) on bench topics of its own; with
//                SALE_BACKGROUND=separate it leaves the outbox relay and the sweeper to
//   sale-background  the relay and the sweeper alone (startSaleBackground), in a process of their own
// Usage: tsx bench/sale-servers.ts <kind> <port> [ordersTopic clickstreamTopic]
// Prints `READY <url> <pids of the serving processes>` once listening.
import cluster from 'node:cluster';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import Fastify from 'fastify';
import { createServiceApp } from '../common/http.js';
import { createPostgresPool } from '../common/postgres.js';
import { startSaleBackground, startSaleCore } from '../sale-core/index.js';

export const BENCH_ACTIVE_SALES = 'bench:sales:active';

const [kind, portArg, ordersTopic, clickstreamTopic] = process.argv.slice(2);
const port = Number(portArg ?? 0);

async function ceiling() {
  const app = Fastify({ logger: false });
  app.post('/sales/:saleId/purchase', async () => ({ order_id: 'constant', status: 'reserved' }));
  // The yardsticks of the spike bench (bench/spike.ts): a constant poll answer, and a catalog with an ETag.
  app.get('/sales/:saleId/queue', async () => ({ status: 'waiting', position: 1, ahead: 0, retry_after_ms: 1000 }));
  // A join refused because the sale sold out: the answer sale-core gives most joins of a spike.
  app.post('/sales/:saleId/queue', async (_request, reply) =>
    reply.code(409).send({ error: { code: 'SALE_SOLD_OUT', message: 'Every unit is sold and none is held for payment.' } }),
  );
  app.get('/sales/:saleId/catalog', async (request, reply) => {
    reply.header('etag', '"catalog-1"').header('cache-control', 'public, max-age=30');
    if (request.headers['if-none-match'] === '"catalog-1"') return reply.code(304).send();
    return { id: 'bench', title: 'Bench', products: [{ sku: 'SKU-1', title: 'Sneaker', price: 12_900, limit_per_shopper: 1 }] };
  });
  return app.listen({ port, host: '127.0.0.1' });
}

/** The same constant route on the platform's service app (common/http: logger, swagger, error handler). */
async function serviceCeiling() {
  const app = await createServiceApp({ name: 'service-ceiling' });
  app.post('/sales/:saleId/purchase', async () => ({ order_id: 'constant', status: 'reserved' }));
  return app.listen({ port, host: '127.0.0.1' });
}

async function pgBaseline() {
  const pool = createPostgresPool({ max: 16 });
  await pool.query(
    `CREATE TABLE IF NOT EXISTS bench_sale_stock (sale_id text, sku text, stock integer NOT NULL, PRIMARY KEY (sale_id, sku))`,
  );
  await pool.query(
    `CREATE TABLE IF NOT EXISTS bench_sale_orders (id bigserial PRIMARY KEY, sale_id text, sku text, user_id text, created_at timestamptz DEFAULT now())`,
  );
  await pool.query(`TRUNCATE bench_sale_orders`);
  await pool.query(
    `INSERT INTO bench_sale_stock (sale_id, sku, stock) VALUES ('bench', 'SKU-1', 100000000) ON CONFLICT (sale_id, sku) DO UPDATE SET stock = 100000000`,
  );
  const app = Fastify({ logger: false });
  app.post('/sales/:saleId/purchase', async (request, reply) => {
    const body = request.body as { sku: string };
    const user = String(request.headers.authorization ?? 'anon').slice(-16);
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const row = await client.query('SELECT stock FROM bench_sale_stock WHERE sale_id = $1 AND sku = $2 FOR UPDATE', ['bench', body.sku]);
      if (!row.rows[0] || row.rows[0].stock <= 0) {
        await client.query('ROLLBACK');
        return reply.code(409).send({ error: { code: 'SALE_SOLD_OUT' } });
      }
      await client.query('UPDATE bench_sale_stock SET stock = stock - 1 WHERE sale_id = $1 AND sku = $2', ['bench', body.sku]);
      const order = await client.query('INSERT INTO bench_sale_orders (sale_id, sku, user_id) VALUES ($1, $2, $3) RETURNING id', [
        'bench',
        body.sku,
        user,
      ]);
      await client.query('COMMIT');
      return reply.code(202).send({ order_id: String(order.rows[0].id), status: 'reserved' });
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  });
  return app.listen({ port, host: '127.0.0.1' });
}

async function saleCore() {
  if (!ordersTopic || !clickstreamTopic) throw new Error('sale-core needs ordersTopic and clickstreamTopic');
  // Its own active-sales set: a sale-core started on the shared stack never relays the bench's outbox.
  const core = await startSaleCore({
    port,
    topics: { orders: ordersTopic, clickstream: clickstreamTopic },
    settings: { activeSalesKey: BENCH_ACTIVE_SALES },
    background: process.env.SALE_BACKGROUND !== 'separate',
    handleSignals: true,
  });
  return core.url;
}

async function saleBackground() {
  if (!ordersTopic) throw new Error('sale-background needs ordersTopic');
  const background = await startSaleBackground({
    topics: { orders: ordersTopic, clickstream: clickstreamTopic ?? '' },
    settings: { activeSalesKey: BENCH_ACTIVE_SALES },
  });
  let closing = false;
  process.on('SIGTERM', () => {
    if (closing) return;
    closing = true;
    void background.close().finally(() => process.exit(0));
  });
  return 'background';
}

const starters: Record<string, () => Promise<string>> = {
  ceiling,
  'service-ceiling': serviceCeiling,
  'pg-baseline': pgBaseline,
  'sale-core': saleCore,
  'sale-background': saleBackground,
};
const start = kind ? starters[kind] : undefined;
if (!start) throw new Error(`unknown server kind ${kind}: one of ${Object.keys(starters).join(', ')}`);

// BENCH_PROCESSES=N (ceiling, service-ceiling, sale-core): N workers share the port through node:cluster,
// as main.ts runs sale-core with SALE_PROCESSES. Prints `READY <url> <worker pids>` so the bench sums
// their CPU. The baseline stays one process: its limit is the row lock, not the CPU.
const processes = kind === 'pg-baseline' || kind === 'sale-background' ? 1 : Number(process.env.BENCH_PROCESSES ?? 1);
if (processes > 1 && cluster.isPrimary) {
  const workers = Array.from({ length: processes }, () => cluster.fork());
  const urls = await Promise.all(
    workers.map(
      (worker) =>
        new Promise<string>((resolve, reject) => {
          worker.once('message', (message: { url: string }) => resolve(message.url));
          worker.once('exit', (code) => reject(new Error(`a ${kind} worker exited (${code}) before it was ready`)));
        }),
    ),
  );
  process.stdout.write(`READY ${urls[0]} ${workers.map((w) => w.process.pid).join(',')}\n`);
  process.on('SIGTERM', () => {
    for (const worker of workers) worker.process.kill('SIGTERM');
    Promise.all(workers.map((w) => new Promise((r) => (w.isDead() ? r(null) : w.once('exit', r))))).then(() => process.exit(0));
  });
} else {
  const url = await start();
  if (cluster.isWorker) process.send?.({ url });
  else process.stdout.write(`READY ${url} ${process.pid}\n`);
  if (kind !== 'sale-core' && kind !== 'sale-background') process.on('SIGTERM', () => process.exit(0));
}
// BENCH_SERVER_STATS=1: every 2 s, each server prints to stderr its event-loop delay (p50/p99/max), its
// GC pauses (count, total, longest) and its heap: what to look at when a p99 moves between runs.
if (process.env.BENCH_SERVER_STATS === '1') reportServerStats(kind ?? 'server');

function reportServerStats(name: string): void {
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  let gc = { count: 0, totalMs: 0, longestMs: 0 };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc = { count: gc.count + 1, totalMs: gc.totalMs + entry.duration, longestMs: Math.max(gc.longestMs, entry.duration) };
    }
  }).observe({ entryTypes: ['gc'] });
  const ms = (ns: number) => (ns / 1e6).toFixed(1);
  setInterval(() => {
    process.stderr.write(
      `[${name}] event-loop delay p50 ${ms(delay.percentile(50))} p99 ${ms(delay.percentile(99))} max ${ms(delay.max)} ms; ` +
        `GC ${gc.count} pauses, ${gc.totalMs.toFixed(0)} ms, longest ${gc.longestMs.toFixed(1)} ms; ` +
        `heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB\n`,
    );
    delay.reset();
    gc = { count: 0, totalMs: 0, longestMs: 0 };
  }, 2000).unref();
}
