// Real-time offers on the real Kafka (topics of this test's own) and Redis: shoppers refused for stock, or
// whose reservation lapsed, in a running sale get an offer for its follow-up sale; hold-outs and bots do not;
// every decision is recorded in the warehouse. The time from the refusal event to the offer being readable
// in Redis is measured and reported as a test annotation (the target is 5 s; timings are never asserted).
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RealtimeOffers, startRealtimeOffers } from '../../analytics/offers/realtime.js';
import { parseOfferRules } from '../../analytics/offers/rules.js';
import { type ClickstreamEvent, encodeEvent, newEventId, type OrderEvent } from '../../common/events.js';
import { createKafka } from '../../common/kafka.js';
import { readOffer } from '../../common/offers.js';
import { createRedis } from '../../common/redis.js';
import { createTestTopic, deleteTopics } from '../support/kafka.js';
import { openWarehouseEndpoint, type TestWarehouseEndpoint } from './insights-warehouse.js';
import { createTargetSale, dropSales, uniqueSale } from './offers-support.js';

const RULES = parseOfferRules({
  holdout_share: 0.1,
  rules: [
    {
      id: 'missed-out-early',
      when: { segments: ['missed_out'], events: ['refused_for_stock', 'reservation_lapsed'] },
      offer: { kind: 'early_access', minutes: 10 },
      budget: { max_offers: 1000 },
    },
  ],
});

const kafka = createKafka('offers-realtime-test');
let wh: TestWarehouseEndpoint;
let redis: Redis;
let producer: Producer;
let realtime: RealtimeOffers | undefined;
const topics = { clickstream: '', orders: '' };
const running = uniqueSale('rt-running');
const followUp = uniqueSale('rt-next');

const heldOut = (shopper: string) => createHash('sha256').update(`rt-${followUp}:${shopper}`).digest().readUInt32BE(0) / 2 ** 32 < 0.1;

function refusal(userId: string, extra: Partial<ClickstreamEvent> = {}): ClickstreamEvent {
  const ts = Date.now();
  return {
    event_id: newEventId(ts),
    type: 'purchase_rejected',
    ts,
    sale_id: running,
    user_id: userId,
    anon_id: `anon-${userId}`,
    session_id: `s-${userId}`,
    sku: 'A',
    channel: 'web',
    device: 'desktop',
    ip_hash: 'abcdef0123456789',
    reason: 'sold_out',
    ...extra,
  } as ClickstreamEvent;
}

function lapsed(userId: string): OrderEvent {
  const ts = Date.now();
  return {
    event_id: newEventId(ts),
    type: 'order_expired',
    status: 'expired',
    ts,
    sale_id: running,
    user_id: userId,
    anon_id: `anon-${userId}`,
    session_id: `s-${userId}`,
    sku: 'A',
    channel: 'app',
    device: 'phone',
    ip_hash: 'abcdef0123456789',
    order_id: `${running}.${randomUUID()}`,
    price: 5000,
    qty: 1,
  };
}

beforeAll(async () => {
  wh = await openWarehouseEndpoint('offers-rt');
  redis = createRedis();
  await createTargetSale(redis, running, { startsInMs: -60_000, followUp });
  await createTargetSale(redis, followUp);
  topics.clickstream = await createTestTopic('clickstream.v1', 3, kafka);
  topics.orders = await createTestTopic('orders.v1', 3, kafka);
  producer = kafka.producer();
  await producer.connect();
}, 120_000);

afterAll(async () => {
  await realtime?.stop();
  await producer?.disconnect();
  await deleteTopics([topics.clickstream, topics.orders].filter(Boolean), kafka).catch(() => undefined);
  if (redis) {
    await dropSales(redis, [running, followUp]);
    redis.disconnect();
  }
  await wh?.close();
});

