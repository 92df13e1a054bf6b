// Ingest's Prometheus metrics (names owned by ingest, on the process-wide registry from common/metrics).
import { counter, gauge, histogram } from '../common/metrics.js';

export const ingestMetrics = {
  rowsWritten: counter<'sink' | 'table'>({
    name: 'flashsale_ingest_rows_total',
    help: 'Rows written by a sink (rate() of this is rows per second).',
    labelNames: ['sink', 'table'],
  }),
  batchRows: histogram<'sink'>({
    name: 'flashsale_ingest_batch_rows',
    help: 'Messages per batch written and committed.',
    labelNames: ['sink'],
    buckets: [1, 10, 100, 500, 1000, 2500, 5000, 10_000, 20_000, 50_000],
  }),
  batchSeconds: histogram<'sink'>({
    name: 'flashsale_ingest_batch_seconds',
    help: 'Time to write one batch and commit its offsets.',
    labelNames: ['sink'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  }),
  freshnessSeconds: histogram<'sink'>({
    name: 'flashsale_ingest_freshness_seconds',
    help: 'From the event ts to the row being visible in the sink (end-to-end freshness).',
    labelNames: ['sink'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
  }),
  consumerLag: gauge<'group' | 'topic' | 'partition'>({
    name: 'flashsale_ingest_consumer_lag',
    help: 'Messages in the partition not yet written and committed by the group.',
    labelNames: ['group', 'topic', 'partition'],
  }),
  partitionStuck: gauge<'group' | 'topic' | 'partition'>({
    name: 'flashsale_ingest_partition_stuck',
    help: '1 while the committed offset of a partition with lag has not moved for INGEST_STUCK_AFTER_SECONDS (the process is then not ready).',
    labelNames: ['group', 'topic', 'partition'],
  }),
  deadLetters: counter<'group' | 'topic' | 'reason'>({
    name: 'flashsale_ingest_dead_letters_total',
    help: 'Messages sent to the dead-letter topic: they did not decode or validate, or the sink refused their row for good (sink_refused).',
    labelNames: ['group', 'topic', 'reason'],
  }),
  sinkFailures: counter<'sink' | 'retriable'>({
    name: 'flashsale_ingest_sink_failures_total',
    help: 'Failed batch writes: retriable ones are retried with the partition paused, the others split the batch.',
    labelNames: ['sink', 'retriable'],
  }),
  abandonedBatches: counter<'group' | 'reason'>({
    name: 'flashsale_ingest_abandoned_batches_total',
    help: 'Batches given up uncommitted because this member lost its place in the group (rebalance, eviction, coordinator move).',
    labelNames: ['group', 'reason'],
  }),
  replayedBatches: counter<'sink'>({
    name: 'flashsale_ingest_replayed_batches_total',
    help: 'Batches re-written after a crash or rebalance with their original boundaries (deduplicated by the sink).',
    labelNames: ['sink'],
  }),
  orderTransitions: counter<'outcome'>({
    name: 'flashsale_ingest_order_transitions_total',
    help: 'Order events applied to the order store (applied) or ignored as repeated or backwards (ignored).',
    labelNames: ['outcome'],
  }),
};
