// The offer job at scale, and the live-sale insight queries over a big sale (`npm run bench:offers`).
//
// 1. Generates BENCH_SHOPPERS (1,000,000) shoppers with BENCH_EVENTS (20,000,000) clickstream events over five
//    past sales, plus their orders, straight into a private chdb warehouse (INSERT … SELECT FROM numbers()),
//    serves it through the warehouse endpoint in this process, and runs the offer job through
//    @clickhouse/client exactly as the CLI does: wall time split into warehouse query, Arrow transfer,
//    danfojs scoring, Redis write, with the process's peak RSS (which includes the embedded warehouse).
// 2. Generates a live sale of BENCH_LIVE_EVENTS (10,000,000) events and runs each live-sale insight query
//    BENCH_REPEATS (20) times through @clickhouse/client: p50 and p95 per query.
//
// Redis: the target sale is created under a bench-only id and a private "active sales" set, and every key
// of it is deleted at the end. The warehouse folder is a temp folder, removed at the end.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as insights from '../analytics/insights/index.js';
import { runOfferJob } from '../analytics/offers/job.js';
import { parseOfferRules } from '../analytics/offers/rules.js';
import { createWarehouseReader } from '../analytics/reader.js';
import { openChdbWarehouse } from '../analytics/warehouse/chdb-warehouse.js';
import { migrate } from '../analytics/warehouse/migrate.js';
import { hashWarehousePassword, startWarehouseEndpoint, warehouseLimitsFromConfig } from '../analytics/warehouse-endpoint/index.js';
import { createRedis } from '../common/redis.js';
import { createSale } from '../sale-core/sales.js';
import { withSaleScripts } from '../sale-core/scripts.js';

const SHOPPERS = Number(process.env.BENCH_SHOPPERS ?? 1_000_000);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000_000);
const LIVE_EVENTS = Number(process.env.BENCH_LIVE_EVENTS ?? 10_000_000);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 20);
const PAST_SALES = 5;
const DAY = 86_400;
const T0 = Math.floor(Date.UTC(2026, 10, 1) / 1000); // first past sale, epoch seconds

let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 50);
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const secs = (ms: number | undefined) => `${((ms ?? 0) / 1000).toFixed(2)} s`;

async function timed<T>(label: string, work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await work();
  process.stdout.write(`${label}: ${secs(performance.now() - started)}\n`);
  return result;
}

// A shopper's events in one sale: a page view (anonymous), login, cart, then the queue (every 7th is refused
// for stock at the purchase instead), admitted and a purchase attempt when the sale has the events for them.
// Every 50th shopper is a bot. A third of the others reserve in each sale, and four in five of those pay.
const CLICKSTREAM_SELECT = (sales: string, shoppers: number, events: number, base: number) => `
SELECT
  generateUUIDv4(number) AS event_id,
  multiIf(step = 0, 'page_view', step = 1, 'login', step = 2, 'add_to_cart', step = 4, 'admitted', step = 5, 'purchase_attempt',
          s % 7 = 0, 'purchase_rejected', 'queue_joined') AS type,
  toDateTime64(${base} + sale_index * ${7 * DAY} + (s % 3600) + step * 2, 3, 'UTC') + toIntervalMillisecond(number % 1000) AS ts,
  concat('bench-s', toString(sale_index)) AS sale_id,
  if(step < 1, NULL, concat('u', toString(s))) AS user_id,
  concat('a', toString(s)) AS anon_id,
  ifNull(user_id, anon_id) AS shopper_id,
  concat('sess-', toString(s), '-', toString(sale_index)) AS session_id,
  if(step IN (2, 3, 5), if(s % 2 = 0, 'A', 'B'), NULL) AS sku,
  ['web', 'app', 'api'][1 + s % 3] AS channel,
  ['desktop', 'phone'][1 + s % 2] AS device,
  lower(hex(cityHash64(s % 250000))) AS ip_hash,
  NULL AS offer_id,
  if(s % 50 = 0, ['too_fast'], []) AS bot_signals,
  if(step = 0, '/sale', NULL) AS path,
  if(step = 2, if(s % 2 = 0, 5000, 12000), NULL) AS price_cents,
  if(step IN (2, 5), 1, NULL) AS qty,
  if(step = 3 AND s % 7 != 0, toUInt32(s % 100000), NULL) AS queue_position,
  if(step = 3 AND s % 7 = 0, 'sold_out', NULL) AS reject_reason,
  0 AS kafka_partition, number AS kafka_offset,
  ts + toIntervalMillisecond(200 + number % 700) AS ingested_at
FROM (
  SELECT number, number % ${shoppers} AS s, intDiv(number, ${shoppers}) AS round,
         round % ${sales} AS sale_index, intDiv(round, ${sales}) % 6 AS step
  FROM numbers(${events})
)`;

