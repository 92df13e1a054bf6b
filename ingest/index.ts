// Ingest: Kafka → ClickHouse warehouse and → PostgreSQL order store (ingest/README.md).
//
// Two consumer groups, one per sink: `warehouse` reads clickstream.v1 and orders.v1 into
// clickstream_events / order_facts (rollups follow by materialized views); `order-store` reads orders.v1
// into PostgreSQL. In embedded mode this runs in the process that owns the chdb warehouse; with
// CLICKHOUSE_URL several ingest processes can share the groups.
import type { Kafka, Producer } from 'kafkajs';
import type pg from 'pg';
import { migrate } from '../analytics/warehouse/migrate.js';
import type { Warehouse } from '../analytics/warehouse/warehouse.js';
import { config } from '../common/config.js';
import { createKafka } from '../common/kafka.js';
import { createLogger } from '../common/logger.js';
import { createPostgresPool } from '../common/postgres.js';
import { TOPICS } from '../common/topics.js';
import { DeadLetters } from './dead-letters.js';
import { createOrderStoreSink, ensureOrderStore } from './order-store.js';
import type { StuckPartition } from './partition-watch.js';
import type { Sink } from './sink.js';
import { type BatchLimits, type SinkConsumer, type SinkConsumerHooks, startSinkConsumer } from './sink-consumer.js';
import { createWarehouseSink } from './warehouse-sink.js';

export type IngestSinkName = 'warehouse' | 'order-store';

export interface IngestOptions {
  warehouse: Warehouse;
  /** The order store; when omitted a pool is made from config and closed with ingest. */
  pool?: pg.Pool;
  kafka?: Kafka;
  topics?: { clickstream: string; orders: string; deadLetters: string };
  groupIds?: { warehouse?: string; orderStore?: string };
  /** Which sinks to run here (default both); e.g. only the warehouse in a second ingest process. */
  sinks?: readonly IngestSinkName[];
  limits?: Partial<BatchLimits>;
  /** Apply warehouse migrations and the order-store DDL before consuming (default true). */
  migrate?: boolean;
  /** Read a new group's topics from the start (default true: events produced before the first start count). */
  fromBeginning?: boolean;
  /** Group session timeout (default 30 s): how soon a dead ingest process's partitions move on. */
  sessionTimeoutMs?: number;
  /** A partition with lag whose committed offset has not moved for this long is stuck (default INGEST_STUCK_AFTER_SECONDS). */
  stuckAfterMs?: number;
  /** Fault injection for crash tests. */
  hooks?: { warehouse?: SinkConsumerHooks; orderStore?: SinkConsumerHooks };
}

export interface IngestHealth {
  /** Partitions whose committed offset has not moved for the stuck time while messages wait: not ready. */
  stuckPartitions: StuckPartition[];
}

export interface Ingest {
  /** What readiness needs to know (the ops app's /readyz fails while a partition is stuck). */
  health(): IngestHealth;
  /** Reads every group's offsets now rather than at the next tick (tests, and a readiness probe that wants it fresh). */
  checkPartitions(): Promise<void>;
  close(): Promise<void>;
}

export async function startIngest(options: IngestOptions): Promise<Ingest> {
  const settings = config().ingest;
  const log = createLogger('ingest');
  const kafka = options.kafka ?? createKafka('ingest');
  const topics = options.topics ?? {
    clickstream: TOPICS.clickstream.name,
    orders: TOPICS.orders.name,
    deadLetters: TOPICS.deadLetters.name,
  };
  const sinks = new Set(options.sinks ?? ['warehouse', 'order-store']);
  const limits: BatchLimits = {
    maxRows: options.limits?.maxRows ?? settings.batchMaxRows,
    lingerMs: options.limits?.lingerMs ?? settings.batchLingerMs,
    minBytes: options.limits?.minBytes ?? settings.batchMinBytes,
    partitionsInParallel: options.limits?.partitionsInParallel ?? 6,
    maxBytesPerPartition: options.limits?.maxBytesPerPartition ?? 4 << 20,
  };
  const ownPool = sinks.has('order-store') && !options.pool;
  const pool = options.pool ?? (ownPool ? createPostgresPool() : undefined);

  if (options.migrate ?? true) {
    if (sinks.has('warehouse')) await migrate(options.warehouse);
    if (pool && sinks.has('order-store')) await ensureOrderStore(pool);
  }

  const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const consumers: SinkConsumer[] = [];
  const contractTopics = { [topics.clickstream]: TOPICS.clickstream.name, [topics.orders]: TOPICS.orders.name };
  // Each sink is its own consumer group with its own dead-letter attribution; the rest is shared.
  const startSink = async (groupId: string, topicMap: Record<string, string>, sink: Sink, hooks?: SinkConsumerHooks) => {
    consumers.push(
      await startSinkConsumer({
        kafka,
        groupId,
        topics: topicMap,
        sink,
        deadLetters: new DeadLetters(producer, topics.deadLetters, groupId),
        limits,
        log: log.child({ sink: sink.name }),
        fromBeginning: options.fromBeginning,
        sessionTimeoutMs: options.sessionTimeoutMs,
        stuckAfterMs: options.stuckAfterMs ?? settings.stuckAfterSeconds * 1000,
        hooks,
      }),
    );
  };
  try {
    if (sinks.has('warehouse')) {
      const sink = createWarehouseSink(options.warehouse, log.child({ sink: 'warehouse' }));
      await startSink(options.groupIds?.warehouse ?? settings.warehouseGroupId, contractTopics, sink, options.hooks?.warehouse);
    }
    if (sinks.has('order-store') && pool) {
      const orderTopics = { [topics.orders]: TOPICS.orders.name };
      await startSink(
        options.groupIds?.orderStore ?? settings.orderStoreGroupId,
        orderTopics,
        createOrderStoreSink(pool),
        options.hooks?.orderStore,
      );
    }
  } catch (error) {
    await Promise.allSettled(consumers.map((consumer) => consumer.stop()));
    await producer.disconnect();
    if (ownPool) await pool?.end();
    throw error;
  }
  log.info({ groups: consumers.map((consumer) => consumer.groupId), topics }, 'ingest started');

  let closing: Promise<void> | undefined;
  return {
    health() {
      return { stuckPartitions: consumers.flatMap((consumer) => consumer.stuckPartitions()) };
    },
    async checkPartitions() {
      await Promise.all(consumers.map((consumer) => consumer.checkPartitions()));
    },
    close() {
      // Consumers first (their last batch may still park dead letters), then the producer and pool.
      closing ??= (async () => {
        await Promise.allSettled(consumers.map((consumer) => consumer.stop()));
        await producer.disconnect();
        if (ownPool) await pool?.end();
        log.info('ingest stopped');
      })();
      return closing;
    },
  };
}

export { DEAD_LETTER_HEADERS, type DeadLetterReason } from './dead-letters.js';
export { ingestMetrics } from './metrics.js';
export { applyOrderEvents, ensureOrderStore, ORDER_STORE_DDL, OrderStoreError } from './order-store.js';
export type { StuckPartition } from './partition-watch.js';
export { WAREHOUSE_TABLES } from './warehouse-sink.js';
