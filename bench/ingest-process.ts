// The ingest process under benchmark: its own chdb warehouse, the warehouse sink only, reporting to the
// parent (bench/ingest-throughput.ts) over IPC how many rows are visible and how fresh each one was.
// Freshness is measured where it is defined: when the insert returned (rows visible), minus the event ts.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openChdbWarehouse } from '../analytics/warehouse/chdb-warehouse.js';
import { createKafka } from '../common/kafka.js';
import { startIngest } from '../ingest/index.js';

const topic = process.env.BENCH_TOPIC!;
const dir = mkdtempSync(join(tmpdir(), 'bench-ingest-chdb-'));
const warehouse = await openChdbWarehouse(dir, 'flashsale');
let written = 0;
let firstWriteAt = 0;
let lastWriteAt = 0;
let firstBatchRows = 0;
// CPU of every thread of this process (chdb's included), from the first write on: a load-independent cost.
let cpuAtFirstWrite = 0;
const cpuMicros = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};
const freshness: number[] = [];

const ingest = await startIngest({
  warehouse,
  kafka: createKafka('bench-ingest'),
  topics: { clickstream: topic, orders: process.env.BENCH_ORDERS_TOPIC!, deadLetters: process.env.BENCH_DLQ_TOPIC! },
  groupIds: { warehouse: process.env.BENCH_GROUP! },
  sinks: ['warehouse'],
  limits: process.env.BENCH_PARALLEL ? { partitionsInParallel: Number(process.env.BENCH_PARALLEL) } : {},
  hooks: {
    warehouse: {
      afterWrite(batch) {
        const now = Date.now();
        if (written === 0) {
          firstWriteAt = now;
          firstBatchRows = batch.events.length;
          cpuAtFirstWrite = cpuMicros();
        }
        written += batch.events.length;
        lastWriteAt = now;
        for (const { event } of batch.events) freshness.push(now - event.ts);
      },
    },
  },
});

const peakRssMiB = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;
const report = setInterval(() => process.send?.({ kind: 'progress', written, firstWriteAt, lastWriteAt, firstBatchRows }), 50);

process.on('message', async (message: { kind: string }) => {
  if (message.kind !== 'finish') return;
  clearInterval(report);
  const cpuMicrosPerEvent = (cpuMicros() - cpuAtFirstWrite) / Math.max(1, written - firstBatchRows);
  const [visible] = await warehouse.query<{ n: string }>('SELECT toString(count()) AS n FROM clickstream_events');
  await ingest.close();
  await warehouse.close();
  rmSync(dir, { recursive: true, force: true });
  process.send?.(
    {
      kind: 'result',
      written,
      visible: Number(visible?.n ?? 0),
      firstWriteAt,
      lastWriteAt,
      firstBatchRows,
      freshness,
      cpuMicrosPerEvent,
      rssMiB: process.memoryUsage().rss / 2 ** 20,
      peakRssMiB: peakRssMiB(),
    },
    () => process.exit(0),
  );
});
process.send?.({ kind: 'ready' });
