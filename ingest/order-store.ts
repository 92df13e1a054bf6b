// The order store (PostgreSQL): the system of record for an order's state, fed from orders.v1.
//
// `orders` holds one row per order, hash-partitioned by order_id so the table and its index split across
// partitions (and, at scale, across nodes). `order_status_history` keeps every transition that was
// applied. Applying an event is idempotent and forward-only: reserved → paid | expired, and expired →
// paid, because sale-core emits order_paid after order_expired only when a late payment took a unit
// back atomically (the shopper was charged and holds the unit). Paid is final, so a replayed or late
// event changes nothing.
import type pg from 'pg';
import type { OrderEvent } from '../common/events.js';
import { inTransaction } from '../common/postgres.js';
import { ingestMetrics } from './metrics.js';
import type { Sink, SinkBatch } from './sink.js';

export const ORDER_PARTITIONS = 8;

const partitionsOf = (table: string) =>
  Array.from(
    { length: ORDER_PARTITIONS },
    (_, i) =>
      `CREATE TABLE IF NOT EXISTS ${table}_p${i} PARTITION OF ${table} FOR VALUES WITH (MODULUS ${ORDER_PARTITIONS}, REMAINDER ${i});`,
  ).join('\n');

export const ORDER_STORE_DDL = `
CREATE TABLE IF NOT EXISTS orders (
  order_id          text        NOT NULL,
  sale_id           text        NOT NULL,
  sku               text,
  user_id           text,
  anon_id           text        NOT NULL,
  price_cents       bigint      NOT NULL CHECK (price_cents >= 0),
  qty               integer     NOT NULL CHECK (qty > 0),
  offer_id          text,
  status            text        NOT NULL CHECK (status IN ('reserved', 'paid', 'expired')),
  reserved_at       timestamptz,
  expires_at        timestamptz,
  status_changed_at timestamptz NOT NULL,
  last_event_id     uuid        NOT NULL,
  updated_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (order_id)
) PARTITION BY HASH (order_id);
${partitionsOf('orders')}
CREATE TABLE IF NOT EXISTS order_status_history (
  order_id    text        NOT NULL,
  event_id    uuid        NOT NULL,
  status      text        NOT NULL CHECK (status IN ('reserved', 'paid', 'expired')),
  changed_at  timestamptz NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (order_id, event_id)
) PARTITION BY HASH (order_id);
${partitionsOf('order_status_history')}
CREATE INDEX IF NOT EXISTS orders_sale_status ON orders (sale_id, status);
`;

/** Creates the order store's tables if missing; safe to run from every ingest process at start. */
export async function ensureOrderStore(pool: pg.Pool): Promise<void> {
  // Several ingest processes may start together; CREATE ... IF NOT EXISTS alone can still race.
  await inTransaction(pool, async (client) => {
    await client.query("SELECT pg_advisory_xact_lock(hashtext('flashsale.order_store.ddl'))");
    await client.query(ORDER_STORE_DDL);
  });
}

// The status moves: reserved → paid | expired, expired → paid (a late payment that re-acquired a unit).
const ADVANCES = `((o.status = 'reserved' AND EXCLUDED.status IN ('paid', 'expired')) OR (o.status = 'expired' AND EXCLUDED.status = 'paid'))`;

const APPLY_ORDER_EVENT = `
WITH applied AS (
  INSERT INTO orders AS o (order_id, sale_id, sku, user_id, anon_id, price_cents, qty, offer_id, status,
                           reserved_at, expires_at, status_changed_at, last_event_id)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
  ON CONFLICT (order_id) DO UPDATE
    SET status = CASE WHEN ${ADVANCES} THEN EXCLUDED.status ELSE o.status END,
        status_changed_at = CASE WHEN ${ADVANCES} THEN EXCLUDED.status_changed_at ELSE o.status_changed_at END,
        last_event_id = CASE WHEN ${ADVANCES} THEN EXCLUDED.last_event_id ELSE o.last_event_id END,
        reserved_at = COALESCE(o.reserved_at, EXCLUDED.reserved_at),
        expires_at = COALESCE(o.expires_at, EXCLUDED.expires_at),
        updated_at = now()
    WHERE ${ADVANCES} OR (o.reserved_at IS NULL AND EXCLUDED.reserved_at IS NOT NULL)
  RETURNING order_id
)
INSERT INTO order_status_history (order_id, event_id, status, changed_at)
SELECT order_id, $13, $9, $12 FROM applied
ON CONFLICT DO NOTHING`;

function orderParams(event: OrderEvent): unknown[] {
  const at = new Date(event.ts);
  return [
    event.order_id,
    event.sale_id,
    event.sku,
    event.user_id,
    event.anon_id,
    event.price,
    event.qty,
    event.offer_id ?? null,
    event.status,
    event.type === 'order_reserved' ? at : null,
    event.type === 'order_reserved' ? new Date(event.expires_at) : null,
    at,
    event.event_id,
  ];
}

/**
 * A failed order-store write, with its SQLSTATE (or the socket error code) and whether a retry can help.
 * Class 22 (data exception, e.g. a NUL character in text) and 23 (integrity constraint) mean PostgreSQL
 * refuses the rows themselves: they fail again on every retry. Everything else (class 08 connection,
 * 53 resources, 57P01-03 shutdown, 40001/40P01 serialization and deadlock, a missing table, a socket
 * error) is retried: it costs time, never data.
 */
export class OrderStoreError extends Error {
  readonly code: string;
  readonly retriable: boolean;
  constructor(message: string, options: { cause?: unknown; code: string; retriable: boolean }) {
    super(message, { cause: options.cause });
    this.name = 'OrderStoreError';
    this.code = options.code;
    this.retriable = options.retriable;
  }
}

export function orderStoreErrorOf(error: unknown): OrderStoreError {
  if (error instanceof OrderStoreError) return error;
  const code = typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : 'UNKNOWN';
  const sqlState = /^[0-9A-Z]{5}$/.test(code);
  const refused = sqlState && (code.startsWith('22') || code.startsWith('23'));
  return new OrderStoreError(`order store write failed: ${(error as Error)?.message ?? String(error)}`, {
    cause: error,
    code,
    retriable: !refused,
  });
}

/** Applies order events in their Kafka order in one transaction; returns how many changed an order. */
export async function applyOrderEvents(pool: pg.Pool, events: readonly OrderEvent[]): Promise<number> {
  if (events.length === 0) return 0;
  let applied: number;
  try {
    applied = await inTransaction(pool, async (client) => {
      let changed = 0;
      for (const event of events) changed += (await client.query(APPLY_ORDER_EVENT, orderParams(event))).rowCount ?? 0;
      return changed;
    });
  } catch (error) {
    throw orderStoreErrorOf(error);
  }
  ingestMetrics.orderTransitions.inc({ outcome: 'applied' }, applied);
  ingestMetrics.orderTransitions.inc({ outcome: 'ignored' }, events.length - applied);
  return applied;
}

export function createOrderStoreSink(pool: pg.Pool): Sink {
  return {
    name: 'order-store',
    // Every event applies idempotently on its own, so batch boundaries do not matter.
    needsStableBatches: false,
    async write(batch: SinkBatch) {
      await applyOrderEvents(
        pool,
        batch.events.map(({ event }) => event as OrderEvent),
      );
      ingestMetrics.rowsWritten.inc({ sink: 'order-store', table: 'orders' }, batch.events.length);
    },
  };
}