describe('real-time offers', () => {
  it('offers the follow-up sale to shoppers refused for stock or whose reservation lapsed, within seconds', async ({ annotate }) => {
    realtime = await startRealtimeOffers({
      reader: wh.reader,
      redis,
      kafka,
      rules: RULES,
      groupId: `offers-rt-${randomUUID().slice(0, 8)}`,
      topics,
      fromBeginning: true,
      // rt-blind's refusal waits this long for a product view before it counts as a bot's.
      viewGraceMs: 100,
    });
    const refused = Array.from({ length: 60 }, (_, i) => `rt-refused-${i}`);
    const lapsedShoppers = Array.from({ length: 10 }, (_, i) => `rt-lapsed-${i}`);
    // rt-blind went for the stock without ever looking at a product (a bot sale-core did not flag).
    const ignored = ['rt-bot', 'rt-limit', 'rt-blind'];
    const sentAt = new Map<string, number>();
    const send = async (topic: string, userId: string, event: ClickstreamEvent | OrderEvent) => {
      sentAt.set(userId, event.ts);
      await producer.send({ topic, messages: [{ key: userId, value: encodeEvent(event) }] });
    };
    // A shopper looks at the product before being refused (same key, same partition: seen first).
    const looked = (userId: string) => {
      const { reason: _, ...base } = refusal(userId) as ClickstreamEvent & { reason: string };
      return { ...base, type: 'product_view', price: 5000 } as unknown as ClickstreamEvent;
    };
    for (const userId of [...refused, 'rt-bot', 'rt-limit']) {
      await producer.send({ topic: topics.clickstream, messages: [{ key: userId, value: encodeEvent(looked(userId)) }] });
    }
    for (const userId of refused) await send(topics.clickstream, userId, refusal(userId));
    for (const userId of lapsedShoppers) await send(topics.orders, userId, lapsed(userId));
    await send(topics.clickstream, 'rt-bot', refusal('rt-bot', { bot_signals: ['too_fast'] }));
    await send(topics.clickstream, 'rt-limit', refusal('rt-limit', { reason: 'limit_reached' } as Partial<ClickstreamEvent>));
    await send(topics.clickstream, 'rt-blind', refusal('rt-blind'));

    const expected = [...refused, ...lapsedShoppers].filter((u) => !heldOut(u));
    expect(expected.length).toBeLessThan(refused.length + lapsedShoppers.length);
    const seenAfter: number[] = [];
    const waiting = new Set(expected);
    const deadline = Date.now() + 30_000;
    while (waiting.size > 0 && Date.now() < deadline) {
      for (const userId of [...waiting]) {
        if (await readOffer(redis, followUp, userId)) {
          seenAfter.push(Date.now() - sentAt.get(userId)!);
          waiting.delete(userId);
        }
      }
      if (waiting.size > 0) await new Promise((r) => setTimeout(r, 20));
    }
    expect([...waiting]).toEqual([]);

    for (const userId of expected) {
      expect(await readOffer(redis, followUp, userId)).toEqual({
        offer_id: `missed-out-early@rt-${followUp}`,
        kind: 'early_access',
        sku: null,
        price: null,
        early_access_ms: 600_000,
      });
    }
    for (const userId of [...refused, ...lapsedShoppers].filter(heldOut)) expect(await readOffer(redis, followUp, userId)).toBeNull();
    for (const userId of ignored) expect(await readOffer(redis, followUp, userId)).toBeNull();
    // Nothing for the running sale itself.
    expect(await readOffer(redis, running, refused[0]!)).toBeNull();

    // The decisions reach the warehouse, hold-outs included, once each.
    const decided = refused.length + lapsedShoppers.length;
    const deadlineRows = Date.now() + 20_000;
    let rows: { shopper_id: string; holdout: boolean; source: string }[] = [];
    while (Date.now() < deadlineRows) {
      rows = await (
        await wh.reader.query({
          query: 'SELECT shopper_id, holdout, source FROM offers WHERE sale_id = {sale:String} ORDER BY shopper_id',
          query_params: { sale: followUp },
          format: 'JSONEachRow',
        })
      ).json();
      if (rows.length >= decided) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(rows.length).toBe(decided);
    expect(
      rows
        .filter((r) => r.holdout)
        .map((r) => r.shopper_id)
        .sort(),
    ).toEqual([...refused, ...lapsedShoppers].filter(heldOut).sort());
    expect(new Set(rows.map((r) => r.source))).toEqual(new Set(['realtime']));

    const sorted = [...seenAfter].sort((a, b) => a - b);
    const p95 = sorted[Math.ceil(0.95 * sorted.length) - 1]!;
    const own = realtime.latencies().sort((a, b) => a - b);
    expect(own.length).toBe(expected.length);
    // Reported (in the test report), not asserted: timing targets live in bench/, not in tests.
    await annotate(
      `real-time offers: ${expected.length} offers; refusal → offer readable p95 ${p95} ms as the test saw it, ` +
        `${own[Math.ceil(0.95 * own.length) - 1]} ms as the consumer measured it`,
    );
  });
});
