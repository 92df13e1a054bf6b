// The live sale, for the marketer watching it: how fast it sells, what is left, when it sold out, the
// waiting room, why shoppers were turned away, bots, and how fresh the numbers are. Answered from the
// rollups (sales_velocity_per_second, funnel_stages_per_minute, rejection_reasons_per_minute) wherever a
// rollup holds the answer, so each query reads a few hundred rows however big the sale.
//
// The warehouse does not know a sale's starting stock (no event carries it): the caller passes it, read
// from the sale's ledger in Redis (`readSaleFacts` in common/offers.ts).
import { requireSale, selectRows, stockParams, type WarehouseReader } from './query.js';

export interface SecondOfSales {
  second_ms: number;
  orders_reserved: number;
  units_reserved: number;
  orders_paid: number;
  units_paid: number;
  revenue_cents: number;
}

/** Orders and units per second (reserved and paid), over every SKU of the sale. */
export async function salesVelocity(reader: WarehouseReader, p: { saleId: string; sinceMs?: number }): Promise<SecondOfSales[]> {
  return selectRows<SecondOfSales>(
    reader,
    `SELECT toUnixTimestamp(second) * 1000 AS second_ms,
            sum(orders_reserved) AS orders_reserved, sum(units_reserved) AS units_reserved,
            sum(orders_paid) AS orders_paid, sum(units_paid) AS units_paid, sum(revenue_cents) AS revenue_cents
     FROM sales_velocity_per_second
     WHERE sale_id = {saleId:String} AND second >= toDateTime(intDiv({sinceMs:UInt64}, 1000), 'UTC')
     GROUP BY second ORDER BY second`,
    { saleId: requireSale(p.saleId), sinceMs: p.sinceMs ?? 0 },
    ['second_ms', 'orders_reserved', 'units_reserved', 'orders_paid', 'units_paid', 'revenue_cents'],
  );
}

export interface SkuStock {
  sku: string;
  initial_units: number;
  units_reserved: number;
  units_released: number;
  units_paid: number;
  units_left: number;
}

/** Units left per SKU: starting stock − units reserved + units released by lapsed reservations. */
export async function unitsLeftPerSku(
  reader: WarehouseReader,
  p: { saleId: string; initialStock: Record<string, number> },
): Promise<SkuStock[]> {
  const { skus, units } = stockParams(p.initialStock);
  return selectRows<SkuStock>(
    reader,
    `SELECT s.sku AS sku, s.initial AS initial_units,
            ifNull(v.reserved, 0) AS units_reserved, ifNull(v.released, 0) AS units_released, ifNull(v.paid, 0) AS units_paid,
            toInt64(s.initial) - toInt64(ifNull(v.reserved, 0)) + toInt64(ifNull(v.released, 0)) AS units_left
     FROM (SELECT arrayJoin(arrayZip({skus:Array(String)}, {units:Array(UInt64)})) AS pair,
                  pair.1 AS sku, pair.2 AS initial) AS s
     LEFT JOIN (SELECT sku, sum(units_reserved) AS reserved, sum(units_released) AS released, sum(units_paid) AS paid
                FROM sales_velocity_per_second WHERE sale_id = {saleId:String} GROUP BY sku) AS v ON v.sku = s.sku
     ORDER BY sku
     SETTINGS join_use_nulls = 1`,
    { saleId: requireSale(p.saleId), skus, units },
    ['initial_units', 'units_reserved', 'units_released', 'units_paid', 'units_left'],
  );
}

export interface SkuSellOut {
  sku: string;
  initial_units: number;
  /** The second the last unit was reserved (stock net of lapses reached 0), or null if not sold out. */
  sold_out_at_ms: number | null;
  /** Seconds from the sale's start to that second, or null. */
  seconds_to_sell_out: number | null;
}

