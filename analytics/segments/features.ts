// Per-shopper features over a window of past sales, computed in ClickHouse and fetched as Arrow
// (`ArrowStream` → apache-arrow record batches), so a million shoppers cross the wire as a few columns of
// numbers rather than a million JSON objects. Shoppers are stitched (analytics/insights/stitched.ts), and
// only shoppers with a user id are kept: an offer is keyed by user id, so nobody else can receive one.
import { RecordBatchReader } from 'apache-arrow';
import { InsightError, requireSale, type WarehouseReader } from '../insights/query.js';
import { stitchedClickstream } from '../insights/stitched.js';

/** One column per feature, row i of every column is shopper i. */
export interface ShopperFeatures {
  shopper_id: string[];
  /** Sales of the window the shopper came to. */
  sales_seen: Uint32Array;
  /** Sales in which the shopper paid for at least one order. */
  sales_bought: Uint32Array;
  orders_paid: Uint32Array;
  spent_cents: Float64Array;
  /** Window sales after the last one the shopper bought in (0 = bought in the latest; window size if never). */
  sales_since_last_buy: Uint32Array;
  /** 1 when the shopper was first seen in the window's latest sale. */
  first_seen_in_latest: Uint8Array;
  /** Clickstream events (engagement; counted as rows, which a re-sent event may count twice until merged). */
  engaged_events: Uint32Array;
  /** Sales in which the shopper was refused for stock and reserved nothing. */
  missed_out: Uint32Array;
  /** Sales in which the shopper added to the cart and reserved nothing. */
  abandoned: Uint32Array;
  /** Share of paid orders that carried a price offer (an offer id not known as another kind). */
  price_offer_share: Float64Array;
  /**
   * Events flagged with a bot signal, plus the sales in which the shopper went for the stock (cart, queue or
   * purchase) without ever viewing a product: sale-core's `no_prior_view`, read from the clickstream for every
   * step, because sale-core flags only the attempts that reserved (a bot refused for stock carries no flag).
   */
  bot_events: Uint32Array;
}

export const FEATURE_COLUMNS = [
  'sales_seen',
  'sales_bought',
  'orders_paid',
  'spent_cents',
  'sales_since_last_buy',
  'first_seen_in_latest',
  'engaged_events',
  'missed_out',
  'abandoned',
  'price_offer_share',
  'bot_events',
] as const;

/** Steps that go for the stock: taken in a sale without a product view, they are a bot's (see bot_events). */
export const ACTING_STEPS = "('add_to_cart', 'queue_joined', 'queue_refused', 'purchase_attempt', 'purchase_rejected')";

// One pass per source, one row per shopper: which window sales a shopper was seen in, refused in, carted in,
// reserved in and paid in are bit masks (bit r = the sale of rank r, ranked by start), so a million shoppers
// over many sales aggregate into a million small rows rather than a row per shopper and sale (what kept this
// query inside the endpoint's memory limit at a million shoppers).
export function featuresSql(): string {
  return `
WITH
  (SELECT arrayMap(x -> x.2, arraySort(groupArray((started, sale_id))))
   FROM (SELECT sale_id, min(ts) AS started FROM clickstream_events WHERE has({sales:Array(String)}, sale_id) GROUP BY sale_id)
  ) AS ranked,
  toUInt32(length(ranked)) AS n,
  people AS (
    SELECT person,
           groupBitOr(bitShiftLeft(toUInt64(1), indexOf(ranked, sale_id))) AS seen,
           groupBitOrIf(bitShiftLeft(toUInt64(1), indexOf(ranked, sale_id)),
                        reject_reason = 'sold_out' AND type IN ('purchase_rejected', 'queue_refused')) AS refused,
           groupBitOrIf(bitShiftLeft(toUInt64(1), indexOf(ranked, sale_id)), type = 'add_to_cart') AS carted,
           groupBitOrIf(bitShiftLeft(toUInt64(1), indexOf(ranked, sale_id)), type = 'product_view') AS viewed,
           groupBitOrIf(bitShiftLeft(toUInt64(1), indexOf(ranked, sale_id)), type IN ${ACTING_STEPS}) AS acted,
           count() AS events,
           countIf(notEmpty(bot_signals)) AS flagged_events
    FROM ${stitchedClickstream('has({sales:Array(String)}, e.sale_id)')}
    GROUP BY person
    HAVING max(is_user)
  ),
  orders AS (
    SELECT shopper_id,
           groupBitOrIf(bitShiftLeft(toUInt64(1), indexOf(ranked, sale_id)), status = 'reserved') AS reserved,
           groupBitOrIf(bitShiftLeft(toUInt64(1), indexOf(ranked, sale_id)), status = 'paid') AS paid,
           countIf(status = 'paid') AS paid_orders,
           sumIf(amount_cents, status = 'paid') AS spent,
           countIf(status = 'paid' AND isNotNull(offer_id)
                   AND assumeNotNull(offer_id) NOT IN (SELECT ifNull(offer_id, '') FROM offers WHERE kind != 'price')) AS paid_with_price_offer
    FROM order_facts FINAL
    WHERE has({sales:Array(String)}, sale_id)
    GROUP BY shopper_id
  )
SELECT
  p.person AS shopper_id,
  toUInt32(bitCount(p.seen)) AS sales_seen,
  toUInt32(bitCount(o.paid)) AS sales_bought,
  toUInt32(o.paid_orders) AS orders_paid,
  toFloat64(o.spent) AS spent_cents,
  toUInt32(n - if(o.paid = 0, 0, arrayMax(bitPositionsToArray(o.paid)))) AS sales_since_last_buy,
  toUInt8(p.seen = bitShiftLeft(toUInt64(1), n)) AS first_seen_in_latest,
  toUInt32(p.events) AS engaged_events,
  toUInt32(bitCount(bitAnd(p.refused, bitNot(o.reserved)))) AS missed_out,
  toUInt32(bitCount(bitAnd(p.carted, bitNot(o.reserved)))) AS abandoned,
  if(o.paid_orders = 0, 0, o.paid_with_price_offer / o.paid_orders) AS price_offer_share,
  toUInt32(p.flagged_events + bitCount(bitAnd(p.acted, bitNot(p.viewed)))) AS bot_events
FROM people AS p
LEFT JOIN orders AS o ON o.shopper_id = p.person
ORDER BY shopper_id`;
}

