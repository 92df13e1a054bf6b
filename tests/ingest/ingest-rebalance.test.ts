// A second ingest consumer joins the warehouse group mid-stream: the rebalance moves partitions while
// events keep arriving, and still every event lands exactly once (raw table and rollups).
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { type Ingest, startIngest } from '../../ingest/index.js';
import { createIngestTopics, createTestTopic, deleteTopics } from '../support/kafka.js';
import { clickEvent, connectedProducer, groupCaughtUp, messageOf, messagesIn, produce, uniqueSale, waitUntil } from './support/events.js';
import { clickstreamCounts, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

describe('ingest rebalance', () => {
  let kafka: Kafka;
  let test: TestWarehouse;
  const running: Ingest[] = [];
  const topics = { clickstream: '', orders: '', deadLetters: '' };
  const groupIds = { warehouse: `rebalance-warehouse-${randomUUID()}` };
  const extraTopics: string[] = [];

  beforeAll(async () => {
    kafka = createKafka('ingest-rebalance');
    Object.assign(topics, await createIngestTopics(kafka, { clickstream: 6, orders: 2 }));
    test = await openTestWarehouse();
  });

  afterAll(async () => {
    await Promise.allSettled(running.map((ingest) => ingest.close()));
    await test?.dispose();
    await deleteTopics([...Object.values(topics), ...extraTopics], kafka).catch(() => {});
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
    // Each event once in the topic, so a count off below is ingest's doing, not a producer re-send.
    expect(await messagesIn(kafka, topics.clickstream)).toBe(N);
    expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: N, distinct: N, funnel: N });
  });

  it('never moves a committed offset back when partitions move away from batches still being written', async () => {
    const sale = uniqueSale('rebalance-inflight');
    const group = `rebalance-inflight-${randomUUID()}`;
    // A topic of its own: the first test's members are still running on the shared one.
    const own = { ...topics, clickstream: await createTestTopic('clickstream.v1', 6, kafka) };
    extraTopics.push(own.clickstream);
    const common = {
      warehouse: test.warehouse,
      kafka,
      topics: own,
      groupIds: { warehouse: group },
      sinks: ['warehouse'] as const,
      limits: { maxRows: 200, lingerMs: 20 },
    };
    // A slow write on the first member: when the second joins, its lanes hold batches written but not committed.
    const slowWrite = () => new Promise<void>((resolve) => setTimeout(resolve, 500));
    running.push(await startIngest({ ...common, hooks: { warehouse: { afterWrite: slowWrite } } }));

    const admin = kafka.admin();
    await admin.connect();
    const highest = new Map<number, bigint>();
    const regressions: string[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const [offsets] = await admin.fetchOffsets({ groupId: group, topics: [own.clickstream] });
        for (const { partition, offset } of offsets?.partitions ?? []) {
          if (Number(offset) < 0) continue;
          const seen = highest.get(partition) ?? -1n;
          if (BigInt(offset) < seen) regressions.push(`partition ${partition}: ${seen} → ${offset}`);
          else highest.set(partition, BigInt(offset));
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();

    const producer = await connectedProducer(kafka);
    let produced = 0;
    for (let slice = 0; slice < 10; slice++) {
      const events = Array.from({ length: 600 }, (_, i) => clickEvent(sale, produced + i));
      await produce(producer, own.clickstream, events.map(messageOf), 200);
      produced += events.length;
      if (slice === 2) running.push(await startIngest({ ...common, migrate: false }));
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    await producer.disconnect();
    await waitUntil(() => groupCaughtUp(kafka, group, [own.clickstream]), 90_000, 'both consumers to catch up');
    watching = false;
    await watcher;
    await admin.disconnect();

    expect(regressions).toEqual([]);
    expect(await messagesIn(kafka, own.clickstream)).toBe(produced);
    expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: produced, distinct: produced, funnel: produced });
  });
});