/** Time to sell out per SKU: the first second at which units reserved − released reached the starting stock. */
export async function timeToSellOut(
  reader: WarehouseReader,
  p: { saleId: string; initialStock: Record<string, number>; startsAtMs: number },
): Promise<SkuSellOut[]> {
  const { skus, units } = stockParams(p.initialStock);
  return selectRows<SkuSellOut>(
    reader,
    `WITH per_second AS (
       SELECT sku, second, sum(units_reserved) AS reserved, sum(units_released) AS released
       FROM sales_velocity_per_second WHERE sale_id = {saleId:String} GROUP BY sku, second
     ),
     running AS (
       SELECT sku, second,
              sum(toInt64(reserved) - toInt64(released)) OVER (PARTITION BY sku ORDER BY second ROWS UNBOUNDED PRECEDING) AS net
       FROM per_second
     ),
     stock AS (
       SELECT arrayJoin(arrayZip({skus:Array(String)}, {units:Array(UInt64)})) AS pair, pair.1 AS sku, pair.2 AS initial
     )
     SELECT s.sku AS sku, s.initial AS initial_units,
            if(isNull(min(r.second)), NULL, toUnixTimestamp(min(r.second)) * 1000) AS sold_out_at_ms,
            if(isNull(min(r.second)), NULL, (toUnixTimestamp(min(r.second)) * 1000 - {startsAtMs:Int64}) / 1000) AS seconds_to_sell_out
     FROM stock AS s
     LEFT JOIN running AS r ON r.sku = s.sku AND r.net >= toInt64(s.initial)
     GROUP BY s.sku, s.initial
     ORDER BY sku
     SETTINGS join_use_nulls = 1`,
    { saleId: requireSale(p.saleId), skus, units, startsAtMs: p.startsAtMs },
    ['initial_units', 'sold_out_at_ms', 'seconds_to_sell_out'],
  );
}

export interface MinuteOfWaitingRoom {
  minute_ms: number;
  joined: number;
  admitted: number;
  refused: number;
  /** Shoppers still waiting at the end of the minute: joined so far − admitted so far. */
  waiting: number;
  /** Shoppers admitted per second in this minute. */
  admitted_per_second: number;
}

/** Waiting-room length and admission rate per minute. */
export async function waitingRoom(reader: WarehouseReader, p: { saleId: string }): Promise<MinuteOfWaitingRoom[]> {
  return selectRows<MinuteOfWaitingRoom>(
    reader,
    `SELECT minute_ms, joined, admitted, refused,
            sum(toInt64(joined) - toInt64(admitted)) OVER (ORDER BY minute_ms ROWS UNBOUNDED PRECEDING) AS waiting,
            admitted / 60 AS admitted_per_second
     FROM (
       SELECT toUnixTimestamp(minute) * 1000 AS minute_ms,
              sumIf(events, stage = 'queue_joined') AS joined,
              sumIf(events, stage = 'admitted') AS admitted,
              sumIf(events, stage = 'queue_refused') AS refused
       FROM funnel_stages_per_minute
       WHERE sale_id = {saleId:String} AND stage IN ('queue_joined', 'admitted', 'queue_refused')
       GROUP BY minute
     )
     ORDER BY minute_ms`,
    { saleId: requireSale(p.saleId) },
    ['minute_ms', 'joined', 'admitted', 'refused', 'waiting'],
  );
}

export interface RejectionCount {
  /** Where the shopper was turned away: at the purchase, or at the waiting room's door. */
  stage: 'purchase' | 'queue';
  reason: string;
  rejections: number;
}

/**
 * Rejections by reason: refused purchases (from the rollup) and refused queue joins (`queue_refused`, read
 * from the clickstream since no rollup keeps their reason; they are few).
 */
export async function rejectionsByReason(reader: WarehouseReader, p: { saleId: string }): Promise<RejectionCount[]> {
  return selectRows<RejectionCount>(
    reader,
    `SELECT stage, reason, rejections FROM (
       SELECT 'purchase' AS stage, reason, sum(rejections) AS rejections
       FROM rejection_reasons_per_minute WHERE sale_id = {saleId:String} GROUP BY reason
       UNION ALL
       SELECT 'queue' AS stage, ifNull(reject_reason, '') AS reason, uniqExact(event_id) AS rejections
       FROM clickstream_events WHERE sale_id = {saleId:String} AND type = 'queue_refused' GROUP BY reason
     )
     ORDER BY rejections DESC, stage, reason`,
    { saleId: requireSale(p.saleId) },
    ['rejections'],
  );
}

