// Shared helpers of the sale-core suites: a sale-core on its own topics and its own active-sales set
// (so its relay never touches another suite's sales), sales with unique ids, shoppers with sessions
// and tickets, and reading a test topic back.
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { createKafka } from '../../common/kafka.js';
import type { SaleSettings } from '../../sale-core/context.js';
import { type SaleCore, type SaleCoreOptions, startSaleCore } from '../../sale-core/index.js';
import { saleKeys } from '../../sale-core/keys.js';
import { issueSession, issueTicket, sessionTokenDigest } from '../../sale-core/tokens.js';
import { createTestTopic, deleteTopics } from '../support/kafka.js';

export const ADMIN = 'test-admin-token';
export const SECRET = 'test-secret';

/** Every shopper of a test comes from 127.0.0.1, often thousands at once: no abuse limit applies. */
export const OPEN_LIMITS: Partial<SaleSettings> = {
  ipRatePerSecond: 1_000_000,
  ipBurst: 1_000_000,
  shopperRatePerSecond: 1_000_000,
  shopperBurst: 1_000_000,
  addressRequestsPerMinute: 100_000_000,
  shopperRequestsPerMinute: 100_000_000,
  queueAccountsPerAddress: 100_000_000,
};

export interface TestSaleCore extends SaleCore {
  topics: { orders: string; clickstream: string };
  activeSalesKey: string;
  /** Sales created through createSale(): their keys are removed on close. */
  sales: Set<string>;
}

export async function startTestSaleCore(
  options: SaleCoreOptions & { kafka?: Kafka; topics?: { orders: string; clickstream: string } } = {},
): Promise<TestSaleCore> {
  const kafka = options.kafka ?? createKafka('test-admin');
  const topics = options.topics ?? {
    orders: await createTestTopic('orders.v1', 3, kafka),
    clickstream: await createTestTopic('clickstream.v1', 3, kafka),
  };
  const ownTopics = !options.topics;
  const ownSet = !options.settings?.activeSalesKey;
  const activeSalesKey = options.settings?.activeSalesKey ?? `test:sales:active:${randomUUID()}`;
  const core = await startSaleCore({
    port: 0,
    ...options,
    topics,
    settings: { tokenSecret: SECRET, adminToken: ADMIN, relayIntervalMs: 10, expirySweepMs: 100, ...options.settings, activeSalesKey },
  });
  const sales = new Set<string>();
  const stop = core.close.bind(core);
  // Leave the shared stack as we found it: the sales' keys, the test's set and its topics go.
  const close = async () => {
    const redis = core.context.redis;
    const cleanup = async () => {
      for (const saleId of sales) {
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `sale:{${saleId}}:*`, 'COUNT', 5000);
          cursor = next;
          if (keys.length > 0) await redis.unlink(...keys);
        } while (cursor !== '0');
      }
      if (ownSet) await redis.del(activeSalesKey);
    };
    if (redis.status === 'ready') await cleanup().catch(() => {});
    await stop();
    if (ownTopics && !options.kafka && !options.kafkaBrokers) await deleteTopics(Object.values(topics)).catch(() => {});
  };
  return Object.assign(core, { topics, activeSalesKey, sales, close });
}

export function uniqueSaleId(base: string): string {
  return `${base}-${randomUUID().slice(0, 8)}`;
}

export interface SaleShape {
  id?: string;
  stock?: number;
  limit?: number;
  price?: number;
  /** Below 1 (the least the API accepts), written into the sale's meta after creation: tests of expiry. */
  windowMinutes?: number;
  startsInMs?: number;
  skus?: { sku: string; stock: number; limit: number; price: number }[];
  admissionRate?: number;
  admissionBurst?: number;
}

