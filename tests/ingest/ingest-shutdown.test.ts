// A sink that keeps failing: the partition is paused and the write retried; a shutdown (what SIGTERM
// runs) abandons the batch without committing it, and the next start writes every event once.
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openChdbWarehouse } from '../../analytics/warehouse/chdb-warehouse.js';
import { migrate } from '../../analytics/warehouse/migrate.js';
import { createKafka } from '../../common/kafka.js';
import { ingestMetrics, startIngest } from '../../ingest/index.js';
import { createIngestTopics, deleteTopics } from '../support/kafka.js';
import { clickEvent, connectedProducer, groupCaughtUp, messageOf, produce, uniqueSale, waitUntil } from './support/events.js';
import { countOf, freshWarehouseDir, type TestWarehouse } from './support/warehouse.js';

describe('ingest shutdown while the warehouse is failing', () => {
  let kafka: Kafka;
  let test: TestWarehouse;
  const topics = { clickstream: '', orders: '', deadLetters: '' };
  const groupIds = { warehouse: `shutdown-warehouse-${randomUUID()}` };

  beforeAll(async () => {
    kafka = createKafka('ingest-shutdown');
    Object.assign(topics, await createIngestTopics(kafka, { clickstream: 1, orders: 1 }));
    // No migrations yet: every insert fails until the tables exist.
    const dir = freshWarehouseDir();
    const warehouse = await openChdbWarehouse(dir, 'flashsale');
    test = {
      warehouse,
      dir,
      async dispose() {
        await warehouse.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });

  afterAll(async () => {
    await test?.dispose();
    await deleteTopics(Object.values(topics), kafka).catch(() => {});
  });

  it('abandons the failing batch uncommitted, then writes it once when the warehouse is back', async () => {
    const sale = uniqueSale('shutdown');
    const N = 500;
    const producer = await connectedProducer(kafka);
    await produce(
      producer,
      topics.clickstream,
      Array.from({ length: N }, (_, i) => messageOf(clickEvent(sale, i))),
    );
    await producer.disconnect();

    const failures = async () =>
      (await ingestMetrics.sinkFailures.get()).values
        .filter((v) => v.labels.sink === 'warehouse' && v.labels.retriable === 'true')
        .reduce((sum, v) => sum + v.value, 0);
    const failuresBefore = await failures();
    const options = { warehouse: test.warehouse, kafka, topics, groupIds, sinks: ['warehouse'] as const, limits: { lingerMs: 20 } };
    const failing = await startIngest({ ...options, migrate: false });
    await waitUntil(async () => (await failures()) >= failuresBefore + 2, 30_000, 'the sink to fail and retry');
    // The warehouse still fails: close() returns only because it abandons the batch instead of waiting for it.
    await failing.close();
    expect(await groupCaughtUp(kafka, groupIds.warehouse, [topics.clickstream])).toBe(false);

    await migrate(test.warehouse);
    const recovered = await startIngest({ ...options, migrate: false });
    try {
      await waitUntil(() => groupCaughtUp(kafka, groupIds.warehouse, [topics.clickstream]), 30_000, 'ingest to catch up');
    } finally {
      await recovered.close();
    }
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM clickstream_events WHERE sale_id = {sale:String}', { sale })).toBe(N);
  });
});
