// Issue 12, failure 11: a member evicted from its group (here: stalled past its session timeout, with no
// heartbeat, as a frozen process would be) must give up its batch without committing and rejoin, and
// the order store must catch up with nothing lost or doubled. And a long sink write heartbeats, so it
// does not get its member evicted in the first place.
import { randomUUID } from 'node:crypto';
import type { Admin, Kafka } from 'kafkajs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Warehouse } from '../../analytics/warehouse/warehouse.js';
import { createKafka } from '../../common/kafka.js';
import { createPostgresPool } from '../../common/postgres.js';
import { type Ingest, ingestMetrics, startIngest } from '../../ingest/index.js';
import { createIngestTopics, deleteTopics } from '../support/kafka.js';
import { clickEvent, connectedProducer, groupCaughtUp, messageOf, orderEvent, produce, uniqueSale, waitUntil } from './support/events.js';
import { clickstreamCounts, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

// The broker's minimum session timeout: the eviction comes as soon as it can.
const SESSION_TIMEOUT_MS = 6000;

const abandoned = async (group: string) =>
  (await ingestMetrics.abandonedBatches.get()).values.filter((v) => v.labels.group === group).reduce((sum, v) => sum + v.value, 0);

describe('ingest: eviction from the consumer group', () => {
  let kafka: Kafka;
  let admin: Admin;
  let pool: pg.Pool;
  let test: TestWarehouse;
  const running: Ingest[] = [];
  const topics: string[] = [];

  beforeAll(async () => {
    kafka = createKafka('ingest-eviction');
    admin = kafka.admin();
    await admin.connect();
    pool = createPostgresPool({ max: 4 });
    test = await openTestWarehouse();
  });

  afterAll(async () => {
    await Promise.allSettled(running.map((ingest) => ingest.close()));
    await admin?.disconnect();
    await pool?.end();
    await test?.dispose();
    await deleteTopics(topics, kafka).catch(() => {});
  });

  const ownTopics = async () => {
    const own = await createIngestTopics(kafka, { clickstream: 1, orders: 1 });
    topics.push(...Object.values(own));
    return own;
  };

  /** True once the broker has dropped every member of the group (the session timed out). */
  const groupEmptied = async (group: string) => {
    const { groups } = await admin.describeGroups([group]);
    return groups[0]?.members.length === 0;
  };

  it('an evicted order-store member gives up its batch, rejoins, and PostgreSQL catches up exactly', async () => {
    const sale = uniqueSale('eviction');
    const own = await ownTopics();
    const group = `eviction-orders-${randomUUID()}`;
    let stalled = false;
    const ingest = await startIngest({
      warehouse: test.warehouse,
      pool,
      kafka,
      topics: own,
      groupIds: { orderStore: group },
      sinks: ['order-store'],
      limits: { lingerMs: 20, maxRows: 25 },
      sessionTimeoutMs: SESSION_TIMEOUT_MS,
      hooks: {
        orderStore: {
          // The first batch, once written, stalls without a heartbeat until the broker has evicted the
          // member (a frozen process, a long GC pause); its offset commit then meets UNKNOWN_MEMBER_ID.
          async afterWrite() {
            if (stalled) return;
            stalled = true;
            await waitUntil(() => groupEmptied(group), 30_000, 'the broker to evict the stalled member');
          },
        },
      },
    });
    running.push(ingest);

    const orders = Array.from({ length: 100 }, (_, i) => `order-${sale}-${i}`);
    const t0 = Date.now();
    const messages = orders.map((orderId, i) => messageOf(orderEvent(sale, orderId, 'reserved', i, t0)));
    for (const [i, orderId] of orders.entries()) {
      if (i % 2 === 0) messages.push(messageOf(orderEvent(sale, orderId, 'paid', i, t0 + 1000)));
    }
    const producer = await connectedProducer(kafka);
    await produce(producer, own.orders, messages);
    await producer.disconnect();

    await waitUntil(() => groupCaughtUp(kafka, group, [own.orders]), 90_000, 'the order store to catch up after the eviction');
    expect(stalled).toBe(true);
    // The eviction was seen, and handled by giving up the batch (not by committing it).
    expect(await abandoned(group)).toBeGreaterThan(0);

    const { rows } = await pool.query<{ order_id: string; status: string }>(
      'SELECT order_id, status FROM orders WHERE sale_id = $1 ORDER BY order_id',
      [sale],
    );
    expect(rows).toHaveLength(orders.length);
    for (const row of rows) expect(row.status, row.order_id).toBe(Number(row.order_id.split('-').at(-1)) % 2 === 0 ? 'paid' : 'reserved');
    const history = await pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM order_status_history h JOIN orders o USING (order_id) WHERE o.sale_id = $1',
      [sale],
    );
    expect(Number(history.rows[0]!.n)).toBe(orders.length + orders.length / 2);
    // The member is back in the group.
    const { groups } = await admin.describeGroups([group]);
    expect(groups[0]?.members).toHaveLength(1);
  });

  it('a warehouse write longer than the session timeout heartbeats and keeps its member', async () => {
    const sale = uniqueSale('slow-write');
    const own = await ownTopics();
    const group = `eviction-slow-${randomUUID()}`;
    const tokens: string[] = [];
    let slowed = false;
    // Fault injection around the real chdb: the first clickstream insert takes longer than the session timeout.
    const slow: Warehouse = {
      ...test.warehouse,
      async insertJsonEachRow(table, payload, columns, insertOptions) {
        tokens.push(String(insertOptions?.dedupToken));
        if (!slowed) {
          slowed = true;
          await new Promise((resolve) => setTimeout(resolve, SESSION_TIMEOUT_MS + 3000));
        }
        await test.warehouse.insertJsonEachRow!(table, payload, columns, insertOptions);
      },
    };
    const ingest = await startIngest({
      warehouse: slow,
      kafka,
      topics: own,
      groupIds: { warehouse: group },
      sinks: ['warehouse'],
      migrate: false,
      limits: { lingerMs: 20, maxRows: 100 },
      sessionTimeoutMs: SESSION_TIMEOUT_MS,
    });
    running.push(ingest);

    const N = 600;
    const producer = await connectedProducer(kafka);
    // Small sends, so batches queue behind the slow one and eachBatch waits on it.
    await produce(
      producer,
      own.clickstream,
      Array.from({ length: N }, (_, i) => messageOf(clickEvent(sale, i))),
      50,
    );
    await producer.disconnect();

    await waitUntil(() => groupCaughtUp(kafka, group, [own.clickstream]), 60_000, 'ingest to catch up');
    expect(slowed).toBe(true);
    expect(await abandoned(group)).toBe(0);
    // No batch was written twice: the member was never evicted, so nothing was replayed.
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(await clickstreamCounts(test.warehouse, sale)).toEqual({ rows: N, distinct: N, funnel: N });
  });
});
