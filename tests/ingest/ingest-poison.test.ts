// Issue 12, failure 1: one event must never stop a partition. A message that breaks the contract is parked
// at decode (the lone surrogate of the issue, sent as raw bytes past the sale API); an event that passes
// decode but that the sink refuses for good splits its batch until it stands alone, is parked with
// `sink_refused`, and everything around it lands. A retriable warehouse outage loses and doubles nothing,
// and a partition held up past the stuck time makes the ingest ops app not ready.
import { randomUUID } from 'node:crypto';
import type { Kafka, Producer } from 'kafkajs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Warehouse } from '../../analytics/warehouse/warehouse.js';
import { WarehouseError } from '../../analytics/warehouse/warehouse.js';
import { CLICKSTREAM_TYPES, type ClickstreamEvent, decodeEvent, type EventContractError, encodeEvent } from '../../common/events.js';
import { createServiceApp } from '../../common/http.js';
import { createKafka } from '../../common/kafka.js';
import { registry } from '../../common/metrics.js';
import { createPostgresPool } from '../../common/postgres.js';
import { type Ingest, startIngest } from '../../ingest/index.js';
import { createWarehouseSink } from '../../ingest/warehouse-sink.js';
import { createIngestTopics, createTestTopic, deleteTopics } from '../support/kafka.js';
import { readDeadLetters } from './support/dead-letters.js';
import { clickEvent, connectedProducer, groupCaughtUp, messageOf, orderEvent, produce, uniqueSale, waitUntil } from './support/events.js';
import { clickstreamCounts, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

/** A page_view of the sale (the i-th shopper's) on `path`. */
function pageView(sale: string, i: number, path: string): ClickstreamEvent {
  // clickEvent cycles through the kinds, page_view first.
  return { ...(clickEvent(sale, i * CLICKSTREAM_TYPES.length) as ClickstreamEvent & { type: 'page_view' }), path };
}

/** The request of the issue as it reaches Kafka: a page_view whose path is a lone surrogate, `"path":"\ud800"`. */
function surrogateBytes(sale: string, i: number): Buffer {
  return Buffer.from(
    encodeEvent(pageView(sale, i, 'LONE'))
      .toString()
      .replace('"LONE"', '"\\ud800"'),
  );
}

describe('ingest: poison events never stall a partition', () => {
  let kafka: Kafka;
  let producer: Producer;
  let pool: pg.Pool;
  let test: TestWarehouse;
  let ingest: Ingest;
  const topics = { clickstream: '', orders: '', deadLetters: '' };
  const groupIds = { warehouse: `poison-warehouse-${randomUUID()}`, orderStore: `poison-orders-${randomUUID()}` };
  const extraTopics: string[] = [];

  beforeAll(async () => {
    kafka = createKafka('ingest-poison');
    Object.assign(topics, await createIngestTopics(kafka, { clickstream: 2, orders: 2 }));
    producer = await connectedProducer(kafka);
    pool = createPostgresPool({ max: 4 });
    test = await openTestWarehouse();
    // Test-only constraints on this file's own warehouse: rows that pass the event contract and that
    // ClickHouse still refuses (VIOLATED_CONSTRAINT), as any future engine or schema rule might.
    await test.warehouse.command(
      "ALTER TABLE clickstream_events ADD CONSTRAINT test_refused_path CHECK ifNull(path, '') NOT LIKE '%/refused-by-warehouse%'",
    );
    await test.warehouse.command(
      "ALTER TABLE order_facts ADD CONSTRAINT test_refused_order CHECK order_id NOT LIKE 'refused-by-warehouse%'",
    );
    ingest = await startIngest({ warehouse: test.warehouse, pool, kafka, topics, groupIds, limits: { lingerMs: 50, maxRows: 500 } });
  });

  afterAll(async () => {
    await ingest?.close();
    await producer?.disconnect();
    await pool?.end();
    await test?.dispose();
    await deleteTopics([...Object.values(topics), ...extraTopics], kafka).catch(() => {});
  });

  const parkedFrom = async (topic: string, expected: number) =>
    (await readDeadLetters(kafka, topics.deadLetters, expected)).filter((message) => message.headers['dlq-topic'] === topic);

  it('decode refuses what the warehouse could not store as sent', () => {
    const sale = uniqueSale('poison-decode');
    const reasonOf = (bytes: Buffer) => {
      try {
        decodeEvent(bytes, 'clickstream.v1');
        return 'accepted';
      } catch (error) {
        return (error as EventContractError).reason;
      }
    };
    expect(reasonOf(surrogateBytes(sale, 0))).toBe('invalid_unicode');
    expect(reasonOf(Buffer.from(surrogateBytes(sale, 0).toString().replace('\\ud800', '\\udfff')))).toBe('invalid_unicode');
    // A whole pair, escaped, is fine: that is just a character outside the BMP.
    expect(reasonOf(Buffer.from(surrogateBytes(sale, 0).toString().replace('\\ud800', '\\ud83d\\ude00')))).toBe('accepted');
    expect(reasonOf(Buffer.concat([encodeEvent(pageView(sale, 1, '/x')).subarray(0, -3), Buffer.from([0xff, 0x22, 0x7d])]))).toBe(
      'invalid_unicode',
    );
    // ClickHouse would store 2^32 + 1 in the UInt32 queue_position as 1.
    const joined = { ...clickEvent(sale, 4), type: 'queue_joined', position: 2 ** 32 + 1 };
    expect(reasonOf(Buffer.from(JSON.stringify(joined)))).toBe('schema_violation');
    expect(reasonOf(Buffer.from(JSON.stringify({ ...joined, position: 2 ** 32 - 1 })))).toBe('accepted');
  });

  it('the warehouse refuses a lone surrogate for good (a permanent, coded error)', async () => {
    const sale = uniqueSale('poison-direct');
    const raw = surrogateBytes(sale, 0);
    // Straight to the sink, past decode: what a consumer that trusted the sale API would have written.
    const event = JSON.parse(raw.toString()) as ClickstreamEvent;
    const sink = createWarehouseSink(test.warehouse);
    const batch = { topic: 'clicks', partition: 0, firstOffset: '0', lastOffset: '0', replay: false };
    const refusal = await sink.write({ ...batch, events: [{ event, partition: 0, offset: '0', raw }] }).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(WarehouseError);
    expect(refusal).toMatchObject({ retriable: false, code: 'CANNOT_PARSE_ESCAPE_SEQUENCE', clickhouseCode: 25 });
  });

  it('clickstream: parks the surrogate of the issue, bad UTF-8 and a row the warehouse refuses; the rest lands', async () => {
    const sale = uniqueSale('poison-clicks');
    const good = Array.from({ length: 60 }, (_, i) => clickEvent(sale, i));
    const surrogate = { key: 'poison-surrogate', value: surrogateBytes(sale, 100) };
    const badUtf8 = {
      key: 'poison-utf8',
      value: Buffer.concat([encodeEvent(clickEvent(sale, 101)).subarray(0, 20), Buffer.from([0xc3, 0x28])]),
    };
    const refused = messageOf(pageView(sale, 102, `/sale/${sale}/refused-by-warehouse`));
    const messages = [
      ...good.slice(0, 20).map(messageOf),
      surrogate,
      ...good.slice(20, 30).map(messageOf),
      refused,
      ...good.slice(30, 40).map(messageOf),
      badUtf8,
      ...good.slice(40).map(messageOf),
    ];
    // One partition, so the refused row shares a batch with good ones and the batch has to be split.
    await producer.send({ topic: topics.clickstream, acks: -1, messages: messages.map((message) => ({ ...message, partition: 1 })) });
    await waitUntil(() => groupCaughtUp(kafka, groupIds.warehouse, [topics.clickstream]), 30_000, 'the clickstream lag to reach zero');

    expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: good.length, distinct: good.length, funnel: good.length });
    const parked = await parkedFrom(topics.clickstream, 3);
    expect(parked.map((message) => [message.key, message.headers['dlq-reason']]).sort()).toEqual(
      [
        ['poison-surrogate', 'invalid_unicode'],
        ['poison-utf8', 'invalid_unicode'],
        [String(refused.key), 'sink_refused'],
      ].sort(),
    );
    const surrogateParked = parked.find((message) => message.key === 'poison-surrogate')!;
    // The original bytes, untouched: the escape itself, not a replacement character.
    expect(surrogateParked.value).toContain('"path":"\\ud800"');
    expect(surrogateParked.headers['dlq-detail']).toMatch(/\/path holds a lone UTF-16 surrogate/);
    const refusedParked = parked.find((message) => message.headers['dlq-reason'] === 'sink_refused')!;
    expect(refusedParked.headers['dlq-group']).toBe(groupIds.warehouse);
    expect(refusedParked.headers['dlq-partition']).toBe('1');
    expect(refusedParked.headers['dlq-offset']).toBe('31');
    expect(refusedParked.headers['dlq-detail']).toMatch(/warehouse VIOLATED_CONSTRAINT: .*test_refused_path/);
  });

  it('orders: each sink parks the event it refuses and writes the rest; the other sink is not held up', async () => {
    const sale = uniqueSale('poison-orders');
    const t0 = Date.now();
    const good = Array.from({ length: 40 }, (_, i) => orderEvent(sale, `order-${sale}-${i}`, 'reserved', i, t0));
    // PostgreSQL refuses a NUL character in text (SQLSTATE 22021); ClickHouse stores it.
    const nul = orderEvent(sale, `order-${sale}-nul\u0000`, 'reserved', 1, t0);
    // The warehouse refuses this one (the test constraint); PostgreSQL stores it.
    const warehouseRefused = orderEvent(sale, `refused-by-warehouse-${sale}`, 'reserved', 2, t0);
    const messages = [...good.slice(0, 15), nul, ...good.slice(15, 30), warehouseRefused, ...good.slice(30)].map(messageOf);
    await producer.send({ topic: topics.orders, acks: -1, messages: messages.map((message) => ({ ...message, partition: 0 })) });
    await waitUntil(
      async () =>
        (await groupCaughtUp(kafka, groupIds.warehouse, [topics.orders])) &&
        (await groupCaughtUp(kafka, groupIds.orderStore, [topics.orders])),
      30_000,
      'both groups to reach zero lag on orders',
    );

    const stored = await pool.query<{ order_id: string }>('SELECT order_id FROM orders WHERE sale_id = $1 ORDER BY order_id', [sale]);
    expect(stored.rows.map((row) => row.order_id).sort()).toEqual(
      [...good.map((event) => event.order_id), warehouseRefused.order_id].sort(),
    );
    const facts = await test.warehouse.query<{ order_id: string }>('SELECT order_id FROM order_facts WHERE sale_id = {sale:String}', {
      sale,
    });
    expect(facts.map((row) => row.order_id).sort()).toEqual([...good.map((event) => event.order_id), nul.order_id].sort());

    const parked = await parkedFrom(topics.orders, 2);
    const byGroup = Object.fromEntries(parked.map((message) => [message.headers['dlq-group'], message]));
    expect(parked).toHaveLength(2);
    expect(byGroup[groupIds.orderStore]?.headers['dlq-reason']).toBe('sink_refused');
    expect(byGroup[groupIds.orderStore]?.headers['dlq-detail']).toMatch(/^order-store 22021: /);
    expect(JSON.parse(String(byGroup[groupIds.orderStore]?.value)).order_id).toBe(nul.order_id);
    expect(byGroup[groupIds.warehouse]?.headers['dlq-reason']).toBe('sink_refused');
    expect(JSON.parse(String(byGroup[groupIds.warehouse]?.value)).order_id).toBe(warehouseRefused.order_id);
  });

  it('a split interrupted after some parts landed is replayed with the same parts and tokens: nothing doubled', async () => {
    const sale = uniqueSale('poison-replay');
    const own = { ...topics, clickstream: await createTestTopic('clickstream.v1', 1, kafka) };
    extraTopics.push(own.clickstream);
    const group = `poison-replay-${randomUUID()}`;
    const good = Array.from({ length: 40 }, (_, i) => clickEvent(sale, i));
    const refused = pageView(sale, 50, `/sale/${sale}/refused-by-warehouse`);
    await producer.send({
      topic: own.clickstream,
      acks: -1,
      messages: [...good.slice(0, 30), refused, ...good.slice(30)].map(messageOf),
    });

    // Records the token of every insert that landed; the first member stops (as a crash would: nothing
    // more committed) right after the first part of its split landed.
    const landed: { member: number; token: string }[] = [];
    let member = 1;
    let first: Ingest | undefined;
    let stopping: Promise<void> | undefined;
    const recording: Warehouse = {
      ...test.warehouse,
      async insert(table, rows, insertOptions) {
        await test.warehouse.insert(table, rows, insertOptions);
        landed.push({ member, token: String(insertOptions?.dedupToken) });
      },
      async insertJsonEachRow(table, payload, columns, insertOptions) {
        await test.warehouse.insertJsonEachRow!(table, payload, columns, insertOptions);
        const token = String(insertOptions?.dedupToken);
        landed.push({ member, token });
        if (member === 1 && token.includes('/')) stopping ??= first!.close();
      },
    };
    const options = {
      warehouse: recording,
      kafka,
      topics: own,
      groupIds: { warehouse: group },
      sinks: ['warehouse'] as const,
      migrate: false,
      limits: { lingerMs: 20, maxRows: 500 },
    };
    first = await startIngest(options);
    await waitUntil(async () => stopping !== undefined, 30_000, 'the first part of the split to land');
    await stopping;
    expect(await groupCaughtUp(kafka, group, [own.clickstream])).toBe(false);

    member = 2;
    const second = await startIngest(options);
    try {
      await waitUntil(() => groupCaughtUp(kafka, group, [own.clickstream]), 30_000, 'the replay to finish');
    } finally {
      await second.close();
    }
    const partsOf = (who: number) =>
      landed.filter((entry) => entry.member === who && entry.token.includes('/')).map((entry) => entry.token);
    // The replay cut the batch the same way: the part that landed before came again under the same token.
    expect(partsOf(1)).toHaveLength(1);
    expect(partsOf(2)).toContain(partsOf(1)[0]);
    // ...and ClickHouse dropped it, so every good event is stored once and the refused one not at all.
    expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: good.length, distinct: good.length, funnel: good.length });
    const parked = await parkedFrom(own.clickstream, 1);
    expect(parked.map((message) => message.headers['dlq-reason'])).toEqual(['sink_refused']);
  });

  it('a retriable warehouse outage loses and doubles nothing; the held-up partitions make /readyz fail until it ends', async () => {
    const sale = uniqueSale('poison-outage');
    const own = { ...topics, clickstream: await createTestTopic('clickstream.v1', 3, kafka) };
    extraTopics.push(own.clickstream);
    const group = `poison-outage-${randomUUID()}`;
    // Fault injection around the real chdb: while down, an insert either fails before it reaches the
    // warehouse or lands and then loses its answer, both as a retriable (connection) failure.
    let down = true;
    let attempts = 0;
    const outage = () => new WarehouseError('warehouse unreachable (injected)', { failure: { code: 'CONNECTION', retriable: true } });
    const flaky: Warehouse = {
      ...test.warehouse,
      async insert(table, rows, insertOptions) {
        if (down && attempts++ % 2 === 0) throw outage();
        await test.warehouse.insert(table, rows, insertOptions);
        if (down) throw outage();
      },
      async insertJsonEachRow(table, payload, columns, insertOptions) {
        if (down && attempts++ % 2 === 0) throw outage();
        await test.warehouse.insertJsonEachRow!(table, payload, columns, insertOptions);
        if (down) throw outage();
      },
    };
    const outageIngest = await startIngest({
      warehouse: flaky,
      kafka,
      topics: own,
      groupIds: { warehouse: group },
      sinks: ['warehouse'],
      migrate: false,
      limits: { lingerMs: 20, maxRows: 200 },
      stuckAfterMs: 1500,
    });
    // The same readiness main.ts gives the ingest ops app.
    const ops = await createServiceApp({
      name: 'ingest-poison-ops',
      ready: async () => outageIngest.health().stuckPartitions.length === 0 && (await flaky.ping()),
    });
    try {
      const N = 900;
      await produce(
        producer,
        own.clickstream,
        Array.from({ length: N }, (_, i) => messageOf(clickEvent(sale, i))),
      );
      const readyz = async () => (await ops.inject({ method: 'GET', url: '/readyz' })).statusCode;
      await waitUntil(
        async () => {
          await outageIngest.checkPartitions();
          return outageIngest.health().stuckPartitions.length === 3;
        },
        30_000,
        'all three partitions to be reported stuck',
      );
      expect(await readyz()).toBe(503);
      const metrics = await registry.metrics();
      for (const partition of ['0', '1', '2']) {
        expect(metrics).toContain(
          `flashsale_ingest_partition_stuck{group="${group}",topic="${own.clickstream}",partition="${partition}"} 1`,
        );
      }
      expect(attempts).toBeGreaterThan(3);

      down = false;
      await waitUntil(() => groupCaughtUp(kafka, group, [own.clickstream]), 60_000, 'ingest to catch up after the outage');
      expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: N, distinct: N, funnel: N });
      await waitUntil(
        async () => {
          await outageIngest.checkPartitions();
          return outageIngest.health().stuckPartitions.length === 0;
        },
        30_000,
        'the stuck partitions to clear',
      );
      expect(await readyz()).toBe(200);
      expect(await registry.metrics()).toContain(
        `flashsale_ingest_partition_stuck{group="${group}",topic="${own.clickstream}",partition="0"} 0`,
      );
      // Nothing was parked: an outage is not the data's fault.
      expect(await parkedFrom(own.clickstream, 0)).toEqual([]);
    } finally {
      await ops.close();
      await outageIngest.close();
    }
  });
});