const ORDERS_SELECT = (sales: string[], shoppers: number, base: number) => `
SELECT
  generateUUIDv4(number * 2 + paid) AS event_id,
  if(paid = 1, 'order_paid', 'order_reserved') AS type,
  if(paid = 1, 'paid', 'reserved') AS status,
  toDateTime64(${base} + sale_index * ${7 * DAY} + (s % 3600) + 30 + paid * 60, 3, 'UTC') AS ts,
  concat(sale_id, '.', toString(generateUUIDv4(number))) AS order_id,
  [${sales.map((s) => `'${s}'`).join(', ')}][1 + sale_index] AS sale_id,
  concat('u', toString(s)) AS user_id,
  concat('a', toString(s)) AS anon_id,
  user_id AS shopper_id,
  concat('sess-', toString(s), '-', toString(sale_index)) AS session_id,
  if(s % 2 = 0, 'A', 'B') AS sku,
  ['web', 'app', 'api'][1 + s % 3] AS channel,
  ['desktop', 'phone'][1 + s % 2] AS device,
  NULL AS offer_id,
  if(s % 50 = 0, ['too_fast'], []) AS bot_signals,
  if(s % 2 = 0, 5000, 12000) AS price_cents,
  1 AS qty,
  price_cents AS amount_cents,
  if(paid = 1, NULL, ts + toIntervalMinute(5)) AS expires_at,
  0 AS kafka_partition, number AS kafka_offset, ts AS ingested_at
FROM (
  SELECT number, number % ${shoppers} AS s, intDiv(number, ${shoppers}) AS sale_index, arrayJoin([0, 1]) AS paid
  FROM numbers(${shoppers * sales.length})
  WHERE (s + sale_index) % 3 = 0 AND s % 7 != 0 AND (paid = 0 OR s % 5 != 0)
)`;

const COLUMNS =
  'event_id, type, ts, sale_id, user_id, anon_id, shopper_id, session_id, sku, channel, device, ip_hash, offer_id, bot_signals, path, price_cents, qty, queue_position, reject_reason, kafka_partition, kafka_offset, ingested_at';
const ORDER_COLUMNS =
  'event_id, type, status, ts, order_id, sale_id, user_id, anon_id, shopper_id, session_id, sku, channel, device, offer_id, bot_signals, price_cents, qty, amount_cents, expires_at, kafka_partition, kafka_offset, ingested_at';

