// Kill -9 Redis in the middle of a sale, restart it on the same data (AOF, fsync always), and prove no
// accepted order is lost and none duplicated. Shoppers behave as the API tells them: on 503 they retry
// with the same Idempotency-Key. Runs on a private Redis so the shared stack is untouched.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { saleKeys } from '../../sale-core/keys.js';
import { readHoldings, readStockLedger } from '../../sale-core/sales.js';
import { type PrivateServer, startPrivateServer } from '../support/private-server.js';
import {
  createSale,
  OPEN_LIMITS,
  purchase,
  readTopic,
  shopper,
  sleep,
  startTestSaleCore,
  type TestSaleCore,
  ticketFor,
} from './support.js';

let redisServer: PrivateServer;
let core: TestSaleCore;

beforeAll(async () => {
  redisServer = await startPrivateServer('redis');
  core = await startTestSaleCore({ redisUrl: redisServer.url, settings: OPEN_LIMITS });
});

afterAll(async () => {
  await core?.close();
  await redisServer?.dispose();
});

it('kill -9 and restart of Redis mid-sale: every accepted order survives, exactly once, in Redis and Kafka', async () => {
  const saleId = await createSale(core, { stock: 200, limit: 1 });
  const accepted = new Map<string, string>(); // user → order id
  const answersPerKey = new Map<string, Set<string>>();
  let unavailable = 0;
  // Counted from the kill, not from when up() returns: under load the restarted Redis can serve the
  // retrying shoppers before its health check reports back. Redis is dead in between, so an order
  // accepted after the kill was accepted by the restarted server.
  let acceptedAfterKill = 0;
  let killed = false;

  const shopperRun = async (i: number) => {
    await sleep(Math.random() * 4000);
    const who = shopper(`crash-${i}`);
    const key = `key-${i}-${saleId}`;
    const ticket = ticketFor(saleId, who.userId);
    for (let attempt = 0; attempt < 100; attempt++) {
      const sentAfterKill = killed;
      const res = await purchase(core, saleId, who, { key, ticket });
      if (res.statusCode === 503) {
        unavailable++;
        await sleep(100 + Math.random() * 100);
        continue;
      }
      if (res.statusCode === 202) {
        const orderId = res.json().order_id;
        accepted.set(who.userId, orderId);
        if (!answersPerKey.has(key)) answersPerKey.set(key, new Set());
        answersPerKey.get(key)!.add(orderId);
        if (sentAfterKill) acceptedAfterKill++;
      } else {
        expect(res.json().error.code).toBe('SALE_SOLD_OUT');
      }
      return;
    }
    throw new Error(`shopper ${i} never got an answer`);
  };

  const shoppers = Promise.all(Array.from({ length: 400 }, (_, i) => shopperRun(i)));
  // The fault's schedule, not a wait for something: the sale runs 1.5 s, then Redis is dead for 1.5 s.
  await sleep(1500);
  await redisServer.service.down(true); // kill -9
  killed = true;
  await sleep(1500);
  await redisServer.service.up();
  await shoppers;

  expect(unavailable).toBeGreaterThan(0); // the outage really hit shoppers mid-sale
  expect(acceptedAfterKill).toBeGreaterThan(0); // 400 arrivals over 4 s: at most ~150 came before the kill
  expect(accepted.size).toBe(200); // 400 shoppers, 200 units: all sold
  for (const ids of answersPerKey.values()) expect(ids.size).toBe(1); // a retried key got the same order

  const redis = core.context.redis;
  const ledger = await readStockLedger(redis, saleId);
  expect(ledger.available['SKU-1']).toBe(0);
  expect(ledger.reserved['SKU-1']).toBe(200);
  const held = await readHoldings(redis, saleId);
  expect(Object.keys(held).sort()).toEqual([...accepted.keys()].map((u) => `${u}|SKU-1`).sort());
  for (const [user, orderId] of accepted) {
    expect(await redis.hget(saleKeys(saleId).order(orderId), 'user')).toBe(user);
  }

  expect(await core.context.relay.drained(30_000)).toBe(true);
  const events = (await readTopic(core.topics.orders, { expected: 200 })).filter((e) => e.value.sale_id === saleId);
  const distinct = new Map(events.map((e) => [e.value.event_id as string, e.value.order_id as string]));
  // Consumers dedup by event_id; after dedup there is exactly one order_reserved per accepted order.
  expect(distinct.size).toBe(200);
  expect(new Set(distinct.values())).toEqual(new Set(accepted.values()));
}, 120_000);
