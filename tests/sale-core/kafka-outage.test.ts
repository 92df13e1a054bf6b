// Stop Kafka in the middle of a sale: the sale goes on (orders wait in the Redis outbox, clickstream
// events are dropped and counted), and once Kafka is back every accepted order reaches it exactly once
// after dedup by event_id. Runs on a private Kafka so the shared stack is untouched.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { saleKeys } from '../../sale-core/keys.js';
import { createTestTopic } from '../support/kafka.js';
import { type PrivateServer, startPrivateServer } from '../support/private-server.js';
import { createSale, OPEN_LIMITS, purchase, readTopic, shopper, sleep, startTestSaleCore, type TestSaleCore } from './support.js';

let kafkaServer: PrivateServer;
let core: TestSaleCore;
const kafka = () => createKafka('test-private', { brokers: [kafkaServer.url], retry: { retries: 2 } });

beforeAll(async () => {
  kafkaServer = await startPrivateServer('kafka');
  const topics = {
    orders: await createTestTopic('orders.v1', 3, kafka()),
    clickstream: await createTestTopic('clickstream.v1', 3, kafka()),
  };
  core = await startTestSaleCore({ kafkaBrokers: [kafkaServer.url], topics, settings: OPEN_LIMITS });
}, 180_000);

afterAll(async () => {
  await core?.close();
  await kafkaServer?.dispose();
});

it('Kafka stopped mid-sale: purchases keep succeeding, and every accepted order is published once Kafka returns', async () => {
  const saleId = await createSale(core, { stock: 1000, limit: 1 });
  const accepted = new Set<string>();
  const buy = async (from: number, count: number) => {
    for (let i = from; i < from + count; i++) {
      const res = await purchase(core, saleId, shopper(`outage-${i}`));
      expect(res.statusCode).toBe(202);
      accepted.add(res.json().order_id);
    }
  };
  await buy(0, 100);
  expect(await core.context.relay.drained(15_000)).toBe(true);

  await kafkaServer.service.down(true);
  const droppedBefore = core.context.clickstream.droppedCount;
  await buy(100, 150); // every one answered 202: the sale does not wait for Kafka
  // Clickstream does not queue without bound for a dead broker: what it could not deliver is dropped, and counted.
  for (let i = 0; i < 200 && core.context.clickstream.droppedCount === droppedBefore; i++) await sleep(100);
  expect(core.context.clickstream.droppedCount).toBeGreaterThan(droppedBefore);
  // Meanwhile the relay has been failing against the dead broker: the orders wait in the outbox, not lost.
  const waiting = await core.context.redis.xlen(saleKeys(saleId).outbox);
  expect(waiting).toBe(150);

  await kafkaServer.service.up();
  const sentBefore = core.context.clickstream.sentCount;
  await buy(250, 50);
  expect(await core.context.relay.drained(60_000)).toBe(true);
  // …and the clickstream delivers again once Kafka is back (with a fresh idempotent producer).
  for (let i = 0; i < 300 && core.context.clickstream.sentCount < sentBefore + 50; i++) await sleep(100);
  expect(core.context.clickstream.sentCount).toBeGreaterThanOrEqual(sentBefore + 50);

  const events = (await readTopic(core.topics.orders, { expected: 300, kafka: kafka(), timeoutMs: 60_000 })).filter(
    (e) => e.value.sale_id === saleId,
  );
  const distinct = new Map(events.map((e) => [e.value.event_id as string, e.value.order_id as string]));
  expect(distinct.size).toBe(300);
  expect(new Set(distinct.values())).toEqual(accepted);
}, 180_000);