async function main() {
  // BENCH_CHDB_DIR keeps the generated warehouse between runs (generation takes minutes on a busy machine).
  const kept = process.env.BENCH_CHDB_DIR;
  const dir = kept ?? mkdtempSync(join(tmpdir(), 'bench-offers-chdb-'));
  const warehouse = await openChdbWarehouse(dir, 'flashsale');
  await migrate(warehouse);
  const redis = createRedis();
  const password = 'bench-offers-password';
  const endpoint = await startWarehouseEndpoint({
    warehouse,
    port: 0,
    users: [{ name: 'offers', role: 'offers', passwordHash: hashWarehousePassword(password) }],
    limits: { ...warehouseLimitsFromConfig(), maxResultRows: 100_000_000 },
  });
  const reader = createWarehouseReader({ url: endpoint.url, username: 'offers', password });
  const pastSales = Array.from({ length: PAST_SALES }, (_, i) => `bench-s${i}`);
  const target = `bench-next-${Date.now().toString(36)}`;
  const activeKey = `bench:offers:${target}:active`;
  try {
    process.stdout.write(`offer job: ${SHOPPERS.toLocaleString()} shoppers, ${EVENTS.toLocaleString()} events over ${PAST_SALES} sales\n`);
    const [had] = await warehouse.query<{ n: string }>("SELECT count() AS n FROM clickstream_events WHERE sale_id LIKE 'bench-s%'");
    if (Number(had!.n) !== EVENTS) {
      await warehouse.command('TRUNCATE TABLE clickstream_events');
      await warehouse.command('TRUNCATE TABLE order_facts');
      await timed('generate clickstream', () =>
        warehouse.command(
          `INSERT INTO clickstream_events (${COLUMNS}) SELECT ${COLUMNS} FROM (${CLICKSTREAM_SELECT(String(PAST_SALES), SHOPPERS, EVENTS, T0)})`,
        ),
      );
      await timed('generate orders', () =>
        warehouse.command(
          `INSERT INTO order_facts (${ORDER_COLUMNS}) SELECT ${ORDER_COLUMNS} FROM (${ORDERS_SELECT(pastSales, SHOPPERS, T0)})`,
        ),
      );
    }
    const [counts] = await warehouse.query<{ events: string; orders: string }>(
      'SELECT (SELECT count() FROM clickstream_events) AS events, (SELECT count() FROM order_facts) AS orders',
    );
    process.stdout.write(`warehouse holds ${counts!.events} events, ${counts!.orders} order events\n`);

    const startsAt = Date.now() + 3_600_000;
    await createSale(
      withSaleScripts(redis),
      activeKey,
      {
        id: target,
        title: 'bench target sale',
        starts_at: startsAt,
        ends_at: startsAt + 3_600_000,
        payment_window_minutes: 5,
        skus: [
          { sku: 'A', title: 'A', price: 5000, stock: 100_000, limit_per_shopper: 2 },
          { sku: 'B', title: 'B', price: 12000, stock: 100_000, limit_per_shopper: 1 },
        ],
      },
      100,
    );
    // Budgets large enough that every matching shopper gets an offer: the Redis write is measured at size.
    const rules = parseOfferRules({
      holdout_share: 0.1,
      rules: [
        {
          id: 'missed-out-early',
          when: { segments: ['missed_out'] },
          offer: { kind: 'early_access', minutes: 10 },
          budget: { max_offers: 10_000_000 },
        },
        {
          id: 'champions-priority',
          when: { segments: ['champions', 'loyal'] },
          offer: { kind: 'priority' },
          budget: { max_offers: 10_000_000 },
        },
        {
          id: 'win-back-price',
          when: { segments: ['at_risk', 'bargain_hunters', 'new'] },
          offer: { kind: 'price', percent_off: 15 },
          budget: { max_offers: 10_000_000, max_discount_cents: 100_000_000_000 },
        },
      ],
    });
    peakRss = process.memoryUsage().rss;
    const rssBefore = peakRss;
    const result = await runOfferJob({
      reader,
      redis,
      runId: `bench-${target}`,
      fromSales: pastSales,
      forSale: target,
      rules,
      batchSize: 50_000,
    });
    const t = result.timings;
    process.stdout.write(
      [
        `offer job total            ${secs(t.totalMs)}`,
        `  warehouse query          ${secs(t.warehouseQueryMs)}  (features in ClickHouse, until the first Arrow batch)`,
        `  Arrow transfer           ${secs(t.arrowTransferMs)}`,
        `  danfojs scoring          ${secs(t.scoringMs)}`,
        `  segments written         ${secs(t.writeMs)}`,
        `  decide                   ${secs(t.decideMs)}`,
        `  decisions recorded       ${secs(t.recordMs)}`,
        `  Redis write              ${secs(t.redisWriteMs)}  (${result.offers.toLocaleString()} offers)`,
        `  other (run steps, read-backs) ${secs(t.totalMs - (t.warehouseQueryMs ?? 0) - (t.arrowTransferMs ?? 0) - (t.scoringMs ?? 0) - (t.writeMs ?? 0) - (t.decideMs ?? 0) - (t.recordMs ?? 0) - (t.redisWriteMs ?? 0))}`,
        `shoppers ${result.shoppers.toLocaleString()}, offers ${result.offers.toLocaleString()}, held out ${result.holdouts.toLocaleString()}`,
        `segments ${result.segments.map((s) => `${s.segment} ${s.shoppers}`).join(', ')}`,
        `peak RSS during the job ${mib(peakRss)} (before ${mib(rssBefore)}; warehouse and endpoint run in this process)`,
        '',
      ].join('\n'),
    );

    // 2. Live-sale insights over a big sale.
    process.stdout.write(`live sale: ${LIVE_EVENTS.toLocaleString()} events\n`);
    const liveBase = Math.floor(Date.UTC(2026, 10, 20, 10) / 1000);
    const [hadLive] = await warehouse.query<{ n: string }>("SELECT count() AS n FROM clickstream_events WHERE sale_id = 'bench-live'");
    if (Number(hadLive!.n) !== LIVE_EVENTS)
      await timed('generate live sale', async () => {
        await warehouse.command(
          `INSERT INTO clickstream_events (${COLUMNS}) SELECT ${COLUMNS.replace('sale_id', "'bench-live' AS sale_id")} FROM (${CLICKSTREAM_SELECT('1', SHOPPERS, LIVE_EVENTS, liveBase)})`,
        );
        await warehouse.command(
          `INSERT INTO order_facts (${ORDER_COLUMNS}) SELECT ${ORDER_COLUMNS} FROM (${ORDERS_SELECT(['bench-live'], SHOPPERS, liveBase)})`,
        );
      });
    const live = 'bench-live';
    const initialStock = { A: 200_000, B: 200_000 };
    const queries: [string, () => Promise<unknown>][] = [
      ['salesVelocity', () => insights.salesVelocity(reader, { saleId: live })],
      ['unitsLeftPerSku', () => insights.unitsLeftPerSku(reader, { saleId: live, initialStock })],
      ['timeToSellOut', () => insights.timeToSellOut(reader, { saleId: live, initialStock, startsAtMs: liveBase * 1000 })],
      ['waitingRoom', () => insights.waitingRoom(reader, { saleId: live })],
      ['rejectionsByReason', () => insights.rejectionsByReason(reader, { saleId: live })],
      ['botFlaggedAttempts', () => insights.botFlaggedAttempts(reader, { saleId: live })],
      ['pipelineFreshness', () => insights.pipelineFreshness(reader, { saleId: live })],
    ];
    for (const [name, query] of queries) {
      await query(); // warm
      const times: number[] = [];
      for (let i = 0; i < REPEATS; i++) {
        const started = performance.now();
        await query();
        times.push(performance.now() - started);
      }
      times.sort((a, b) => a - b);
      const p = (q: number) => times[Math.min(times.length - 1, Math.ceil(q * times.length) - 1)]!.toFixed(0);
      process.stdout.write(`  ${name.padEnd(20)} p50 ${p(0.5).padStart(5)} ms   p95 ${p(0.95).padStart(5)} ms\n`);
    }
    process.stdout.write(
      `peak RSS overall ${mib(peakRss)}; load average ${(await import('node:os'))
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}\n`,
    );
  } finally {
    clearInterval(sampler);
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `sale:{${target}}:*`, 'COUNT', 10_000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    await redis.del(activeKey);
    redis.disconnect();
    await reader.close();
    await endpoint.close();
    await warehouse.close();
    if (!kept) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
