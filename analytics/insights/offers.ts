// Offers for a sale: how many were made, shown (an event of the shopper carried the offer's id), redeemed
// (a paid order carried it), and how offered shoppers converted against the hold-out (shoppers the same rule
// picked but the run held back: no offer, recorded in the `offers` table with holdout = true).
import { requireSale, selectRows, type WarehouseReader } from './query.js';

export interface OfferOutcome {
  rule_id: string;
  offered: number;
  holdout: number;
  shown: number;
  redeemed: number;
  /** Offered shoppers who paid for anything in the sale. */
  offered_buyers: number;
  holdout_buyers: number;
  offered_revenue_cents: number;
  holdout_revenue_cents: number;
  offered_conversion: number;
  holdout_conversion: number;
}

/** Offers made, shown and redeemed per rule, and conversion against the hold-out. */
export async function offerOutcomes(reader: WarehouseReader, p: { saleId: string }): Promise<OfferOutcome[]> {
  return selectRows<OfferOutcome>(
    reader,
    `WITH targets AS (
       SELECT shopper_id, rule_id, holdout, ifNull(offer_id, '') AS offer_id FROM offers FINAL WHERE sale_id = {saleId:String}
     ),
     shown AS (
       SELECT DISTINCT shopper_id, assumeNotNull(offer_id) AS offer_id FROM clickstream_events
       WHERE sale_id = {saleId:String} AND isNotNull(offer_id)
     ),
     paid AS (
       SELECT shopper_id, sum(amount_cents) AS revenue_cents, groupUniqArrayIf(assumeNotNull(offer_id), isNotNull(offer_id)) AS offer_ids
       FROM (SELECT DISTINCT order_id, shopper_id, amount_cents, offer_id FROM order_facts WHERE sale_id = {saleId:String} AND status = 'paid')
       GROUP BY shopper_id
     )
     SELECT t.rule_id AS rule_id,
            countIf(NOT t.holdout) AS offered,
            countIf(t.holdout) AS holdout,
            countIf(NOT t.holdout AND s.offer_id != '') AS shown,
            countIf(NOT t.holdout AND has(p.offer_ids, t.offer_id)) AS redeemed,
            countIf(NOT t.holdout AND p.revenue_cents > 0) AS offered_buyers,
            countIf(t.holdout AND p.revenue_cents > 0) AS holdout_buyers,
            sumIf(p.revenue_cents, NOT t.holdout) AS offered_revenue_cents,
            sumIf(p.revenue_cents, t.holdout) AS holdout_revenue_cents,
            if(offered = 0, 0, offered_buyers / offered) AS offered_conversion,
            if(holdout = 0, 0, holdout_buyers / holdout) AS holdout_conversion
     FROM targets AS t
     LEFT JOIN shown AS s ON s.shopper_id = t.shopper_id AND s.offer_id = t.offer_id
     LEFT JOIN paid AS p ON p.shopper_id = t.shopper_id
     GROUP BY rule_id ORDER BY rule_id`,
    { saleId: requireSale(p.saleId) },
    ['offered', 'holdout', 'shown', 'redeemed', 'offered_buyers', 'holdout_buyers', 'offered_revenue_cents', 'holdout_revenue_cents'],
  );
}
