// Valid events of every kind for ingest tests, produced with the contract's own encoder.
import { randomUUID } from 'node:crypto';
import type { Kafka, Message, Producer } from 'kafkajs';
import {
  CLICKSTREAM_TYPES,
  type ClickstreamEvent,
  encodeEvent,
  type FlashSaleEvent,
  keyOf,
  newEventId,
  type OrderEvent,
} from '../../../common/events.js';

const CLICK_KINDS = CLICKSTREAM_TYPES;

function envelope(saleId: string, shopper: number, ts: number) {
  return {
    event_id: newEventId(ts),
    ts,
    sale_id: saleId,
    user_id: shopper % 3 === 0 ? null : `user-${shopper}`,
    anon_id: `anon-${shopper}`,
    session_id: `session-${shopper}`,
    sku: 'sku-1',
    channel: (['web', 'app', 'api'] as const)[shopper % 3]!,
    device: 'phone',
    ip_hash: 'a1b2c3d4e5f60718',
  };
}

/** The i-th clickstream event of a sale: cycles through every clickstream type. */
export function clickEvent(saleId: string, i: number, ts = Date.now()): ClickstreamEvent {
  const base = envelope(saleId, i % 50, ts);
  const kind = CLICK_KINDS[i % CLICK_KINDS.length]!;
  switch (kind) {
    case 'page_view':
      return { ...base, type: kind, sku: null, path: `/sale/${saleId}` };
    case 'product_view':
      return { ...base, type: kind, price: 1999 };
    case 'add_to_cart':
      return { ...base, type: kind, price: 1999, qty: 1 };
    case 'login':
      return { ...base, type: kind };
    case 'queue_joined':
      return { ...base, type: kind, position: i };
    case 'admitted':
      return { ...base, type: kind };
    case 'purchase_attempt':
      return { ...base, type: kind, qty: 1 };
    case 'purchase_rejected':
      return { ...base, type: kind, reason: i % 2 === 0 ? 'sold_out' : 'limit_reached' };
    case 'queue_refused':
      return { ...base, type: kind, reason: 'sold_out', ...(i % 2 === 0 ? { position: i } : {}) };
    default: {
      // A kind added to the contract must be added here too, or every test cycling through kinds skips it.
      const unknown: never = kind;
      throw new Error(`clickEvent: no sample for ${String(unknown)}`);
    }
  }
}

export function orderEvent(
  saleId: string,
  orderId: string,
  status: OrderEvent['status'],
  shopper: number,
  ts = Date.now(),
  qty = 1,
): OrderEvent {
  const base = { ...envelope(saleId, shopper, ts), order_id: orderId, price: 1500, qty };
  if (status === 'reserved') return { ...base, type: 'order_reserved', status, expires_at: ts + 600_000 };
  if (status === 'paid') return { ...base, type: 'order_paid', status };
  return { ...base, type: 'order_expired', status };
}

export const uniqueSale = (name: string) => `${name}-${randomUUID().slice(0, 8)}`;

export function messageOf(event: FlashSaleEvent): Message {
  return { key: keyOf(event), value: encodeEvent(event) };
}

/** Sends in chunks through one producer (acks=all), preserving order per key. */
export async function produce(producer: Producer, topic: string, messages: Message[], chunk = 2000): Promise<void> {
  for (let i = 0; i < messages.length; i += chunk) await producer.send({ topic, acks: -1, messages: messages.slice(i, i + chunk) });
}

/**
 * Idempotent, as sale-core's producers are. kafkajs re-sends a whole produce request when its answer is lost
 * or when one partition of it fails for a retriable reason, and without a producer id the broker appends
 * the partitions that had landed again: the same events at new offsets, which ingest rightly counts twice
 * in the rollups (see ingest/README.md, "Known limits"). That is the signature of a loaded full-suite run of
 * the rebalance test: raw rows and distinct ids exact, funnel 6172 for 6000 events, 172 being one 200-event
 * chunk less the 28 it put on one partition (the one whose failure made kafkajs re-send the request).
 */
export async function connectedProducer(kafka: Kafka): Promise<Producer> {
  const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  return producer;
}

/** How many messages a topic holds (the sum of its partitions' end offsets; test topics are never trimmed). */
export async function messagesIn(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return (await admin.fetchTopicOffsets(topic)).reduce((sum, partition) => sum + Number(partition.high), 0);
  } finally {
    await admin.disconnect();
  }
}

/** True once the group has committed every partition of every topic up to its end. */
export async function groupCaughtUp(kafka: Kafka, groupId: string, topics: string[]): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    for (const topic of topics) {
      const ends = await admin.fetchTopicOffsets(topic);
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
      for (const end of ends) {
        const done = committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? '-1';
        if (BigInt(end.high) > 0n && BigInt(done) < BigInt(end.high)) return false;
      }
    }
    return true;
  } finally {
    await admin.disconnect();
  }
}

export async function waitUntil(check: () => Promise<boolean>, timeoutMs = 60_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
