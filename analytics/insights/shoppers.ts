// Shoppers across sales, stitched (stitched.ts): who is new, who comes back, who buys again, who missed out
// and how close they came, who left a cart, who paid late and whose reservation lapsed.

import { InsightError, requireSale, selectRows, type WarehouseReader } from './query.js';
import { stitchedClickstream } from './stitched.js';

export interface NewVsReturning {
  kind: 'new' | 'returning';
  shoppers: number;
}

/** New shoppers (first seen in this sale) against returning ones (seen in an earlier sale). */
export async function newVsReturning(reader: WarehouseReader, p: { saleId: string }): Promise<NewVsReturning[]> {
  return selectRows<NewVsReturning>(
    reader,
    `WITH firsts AS (
       SELECT person, min(ts) AS first_ts FROM ${stitchedClickstream('1')} GROUP BY person
     ),
     here AS (
       SELECT person, min(ts) AS here_ts FROM ${stitchedClickstream('e.sale_id = {saleId:String}')} GROUP BY person
     )
     SELECT kind, count() AS shoppers FROM (
       SELECT if(f.first_ts < h.here_ts, 'returning', 'new') AS kind FROM here AS h INNER JOIN firsts AS f ON f.person = h.person
     )
     GROUP BY kind ORDER BY kind`,
    { saleId: requireSale(p.saleId) },
    ['shoppers'],
  );
}

export interface RetentionPoint {
  sale_id: string;
  /** Shoppers of the first sale who also came to this one (for the first sale: all of them). */
  shoppers: number;
  share_of_first: number;
}

/** Retention across sales (ClickHouse `retention`): of the first sale's shoppers, how many came to each later one. */
export async function retentionAcrossSales(reader: WarehouseReader, p: { saleIds: string[] }): Promise<RetentionPoint[]> {
  if (p.saleIds.length < 1 || p.saleIds.length > 32) throw new InsightError('INSIGHT_BAD_PARAMETER', 'retention needs 1 to 32 sales');
  const params: Record<string, unknown> = { sales: p.saleIds.map(requireSale) };
  const conditions = p.saleIds.map((id, i) => {
    params[`s${i}`] = id;
    return `sale_id = {s${i}:String}`;
  });
  // ClickHouse's `retention` takes 2 to 32 conditions: one sale is asked as itself twice (the answer's
  // first element is the same either way).
  if (conditions.length === 1) conditions.push(conditions[0]!);
  const [row] = await selectRows<{ r: number[] }>(
    reader,
    `SELECT sumForEach(r) AS r FROM (
       SELECT person, retention(${conditions.join(', ')}) AS r
       FROM ${stitchedClickstream('has({sales:Array(String)}, e.sale_id)')} GROUP BY person
     )`,
    params,
    ['r'],
  );
  const counts = row?.r ?? [];
  const first = counts[0] ?? 0;
  return p.saleIds.map((saleId, i) => ({
    sale_id: saleId,
    shoppers: counts[i] ?? 0,
    share_of_first: first === 0 ? 0 : (counts[i] ?? 0) / first,
  }));
}

export interface RepeatBuyer {
  shopper_id: string;
  sales_bought: number;
  orders_paid: number;
  spent_cents: number;
}

/** Shoppers who paid for orders in at least two of the given sales. */
export async function repeatBuyers(reader: WarehouseReader, p: { saleIds: string[]; limit?: number }): Promise<RepeatBuyer[]> {
  return selectRows<RepeatBuyer>(
    reader,
    `SELECT shopper_id, uniqExact(sale_id) AS sales_bought, uniqExact(order_id) AS orders_paid, sum(amount_cents) AS spent_cents
     FROM (SELECT DISTINCT sale_id, shopper_id, order_id, amount_cents FROM order_facts
           WHERE has({sales:Array(String)}, sale_id) AND status = 'paid')
     GROUP BY shopper_id HAVING sales_bought >= 2
     ORDER BY sales_bought DESC, spent_cents DESC, shopper_id LIMIT {limit:UInt32}`,
    { sales: p.saleIds.map(requireSale), limit: p.limit ?? 1000 },
    ['sales_bought', 'orders_paid', 'spent_cents'],
  );
}

export interface MissedOutShopper {
  shopper_id: string;
  /** Times the shopper was refused for stock (at the purchase or at the queue). */
  refusals: number;
  /** Their place in the waiting room (the best they had), or null when they never got one. */
  queue_position: number | null;
  /** Units reserved in the whole sale: a place beyond it never had a chance. */
  units_reserved_in_sale: number;
  /** queue_position − units reserved: how far past the last unit they stood (negative = they were in reach). */
  places_short: number | null;
}

