// Uplift per rule for a finished sale: did the offer make shoppers buy more than the hold-out the same rule
// picked but left alone? Conversion is "paid for anything in the sale". The difference carries a 95%
// confidence interval (normal approximation for two proportions), so a marketer sees how sure it is.
import { type OfferOutcome, offerOutcomes } from '../insights/offers.js';
import type { WarehouseReader } from '../insights/query.js';

/** Below this many shoppers in either group, or this few buyers, the interval means little. */
export const MIN_GROUP = 30;
export const MIN_BUYERS = 5;

export interface RuleUplift {
  rule_id: string;
  offered: number;
  holdout: number;
  offered_conversion: number;
  holdout_conversion: number;
  /** offered − hold-out conversion (share points as a fraction: 0.05 = five points). */
  difference: number;
  ci95_low: number;
  ci95_high: number;
  offered_revenue_per_shopper_cents: number;
  holdout_revenue_per_shopper_cents: number;
  shown: number;
  redeemed: number;
  /** A plain sentence when the samples are too small to say anything; null otherwise. */
  warning: string | null;
}

export function upliftOf(o: OfferOutcome): RuleUplift {
  const p1 = o.offered === 0 ? 0 : o.offered_buyers / o.offered;
  const p0 = o.holdout === 0 ? 0 : o.holdout_buyers / o.holdout;
  const difference = p1 - p0;
  const se = o.offered > 0 && o.holdout > 0 ? Math.sqrt((p1 * (1 - p1)) / o.offered + (p0 * (1 - p0)) / o.holdout) : Number.NaN;
  const problems: string[] = [];
  if (o.offered < MIN_GROUP || o.holdout < MIN_GROUP) {
    problems.push(`${o.offered} offered and ${o.holdout} held out; at least ${MIN_GROUP} in each are needed`);
  }
  if (o.offered_buyers + o.holdout_buyers < MIN_BUYERS) problems.push(`only ${o.offered_buyers + o.holdout_buyers} bought at all`);
  return {
    rule_id: o.rule_id,
    offered: o.offered,
    holdout: o.holdout,
    offered_conversion: p1,
    holdout_conversion: p0,
    difference,
    ci95_low: difference - 1.96 * se,
    ci95_high: difference + 1.96 * se,
    offered_revenue_per_shopper_cents: o.offered === 0 ? 0 : o.offered_revenue_cents / o.offered,
    holdout_revenue_per_shopper_cents: o.holdout === 0 ? 0 : o.holdout_revenue_cents / o.holdout,
    shown: o.shown,
    redeemed: o.redeemed,
    warning: problems.length ? `Too few shoppers to say whether this offer works (${problems.join('; ')}).` : null,
  };
}

/** The uplift report of a sale, one row per rule that made offers or held shoppers out for it. */
export async function upliftReport(reader: WarehouseReader, p: { saleId: string }): Promise<RuleUplift[]> {
  return (await offerOutcomes(reader, p)).map(upliftOf);
}
