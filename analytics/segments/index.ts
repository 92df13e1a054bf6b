// Shopper segmentation for an offer run: features over past sales (ClickHouse, fetched as Arrow), RFM scores
// and named segments (danfojs-node), written back to `shopper_segments` under the run id.
import type { WarehouseReader } from '../insights/query.js';
import { fetchShopperFeatures, type ShopperFeatures } from './features.js';
import { type ScoredShoppers, scoreShoppers } from './score.js';

export { FEATURE_COLUMNS, featuresSql, fetchShopperFeatures, type ShopperFeatures } from './features.js';
export { type ScoredShoppers, SEGMENTS, type Segment, scoreShoppers } from './score.js';

const WRITE_BATCH = 50_000;

const SEGMENT_COLUMNS: [string, ...string[]] = [
  'run_id',
  'shopper_id',
  'segment',
  'recency_score',
  'frequency_score',
  'monetary_score',
  'sales_seen',
  'sales_bought',
  'orders_paid',
  'spent_cents',
  'sales_since_last_buy',
  'engaged_events',
  'missed_out',
  'abandoned',
  'price_offer_share',
  'bot_events',
];

export interface SegmentationTimings {
  /** Until the first Arrow bytes arrived: the warehouse computing the features. */
  warehouseQueryMs: number;
  /** Reading the record batches into columns. */
  arrowTransferMs: number;
  scoringMs: number;
  writeMs: number;
}

export interface SegmentationResult {
  scored: ScoredShoppers;
  timings: SegmentationTimings;
}

/** Writes a run's segments; a batch re-sent with the same token (a retried or rerun write) is dropped. */
export async function writeSegments(
  reader: WarehouseReader,
  runId: string,
  scored: ScoredShoppers,
  onProgress?: (written: number) => void,
): Promise<void> {
  const f = scored.features;
  const n = f.shopper_id.length;
  for (let start = 0, batch = 0; start < n; start += WRITE_BATCH, batch++) {
    // Rows as arrays in the table's column order (JSONCompactEachRow): half the bytes of keyed objects.
    const rows: unknown[][] = [];
    for (let i = start; i < Math.min(n, start + WRITE_BATCH); i++) {
      rows.push([
        runId,
        f.shopper_id[i],
        scored.segment[i],
        scored.recency_score[i],
        scored.frequency_score[i],
        scored.monetary_score[i],
        f.sales_seen[i],
        f.sales_bought[i],
        f.orders_paid[i],
        f.spent_cents[i],
        f.sales_since_last_buy[i],
        f.engaged_events[i],
        f.missed_out[i],
        f.abandoned[i],
        f.price_offer_share[i],
        f.bot_events[i],
      ]);
    }
    await reader.insert({
      table: 'shopper_segments',
      values: rows,
      format: 'JSONCompactEachRow',
      columns: SEGMENT_COLUMNS,
      clickhouse_settings: { insert_deduplicate: 1, insert_deduplication_token: `${runId}:segments:${batch}` },
    });
    onProgress?.(Math.min(n, start + WRITE_BATCH));
  }
}

/** Features → scores → segments → `shopper_segments`, timed step by step. */
export async function segmentShoppers(
  reader: WarehouseReader,
  p: { runId: string; fromSales: readonly string[]; onProgress?: (step: 'features' | 'write', done: number) => void },
): Promise<SegmentationResult> {
  const started = performance.now();
  let firstBatchAt: number | undefined;
  const features: ShopperFeatures = await fetchShopperFeatures(reader, p.fromSales, (rows) => {
    firstBatchAt ??= performance.now();
    p.onProgress?.('features', rows);
  });
  const fetched = performance.now();
  const scored = scoreShoppers(features);
  const scoredAt = performance.now();
  await writeSegments(reader, p.runId, scored, (done) => p.onProgress?.('write', done));
  const written = performance.now();
  return {
    scored,
    timings: {
      warehouseQueryMs: (firstBatchAt ?? fetched) - started,
      arrowTransferMs: fetched - (firstBatchAt ?? fetched),
      scoringMs: scoredAt - fetched,
      writeMs: written - scoredAt,
    },
  };
}