export async function createSale(core: SaleCore, shape: SaleShape = {}): Promise<string> {
  const id = shape.id ?? uniqueSaleId('sale');
  const now = Date.now();
  const starts = now + (shape.startsInMs ?? -1000);
  const res = await core.app.inject({
    method: 'POST',
    url: '/admin/sales',
    headers: { authorization: `Bearer ${ADMIN}` },
    payload: {
      id,
      title: `Test sale ${id}`,
      starts_at: starts,
      ends_at: starts + 3_600_000,
      payment_window_minutes: Math.max(1, shape.windowMinutes ?? 10),
      ...(shape.admissionRate ? { admission_rate_per_second: shape.admissionRate } : {}),
      ...(shape.admissionBurst !== undefined ? { admission_burst: shape.admissionBurst } : {}),
      skus: shape.skus ?? [
        { sku: 'SKU-1', title: 'Sneaker', price: shape.price ?? 4999, stock: shape.stock ?? 10, limit_per_shopper: shape.limit ?? 1 },
      ],
    },
  });
  if (res.statusCode !== 201) throw new Error(`createSale: ${res.statusCode} ${res.body}`);
  (core as Partial<TestSaleCore>).sales?.add(id);
  if (shape.windowMinutes !== undefined && shape.windowMinutes < 1) {
    await core.context.redis.hset(saleKeys(id).meta, 'window_ms', Math.round(shape.windowMinutes * 60_000));
  }
  return id;
}

export interface Shopper {
  userId: string;
  token: string;
  sessionId: string;
  expiresAt: number;
}

export function shopper(userId: string, sessionTtlMs = 3_600_000): Shopper {
  const sessionId = randomUUID();
  const expiresAt = Date.now() + sessionTtlMs;
  const token = issueSession({ sessionId, anonId: `anon-${userId}`, userId, expiresAt }, SECRET);
  return { userId, token, sessionId, expiresAt };
}

export function ticketFor(saleId: string, userId: string, ttlMs = 600_000): string {
  return issueTicket({ saleId, userId, position: 1, expiresAt: Date.now() + ttlMs }, SECRET);
}

/** A ticket as the waiting room issues it: naming the session it admitted (see AdmissionTicket.session). */
export function boundTicketFor(saleId: string, who: Shopper, ttlMs = 600_000): string {
  const session = {
    sessionId: who.sessionId,
    anonId: `anon-${who.userId}`,
    expiresAt: who.expiresAt,
    tokenDigest: sessionTokenDigest(who.token),
  };
  return issueTicket({ saleId, userId: who.userId, position: 1, expiresAt: Date.now() + ttlMs, session }, SECRET);
}

export function purchase(
  core: SaleCore,
  saleId: string,
  who: Shopper,
  options: { sku?: string; ticket?: string; key?: string; qty?: number } = {},
) {
  return core.app.inject({
    method: 'POST',
    url: `/sales/${saleId}/purchase`,
    headers: {
      authorization: `Bearer ${who.token}`,
      'idempotency-key': options.key ?? randomUUID(),
      'x-forwarded-for': '10.0.0.1',
    },
    payload: {
      sku: options.sku ?? 'SKU-1',
      ticket: options.ticket ?? ticketFor(saleId, who.userId),
      ...(options.qty ? { qty: options.qty } : {}),
    },
  });
}

/** Every message on a topic from the beginning, read until `expected` arrived and the topic is quiet. */
export async function readTopic(
  topic: string,
  {
    expected = 0,
    quietMs = 1500,
    timeoutMs = 30_000,
    kafka = createKafka('test-reader'),
  }: { expected?: number; quietMs?: number; timeoutMs?: number; kafka?: Kafka } = {},
): Promise<{ key: string; value: Record<string, unknown> }[]> {
  const consumer = kafka.consumer({ groupId: `test-${randomUUID()}` });
  // Keyed by partition and offset: a rebalance while the group settles may deliver a batch twice, and
  // we count messages in the topic, not deliveries.
  const seen = new Map<string, { key: string; value: Record<string, unknown> }>();
  let last = Date.now();
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          seen.set(`${batch.partition}:${m.offset}`, { key: m.key?.toString() ?? '', value: JSON.parse(m.value?.toString() ?? 'null') });
        }
        last = Date.now();
      },
    });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (seen.size >= expected && Date.now() - last > quietMs) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await consumer.disconnect();
  }
  return [...seen.values()];
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Probes until `holds` (or a deadline passes) and returns the last value, for the test to assert on. */
export async function until<T>(probe: () => Promise<T>, holds: (value: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await probe();
  while (!holds(value) && Date.now() < deadline) {
    await sleep(50);
    value = await probe();
  }
  return value;
}
