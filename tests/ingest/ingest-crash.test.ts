// Crash between insert and commit: an ingest process is SIGKILLed right after its first warehouse insert.
// Restarted (with a different batch size, so fetches come back cut differently), ingest must leave
// exactly one row per event in the raw table and in the rollups, and lose nothing.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kafka } from 'kafkajs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { createPostgresPool } from '../../common/postgres.js';
import { ingestMetrics, startIngest } from '../../ingest/index.js';
import { createIngestTopics, deleteTopics } from '../support/kafka.js';
import { clickEvent, connectedProducer, groupCaughtUp, messageOf, orderEvent, produce, uniqueSale, waitUntil } from './support/events.js';
import { clickstreamCounts, countOf, freshWarehouseDir, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

const CHILD = join(import.meta.dirname, 'support', 'crashing-ingest.ts');

function runUntilKilled(env: Record<string, string>): Promise<NodeJS.Signals | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
      env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('exit', (_code, signal) => {
      clearTimeout(timer);
      resolve(signal);
    });
  });
}

describe('ingest crash between insert and commit', () => {
  let kafka: Kafka;
  let pool: pg.Pool;
  let test: TestWarehouse | undefined;
  const dir = freshWarehouseDir();
  const marker = join(tmpdir(), `ingest-crash-${randomUUID()}.json`);
  const topics = { clickstream: '', orders: '', deadLetters: '' };
  const groupIds = { warehouse: `crash-warehouse-${randomUUID()}`, orderStore: `crash-orders-${randomUUID()}` };

  beforeAll(async () => {
    kafka = createKafka('ingest-crash-test');
    Object.assign(topics, await createIngestTopics(kafka, { clickstream: 2, orders: 2 }));
    pool = createPostgresPool({ max: 2 });
  });

  afterAll(async () => {
    await pool?.end();
    await test?.dispose();
    rmSync(dir, { recursive: true, force: true });
    rmSync(marker, { force: true });
    await deleteTopics(Object.values(topics), kafka).catch(() => {});
  });

  it('replays the uncommitted batch with its original boundaries: no duplicates, nothing missing', async () => {
    const sale = uniqueSale('crash');
    const N = 3000;
    const clicks = Array.from({ length: N }, (_, i) => clickEvent(sale, i));
    const orders = Array.from({ length: 40 }, (_, i) => orderEvent(sale, `order-${sale}-${i}`, 'reserved', i));
    const producer = await connectedProducer(kafka);
    // Small sends make small record batches, so a 16 KiB fetch really stops inside the fenced range.
    await produce(producer, topics.clickstream, clicks.map(messageOf), 20);
    await produce(producer, topics.orders, orders.map(messageOf));
    await producer.disconnect();

    const signal = await runUntilKilled({
      CRASH_CHDB_DIR: dir,
      CRASH_CLICKSTREAM: topics.clickstream,
      CRASH_ORDERS: topics.orders,
      CRASH_DLQ: topics.deadLetters,
      CRASH_WAREHOUSE_GROUP: groupIds.warehouse,
      CRASH_ORDER_GROUP: groupIds.orderStore,
      CRASH_MAX_ROWS: '100',
      CRASH_MARKER: marker,
    });
    expect(signal).toBe('SIGKILL');
    expect(existsSync(marker)).toBe(true);
    const crashed = JSON.parse(readFileSync(marker, 'utf8')) as { topic: string; partition: number; from: string; to: string };

    // The killed process inserted its batch but never committed past its first offset.
    test = await openTestWarehouse(dir);
    const table = crashed.topic === topics.orders ? 'order_facts' : 'clickstream_events';
    const before = await countOf(test.warehouse, `SELECT count() AS n FROM ${table} WHERE sale_id = {sale:String}`, { sale });
    // At least that batch; the other partition's batch, written at the same moment, may be in too, also uncommitted.
    expect(before).toBeGreaterThanOrEqual(Number(crashed.to) - Number(crashed.from) + 1);
    expect(before).toBeLessThan(N);
    const admin = kafka.admin();
    await admin.connect();
    const [committed] = await admin.fetchOffsets({ groupId: groupIds.warehouse, topics: [crashed.topic] });
    await admin.disconnect();
    const left = committed!.partitions.find((p) => p.partition === crashed.partition)!;
    expect(BigInt(left.offset)).toBeLessThanOrEqual(BigInt(crashed.from));

    // Restart with a batch size that would cut the partition differently, and fetches so small (16 KiB)
    // that the fenced batch must be carried across several of them.
    const replayedBefore = (await ingestMetrics.replayedBatches.get()).values.find((v) => v.labels.sink === 'warehouse')?.value ?? 0;
    const limits = { maxRows: 5000, lingerMs: 50, minBytes: 1, maxBytesPerPartition: 16 << 10 };
    const ingest = await startIngest({ warehouse: test.warehouse, pool, kafka, topics, groupIds, limits });
    try {
      await waitUntil(
        async () =>
          (await groupCaughtUp(kafka, groupIds.warehouse, [topics.clickstream, topics.orders])) &&
          (await groupCaughtUp(kafka, groupIds.orderStore, [topics.orders])),
        60_000,
        'ingest to catch up after the crash',
      );
    } finally {
      await ingest.close();
    }

    const where = { sale };
    // Raw counts without FINAL: the replayed batch never became a second part; the rollups were fed once per event too.
    expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: N, distinct: N, funnel: N });
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM order_facts WHERE sale_id = {sale:String}', where)).toBe(orders.length);
    expect(
      await countOf(test.warehouse, 'SELECT sum(orders_reserved) AS n FROM sales_velocity_per_second WHERE sale_id = {sale:String}', where),
    ).toBe(orders.length);
    const stored = await pool.query<{ n: string }>("SELECT count(*) AS n FROM orders WHERE sale_id = $1 AND status = 'reserved'", [sale]);
    expect(Number(stored.rows[0]!.n)).toBe(orders.length);
    const replayedAfter = (await ingestMetrics.replayedBatches.get()).values.find((v) => v.labels.sink === 'warehouse')?.value ?? 0;
    expect(replayedAfter - replayedBefore).toBeGreaterThanOrEqual(1);
  });
});