/** Missed-out shoppers: refused for stock and reserved nothing in the sale, with how close they came. */
export async function missedOutShoppers(reader: WarehouseReader, p: { saleId: string; limit?: number }): Promise<MissedOutShopper[]> {
  return selectRows<MissedOutShopper>(
    reader,
    `WITH units AS (SELECT sum(units_reserved) AS n FROM sales_velocity_per_second WHERE sale_id = {saleId:String})
     SELECT shopper_id, refusals, place AS queue_position, units_reserved_in_sale, places_short FROM (
     SELECT person AS shopper_id,
            uniqExactIf(event_id, reject_reason = 'sold_out' AND type IN ('purchase_rejected', 'queue_refused')) AS refusals,
            minIf(queue_position, type IN ('queue_joined', 'queue_refused') AND isNotNull(queue_position)) AS best_place,
            if(countIf(type IN ('queue_joined', 'queue_refused') AND isNotNull(queue_position)) = 0, NULL, best_place) AS place,
            (SELECT n FROM units) AS units_reserved_in_sale,
            if(isNull(place), NULL, toInt64(place) - toInt64(units_reserved_in_sale)) AS places_short
     FROM ${stitchedClickstream('e.sale_id = {saleId:String}')}
     GROUP BY person
     HAVING refusals > 0
        AND person NOT IN (SELECT shopper_id FROM order_facts WHERE sale_id = {saleId:String} AND status = 'reserved')
     )
     ORDER BY ifNull(queue_position, 4294967295), shopper_id
     LIMIT {limit:UInt32}`,
    { saleId: requireSale(p.saleId), limit: p.limit ?? 10_000 },
    ['refusals', 'queue_position', 'units_reserved_in_sale', 'places_short'],
  );
}

export interface CartAbandoner {
  shopper_id: string;
  cart_adds: number;
  units_in_cart: number;
  /** The furthest funnel step after the cart the shopper reached. */
  furthest_step: 'add_to_cart' | 'queue_joined' | 'admitted' | 'purchase_attempt';
}

/** Cart abandoners: added to the cart and reserved nothing in the sale. */
export async function cartAbandoners(reader: WarehouseReader, p: { saleId: string; limit?: number }): Promise<CartAbandoner[]> {
  return selectRows<CartAbandoner>(
    reader,
    `SELECT person AS shopper_id,
            uniqExactIf(event_id, type = 'add_to_cart') AS cart_adds,
            sumIf(ifNull(qty, 0), type = 'add_to_cart') AS units_in_cart,
            multiIf(countIf(type = 'purchase_attempt') > 0, 'purchase_attempt', countIf(type = 'admitted') > 0, 'admitted',
                    countIf(type = 'queue_joined') > 0, 'queue_joined', 'add_to_cart') AS furthest_step
     FROM ${stitchedClickstream('e.sale_id = {saleId:String}')}
     GROUP BY person
     HAVING cart_adds > 0
        AND person NOT IN (SELECT shopper_id FROM order_facts WHERE sale_id = {saleId:String} AND status = 'reserved')
     ORDER BY shopper_id LIMIT {limit:UInt32}`,
    { saleId: requireSale(p.saleId), limit: p.limit ?? 10_000 },
    ['cart_adds', 'units_in_cart'],
  );
}

export interface PaymentOutcome {
  order_id: string;
  shopper_id: string;
  outcome: 'late_paid' | 'lapsed';
  /** Seconds from the reservation to the payment (null when it lapsed). */
  seconds_to_pay: number | null;
  window_seconds: number;
  amount_cents: number;
}

/**
 * Late payers and lapsed reservations. A late payer paid after more than `lateShare` (default 0.5) of the
 * payment window had gone; a lapsed reservation was never paid and its units went back to stock.
 */
export async function latePayersAndLapsed(
  reader: WarehouseReader,
  p: { saleId: string; lateShare?: number; limit?: number },
): Promise<PaymentOutcome[]> {
  return selectRows<PaymentOutcome>(
    reader,
    `SELECT order_id, shopper_id, outcome, seconds_to_pay, window_seconds, amount_cents FROM (
       SELECT order_id, any(shopper_id) AS shopper_id,
              minIf(ts, status = 'reserved') AS reserved_at,
              anyIf(expires_at, status = 'reserved') AS window_end,
              countIf(status = 'paid') > 0 AS paid,
              countIf(status = 'expired') > 0 AS expired,
              minIf(ts, status = 'paid') AS paid_at,
              max(amount_cents) AS amount_cents,
              (toUnixTimestamp64Milli(assumeNotNull(window_end)) - toUnixTimestamp64Milli(reserved_at)) / 1000 AS window_seconds,
              if(paid, (toUnixTimestamp64Milli(paid_at) - toUnixTimestamp64Milli(reserved_at)) / 1000, NULL) AS seconds_to_pay,
              multiIf(expired AND NOT paid, 'lapsed', paid AND seconds_to_pay > {lateShare:Float64} * window_seconds, 'late_paid', '') AS outcome
       FROM order_facts WHERE sale_id = {saleId:String}
       GROUP BY order_id
       HAVING countIf(status = 'reserved') > 0
     )
     WHERE outcome != ''
     ORDER BY outcome, order_id LIMIT {limit:UInt32}`,
    { saleId: requireSale(p.saleId), lateShare: p.lateShare ?? 0.5, limit: p.limit ?? 10_000 },
    ['amount_cents'],
  );
}
