// A separate ingest process that dies by SIGKILL right after its first warehouse insert and before that
// batch's offsets are committed: the crash the replay fence and the deduplication token are for.
// Run as: node --import tsx crashing-ingest.ts (settings in CRASH_* environment variables).
import { writeFileSync } from 'node:fs';
import { openChdbWarehouse } from '../../../analytics/warehouse/chdb-warehouse.js';
import { createKafka } from '../../../common/kafka.js';
import { createPostgresPool } from '../../../common/postgres.js';
import { startIngest } from '../../../ingest/index.js';

const env = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const warehouse = await openChdbWarehouse(env('CRASH_CHDB_DIR'), 'flashsale');
await startIngest({
  warehouse,
  pool: createPostgresPool({ max: 2 }),
  kafka: createKafka('ingest-crash'),
  topics: { clickstream: env('CRASH_CLICKSTREAM'), orders: env('CRASH_ORDERS'), deadLetters: env('CRASH_DLQ') },
  groupIds: { warehouse: env('CRASH_WAREHOUSE_GROUP'), orderStore: env('CRASH_ORDER_GROUP') },
  limits: { maxRows: Number(env('CRASH_MAX_ROWS')), lingerMs: 50 },
  // The broker's minimum: the restarted consumer gets the partitions soon after the kill.
  sessionTimeoutMs: 6000,
  hooks: {
    warehouse: {
      afterWrite(batch) {
        // The clickstream, whose rows only the token and the fence protect (order facts also skip stored event ids).
        if (batch.events.length === 0 || batch.topic !== env('CRASH_CLICKSTREAM')) return;
        writeFileSync(
          env('CRASH_MARKER'),
          JSON.stringify({ topic: batch.topic, partition: batch.partition, from: batch.firstOffset, to: batch.lastOffset }),
        );
        process.kill(process.pid, 'SIGKILL');
      },
    },
  },
});