export interface BotFlaggedAttempts {
  attempts: number;
  flagged_attempts: number;
  flagged_shoppers: number;
  by_signal: { signal: string; attempts: number; shoppers: number }[];
}

/** Purchase attempts flagged as automated, in total and by signal (from the bot_attempts_per_minute rollup). */
export async function botFlaggedAttempts(reader: WarehouseReader, p: { saleId: string }): Promise<BotFlaggedAttempts> {
  const params = { saleId: requireSale(p.saleId) };
  const [totals] = await selectRows<Omit<BotFlaggedAttempts, 'by_signal'>>(
    reader,
    `SELECT all_attempts AS attempts, flagged AS flagged_attempts, flagged_people AS flagged_shoppers FROM (
       SELECT sumIf(attempts, signal = '') AS all_attempts,
              sumIf(attempts, signal = '*') AS flagged,
              uniqExactMergeIf(shoppers, signal = '*') AS flagged_people
       FROM bot_attempts_per_minute WHERE sale_id = {saleId:String} AND signal IN ('', '*')
     )`,
    params,
    ['attempts', 'flagged_attempts', 'flagged_shoppers'],
  );
  const bySignal = await selectRows<{ signal: string; attempts: number; shoppers: number }>(
    reader,
    `SELECT signal, sum(attempts) AS attempts, uniqExactMerge(shoppers) AS shoppers
     FROM bot_attempts_per_minute
     WHERE sale_id = {saleId:String} AND signal NOT IN ('', '*')
     GROUP BY signal ORDER BY attempts DESC, signal`,
    params,
    ['attempts', 'shoppers'],
  );
  return {
    attempts: totals?.attempts ?? 0,
    flagged_attempts: totals?.flagged_attempts ?? 0,
    flagged_shoppers: totals?.flagged_shoppers ?? 0,
    by_signal: bySignal,
  };
}

export interface PipelineFreshness {
  /** Newest event time in the warehouse for the sale (ms), or null when it has none. */
  last_event_ms: number | null;
  /** When ingest last wrote one of the window's events (ms), or null. */
  last_ingested_ms: number | null;
  /** Event-to-warehouse delay of the events of the last `windowSeconds` (by event time): median and p95 (ms). */
  lag_p50_ms: number | null;
  lag_p95_ms: number | null;
  rows_in_window: number;
}

/**
 * Pipeline freshness: how far behind the sale's events the warehouse is, over the events of the sale's last
 * `windowSeconds` of event time (the newest event's time back). Selecting by event time lets the sort key
 * skip the rest of the sale, which keeps this cheap on a live sale of millions of events.
 */
export async function pipelineFreshness(
  reader: WarehouseReader,
  p: { saleId: string; windowSeconds?: number },
): Promise<PipelineFreshness> {
  const [row] = await selectRows<PipelineFreshness>(
    reader,
    `WITH (SELECT max(ts) FROM clickstream_events WHERE sale_id = {saleId:String}) AS last_ts
     SELECT if(count() = 0, NULL, toUnixTimestamp64Milli(last_ts)) AS last_event_ms,
            if(count() = 0, NULL, toUnixTimestamp64Milli(max(ingested_at))) AS last_ingested_ms,
            if(count() = 0, NULL, quantileExact(0.5)(toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(ts))) AS lag_p50_ms,
            if(count() = 0, NULL, quantileExact(0.95)(toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(ts))) AS lag_p95_ms,
            count() AS rows_in_window
     FROM clickstream_events
     WHERE sale_id = {saleId:String} AND ts >= last_ts - toIntervalSecond({windowSeconds:UInt32})`,
    { saleId: requireSale(p.saleId), windowSeconds: p.windowSeconds ?? 60 },
    ['last_event_ms', 'last_ingested_ms', 'lag_p50_ms', 'lag_p95_ms', 'rows_in_window'],
  );
  return {
    last_event_ms: row?.last_event_ms ?? null,
    last_ingested_ms: row?.last_ingested_ms ?? null,
    lag_p50_ms: row?.lag_p50_ms ?? null,
    lag_p95_ms: row?.lag_p95_ms ?? null,
    rows_in_window: row?.rows_in_window ?? 0,
  };
}