/**
 * Fetches the features as Arrow record batches and gathers them into typed columns. `onBatch` reports
 * progress (rows so far).
 */
export async function fetchShopperFeatures(
  reader: WarehouseReader,
  fromSales: readonly string[],
  onBatch?: (rows: number) => void,
): Promise<ShopperFeatures> {
  if (fromSales.length === 0) throw new InsightError('INSIGHT_BAD_PARAMETER', 'features need at least one past sale');
  let stream: AsyncIterable<Uint8Array>;
  try {
    const result = await reader.exec({
      query: `${featuresSql()}\nFORMAT ArrowStream`,
      query_params: { sales: fromSales.map(requireSale) },
      // apache-arrow in JS reads uncompressed IPC only.
      clickhouse_settings: { output_format_arrow_compression_method: 'none' },
    });
    stream = result.stream as AsyncIterable<Uint8Array>;
  } catch (error) {
    throw new InsightError('INSIGHT_QUERY_FAILED', `shopper features query failed: ${(error as Error).message}`, { cause: error });
  }
  const parts: Record<string, unknown[]> = { shopper_id: [] };
  for (const column of FEATURE_COLUMNS) parts[column] = [];
  let rows = 0;
  const batches = await RecordBatchReader.from(stream);
  for await (const batch of batches) {
    const ids = batch.getChild('shopper_id');
    if (!ids) throw new InsightError('INSIGHT_QUERY_FAILED', 'shopper features came back without shopper_id');
    for (let i = 0; i < batch.numRows; i++) parts.shopper_id!.push(String(ids.get(i)));
    for (const column of FEATURE_COLUMNS) parts[column]!.push(batch.getChild(column)!.toArray());
    rows += batch.numRows;
    onBatch?.(rows);
  }
  const concat = <T extends Uint32Array | Float64Array | Uint8Array>(Kind: { new (n: number): T }, column: string): T => {
    const out = new Kind(rows);
    let offset = 0;
    for (const chunk of parts[column] as T[]) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  };
  return {
    shopper_id: parts.shopper_id as string[],
    sales_seen: concat(Uint32Array, 'sales_seen'),
    sales_bought: concat(Uint32Array, 'sales_bought'),
    orders_paid: concat(Uint32Array, 'orders_paid'),
    spent_cents: concat(Float64Array, 'spent_cents'),
    sales_since_last_buy: concat(Uint32Array, 'sales_since_last_buy'),
    first_seen_in_latest: concat(Uint8Array, 'first_seen_in_latest'),
    engaged_events: concat(Uint32Array, 'engaged_events'),
    missed_out: concat(Uint32Array, 'missed_out'),
    abandoned: concat(Uint32Array, 'abandoned'),
    price_offer_share: concat(Float64Array, 'price_offer_share'),
    bot_events: concat(Uint32Array, 'bot_events'),
  };
}
