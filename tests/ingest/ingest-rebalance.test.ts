// A second ingest consumer joins the warehouse group mid-stream: the rebalance moves partitions while
// events keep arriving, and still every event lands exactly once (raw table and rollups).
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { type Ingest, startIngest } from '../../ingest/index.js';
import { createTestTopic, deleteTopics } from '../support/kafka.js';
import { clickEvent, connectedProducer, groupCaughtUp, messageOf, produce, uniqueSale, waitUntil } from './support/events.js';
import { countOf, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

describe('ingest rebalance', () => {
  let kafka: Kafka;
  let test: TestWarehouse;
  const running: Ingest[] = [];
  const topics = { clickstream: '', orders: '', deadLetters: '' };
  const groupIds = { warehouse: `rebalance-warehouse-${randomUUID()}` };

  beforeAll(async () => {
    kafka = createKafka('ingest-rebalance');
    [topics.clickstream, topics.orders, topics.deadLetters] = await Promise.all([
      createTestTopic('clickstream.v1', 6, kafka),
      createTestTopic('orders.v1', 2, kafka),
      createTestTopic('dlq.v1', 1, kafka),
    ]);
    test = await openTestWarehouse();
  });

  afterAll(async () => {
    await Promise.allSettled(running.map((ingest) => ingest.close()));
    await test?.dispose();
    await deleteTopics(Object.values(topics), kafka).catch(() => {});
  });

  it('loses and doubles nothing when a second consumer joins mid-stream', async () => {
    const sale = uniqueSale('rebalance');
    const batchesBy = { first: 0, second: 0 };
    const common = {
      warehouse: test.warehouse,
      kafka,
      topics,
      groupIds,
      sinks: ['warehouse'] as const,
      limits: { maxRows: 300, lingerMs: 20 },
    };
    running.push(await startIngest({ ...common, hooks: { warehouse: { afterWrite: () => void batchesBy.first++ } } }));

    const producer = await connectedProducer(kafka);
    const per = 1000;
    let produced = 0;
    // Keeps producing until the second member has written something too (its join takes a few seconds).
    for (let slice = 0; slice < 12 || (batchesBy.second === 0 && slice < 60); slice++) {
      const events = Array.from({ length: per }, (_, i) => clickEvent(sale, produced + i));
      await produce(producer, topics.clickstream, events.map(messageOf), 500);
      produced += per;
      if (slice === 3) {
        // Joins while the first consumer is busy; kafkajs revokes and reassigns all six partitions.
        running.push(await startIngest({ ...common, migrate: false, hooks: { warehouse: { afterWrite: () => void batchesBy.second++ } } }));
      }
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    await producer.disconnect();
    await waitUntil(() => groupCaughtUp(kafka, groupIds.warehouse, [topics.clickstream]), 90_000, 'both consumers to catch up');
    const N = produced;

    expect(batchesBy.first).toBeGreaterThan(0);
    expect(batchesBy.second).toBeGreaterThan(0);
    const where = { sale };
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM clickstream_events WHERE sale_id = {sale:String}', where)).toBe(N);
    expect(
      await countOf(test.warehouse, 'SELECT uniqExact(event_id) AS n FROM clickstream_events WHERE sale_id = {sale:String}', where),
    ).toBe(N);
    expect(
      await countOf(test.warehouse, 'SELECT sum(events) AS n FROM funnel_stages_per_minute WHERE sale_id = {sale:String}', where),
    ).toBe(N);
  });
});
