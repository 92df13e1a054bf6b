// End to end on the real broker, PostgreSQL and chdb: events produced → exactly those rows visible,
// bad messages parked in the DLQ with their reason while the good ones around them go through.
import { randomUUID } from 'node:crypto';
import type { Kafka, Producer } from 'kafkajs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLICKSTREAM_TYPES } from '../../common/events.js';
import { createKafka } from '../../common/kafka.js';
import { registry } from '../../common/metrics.js';
import { createPostgresPool } from '../../common/postgres.js';
import { type Ingest, ingestMetrics, startIngest } from '../../ingest/index.js';
import { createIngestTopics, deleteTopics } from '../support/kafka.js';
import { readDeadLetters } from './support/dead-letters.js';
import { clickEvent, connectedProducer, groupCaughtUp, messageOf, orderEvent, produce, uniqueSale, waitUntil } from './support/events.js';
import { clickstreamCounts, countOf, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

describe('ingest end to end', () => {
  let kafka: Kafka;
  let producer: Producer;
  let pool: pg.Pool;
  let test: TestWarehouse;
  let ingest: Ingest;
  const topics = { clickstream: '', orders: '', deadLetters: '' };
  const groupIds = { warehouse: `e2e-warehouse-${randomUUID()}`, orderStore: `e2e-orders-${randomUUID()}` };

  beforeAll(async () => {
    kafka = createKafka('ingest-e2e');
    Object.assign(topics, await createIngestTopics(kafka, { clickstream: 3, orders: 3 }));
    producer = await connectedProducer(kafka);
    pool = createPostgresPool({ max: 4 });
    test = await openTestWarehouse();
    ingest = await startIngest({ warehouse: test.warehouse, pool, kafka, topics, groupIds, limits: { lingerMs: 50, maxRows: 500 } });
  });

  afterAll(async () => {
    await ingest?.close();
    await producer?.disconnect();
    await pool?.end();
    await test?.dispose();
    await deleteTopics(Object.values(topics), kafka).catch(() => {});
  });

  const caughtUp = async () =>
    (await groupCaughtUp(kafka, groupIds.warehouse, [topics.clickstream, topics.orders])) &&
    (await groupCaughtUp(kafka, groupIds.orderStore, [topics.orders]));

  it('writes N clickstream events as exactly N rows, and the rollups count each once', async () => {
    const sale = uniqueSale('e2e-clicks');
    const N = 4000;
    const events = Array.from({ length: N }, (_, i) => clickEvent(sale, i));
    await produce(producer, topics.clickstream, events.map(messageOf));
    await waitUntil(caughtUp, 60_000, 'ingest to catch up');

    const where = { sale };
    expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: N, distinct: N, funnel: N });
    const rejected = events.filter((event) => event.type === 'purchase_rejected').length;
    expect(
      await countOf(test.warehouse, 'SELECT sum(rejections) AS n FROM rejection_reasons_per_minute WHERE sale_id = {sale:String}', where),
    ).toBe(rejected);

    // Columns land where SCHEMA.md says: one spot check per type-specific field.
    const [row] = await test.warehouse.query<Record<string, unknown>>(
      `SELECT type, price_cents, qty, reject_reason, shopper_id, kafka_partition FROM clickstream_events
       WHERE sale_id = {sale:String} AND event_id = {id:UUID}`,
      { sale, id: events[7]!.event_id },
    );
    expect(row).toMatchObject({ type: 'purchase_rejected', reject_reason: 'limit_reached', price_cents: null });
    const [stages] = await test.warehouse.query<{ stages: string }>(
      'SELECT toString(count()) AS stages FROM (SELECT stage FROM funnel_stages_per_minute WHERE sale_id = {sale:String} GROUP BY stage)',
      where,
    );
    expect(stages?.stages).toBe(String(CLICKSTREAM_TYPES.length));
  });

  it('applies order events: right rows, forward-only statuses, idempotent replays', async () => {
    const sale = uniqueSale('e2e-orders');
    const orders = Array.from({ length: 60 }, (_, i) => `order-${sale}-${i}`);
    const t0 = Date.now();
    const messages = [];
    for (const [i, orderId] of orders.entries()) {
      const reserved = orderEvent(sale, orderId, 'reserved', i, t0, 2);
      messages.push(messageOf(reserved));
      if (i % 3 === 0) messages.push(messageOf(orderEvent(sale, orderId, 'paid', i, t0 + 1000, 2)));
      if (i % 3 === 1) messages.push(messageOf(orderEvent(sale, orderId, 'expired', i, t0 + 1000, 2)));
      // Backwards: a paid order cannot expire; the event is recorded in the warehouse but not applied.
      if (i % 3 === 0 && i % 2 === 0) messages.push(messageOf(orderEvent(sale, orderId, 'expired', i, t0 + 2000, 2)));
      // A producer re-send of the reservation (same event_id) changes nothing.
      if (i % 5 === 0) messages.push(messageOf(reserved));
    }
    await produce(producer, topics.orders, messages);
    await waitUntil(caughtUp, 60_000, 'ingest to catch up');

    const { rows } = await pool.query<{ order_id: string; status: string; qty: number }>(
      'SELECT order_id, status, qty FROM orders WHERE sale_id = $1 ORDER BY order_id',
      [sale],
    );
    expect(rows).toHaveLength(orders.length);
    for (const row of rows) {
      const i = Number(row.order_id.split('-').at(-1));
      expect(row.status, row.order_id).toBe(i % 3 === 0 ? 'paid' : i % 3 === 1 ? 'expired' : 'reserved');
      expect(row.qty).toBe(2);
    }
    const history = await pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM order_status_history h JOIN orders o USING (order_id) WHERE o.sale_id = $1',
      [sale],
    );
    expect(Number(history.rows[0]!.n)).toBe(orders.length + orders.filter((_, i) => i % 3 !== 2).length);

    // The warehouse keeps every event as a fact; FINAL folds the re-sent copies.
    const distinct = new Set(messages.map((message) => JSON.parse(String(message.value)).event_id)).size;
    const where = { sale };
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM order_facts FINAL WHERE sale_id = {sale:String}', where)).toBe(distinct);
    // Order facts drop re-sends before insert, so even without FINAL each event is one row.
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM order_facts WHERE sale_id = {sale:String}', where)).toBe(distinct);
    const [velocity] = await test.warehouse.query<{ reserved: string; paid: string; units: string }>(
      `SELECT toString(sum(orders_reserved)) AS reserved, toString(sum(orders_paid)) AS paid, toString(sum(units_paid)) AS units
       FROM sales_velocity_per_second WHERE sale_id = {sale:String}`,
      where,
    );
    const paid = orders.filter((_, i) => i % 3 === 0).length;
    expect(Number(velocity?.paid)).toBe(paid);
    expect(Number(velocity?.units)).toBe(paid * 2);
    // The re-sent reservations did not reserve stock twice.
    expect(Number(velocity?.reserved)).toBe(orders.length);
  });

  it('parks malformed, schema-violating, unknown and misplaced messages in the DLQ and keeps going', async () => {
    const sale = uniqueSale('e2e-dlq');
    const good = Array.from({ length: 30 }, (_, i) => clickEvent(sale, i));
    const notJson = { key: 'bad-1', value: Buffer.from('{"event_id": oops') };
    const violating = { key: 'bad-2', value: Buffer.from(JSON.stringify({ ...good[0]!, event_id: randomUUID(), channel: 'fax' })) };
    const unknown = { key: 'bad-3', value: Buffer.from(JSON.stringify({ ...good[0]!, event_id: randomUUID(), type: 'teleported' })) };
    const misplaced = messageOf(orderEvent(sale, `order-${sale}`, 'reserved', 1));
    const messages = [...good.slice(0, 10).map(messageOf), notJson, violating, ...good.slice(10, 20).map(messageOf), unknown, misplaced];
    messages.push(...good.slice(20).map(messageOf));
    // All on one partition, bad ones between good ones.
    await producer.send({ topic: topics.clickstream, acks: -1, messages: messages.map((message) => ({ ...message, partition: 1 })) });
    await waitUntil(caughtUp, 60_000, 'ingest to catch up');

    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM clickstream_events WHERE sale_id = {sale:String}', { sale })).toBe(
      good.length,
    );
    const parked = await readDeadLetters(kafka, topics.deadLetters, 4);
    const mine = parked.filter((message) => message.headers['dlq-topic'] === topics.clickstream);
    expect(mine.map((message) => message.headers['dlq-reason']).sort()).toEqual([
      'malformed_json',
      'schema_violation',
      'unknown_type',
      'wrong_topic',
    ]);
    const malformed = mine.find((message) => message.headers['dlq-reason'] === 'malformed_json')!;
    expect(malformed.value).toBe('{"event_id": oops');
    expect(malformed.key).toBe('bad-1');
    expect(malformed.headers['dlq-partition']).toBe('1');
    expect(Number(malformed.headers['dlq-offset'])).toBeGreaterThanOrEqual(10);
    expect(malformed.headers['dlq-group']).toBe(groupIds.warehouse);
    expect(mine.find((message) => message.headers['dlq-reason'] === 'schema_violation')!.headers['dlq-detail']).toMatch(/channel/);
  });

  it('exposes lag per partition, rows, batch size and latency, DLQ count and freshness on /metrics', async () => {
    // Its own traffic, so the test holds when run alone (-t) as well as after the others.
    const sale = uniqueSale('e2e-metrics');
    const malformed = async () =>
      (await ingestMetrics.deadLetters.get()).values.find(
        (v) => v.labels.group === groupIds.warehouse && v.labels.topic === topics.clickstream && v.labels.reason === 'malformed_json',
      )?.value ?? 0;
    const malformedBefore = await malformed();
    await produce(producer, topics.clickstream, [
      ...Array.from({ length: 30 }, (_, i) => messageOf(clickEvent(sale, i))),
      { key: 'bad-metrics', value: Buffer.from('{"event_id": oops') },
    ]);
    const orderId = `order-${sale}`;
    // reserved → paid, then an expiry that comes too late: applied, applied, ignored.
    await produce(
      producer,
      topics.orders,
      (['reserved', 'paid', 'expired'] as const).map((status, i) => messageOf(orderEvent(sale, orderId, status, 1, Date.now() + i))),
    );
    await waitUntil(caughtUp, 60_000, 'ingest to catch up');
    // The lag gauge is read from the broker by the partition watch: look once more now that all is committed.
    await ingest.checkPartitions();

    const text = await registry.metrics();
    for (const partition of ['0', '1', '2']) {
      expect(text).toContain(
        `flashsale_ingest_consumer_lag{group="${groupIds.warehouse}",topic="${topics.clickstream}",partition="${partition}"} 0`,
      );
      expect(text).toContain(
        `flashsale_ingest_partition_stuck{group="${groupIds.orderStore}",topic="${topics.orders}",partition="${partition}"} 0`,
      );
    }
    expect(text).toMatch(/flashsale_ingest_rows_total\{sink="warehouse",table="clickstream_events"\} [1-9]/);
    expect(text).toMatch(/flashsale_ingest_rows_total\{sink="order-store",table="orders"\} [1-9]/);
    expect(text).toMatch(/flashsale_ingest_batch_rows_count\{sink="warehouse"\} [1-9]/);
    expect(text).toMatch(/flashsale_ingest_batch_seconds_count\{sink="order-store"\} [1-9]/);
    expect(text).toMatch(/flashsale_ingest_freshness_seconds_count\{sink="warehouse"\} [1-9]/);
    expect(await malformed()).toBe(malformedBefore + 1);
    expect(text).toMatch(/flashsale_ingest_order_transitions_total\{outcome="ignored"\} [1-9]/);
  });
});
