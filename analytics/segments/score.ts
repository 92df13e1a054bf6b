// RFM quantile scores and named segments, with danfojs-node. Scores are 1–5 among the shoppers who paid for
// something in the window (0 for those who did not): a shopper's score is ceil(5 × the share of buyers they
// do at least as well as), so ties share a score and the best fifth scores 5.
//   recency   fewer window sales since the last buy is better
//   frequency more sales bought in is better
//   monetary  more spent is better
//
// Segments, first match wins (documented for marketers in analytics/insights/README.md, "Segments"):
//   bots             any event flagged as automation: never gets an offer
//   missed_out       bought nothing in the window and was refused for stock at least once
//   bargain_hunters  bought, and at least half of the paid orders carried a price offer
//   new              first seen in the window's latest sale
//   champions        recency ≥ 4, frequency 5, monetary ≥ 3
//   loyal            frequency ≥ 3 and recency ≥ 3
//   at_risk          bought before, recency ≤ 2
//   browsers         everyone else (came, bought nothing)
import * as dfd from 'danfojs-node';
import type { ShopperFeatures } from './features.js';

export const SEGMENTS = ['bots', 'missed_out', 'bargain_hunters', 'new', 'champions', 'loyal', 'at_risk', 'browsers'] as const;
export type Segment = (typeof SEGMENTS)[number];

export interface ScoredShoppers {
  features: ShopperFeatures;
  recency_score: Uint8Array;
  frequency_score: Uint8Array;
  monetary_score: Uint8Array;
  segment: Segment[];
  /** Shoppers per segment, for the run's summary. */
  summary: { segment: Segment; shoppers: number }[];
}

/** How many of the ascending `sorted` values are ≤ value. */
function countAtMost(sorted: ArrayLike<number>, value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** How many of the ascending `sorted` values are ≥ value. */
function countAtLeast(sorted: ArrayLike<number>, value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return sorted.length - lo;
}

const quintile = (atLeastAsGoodAs: number, buyers: number) => Math.min(5, Math.max(1, Math.ceil((5 * atLeastAsGoodAs) / buyers)));

export function scoreShoppers(features: ShopperFeatures): ScoredShoppers {
  const n = features.shopper_id.length;
  const recency = new Uint8Array(n);
  const frequency = new Uint8Array(n);
  const monetary = new Uint8Array(n);
  const segment: Segment[] = new Array(n);
  if (n === 0) return { features, recency_score: recency, frequency_score: frequency, monetary_score: monetary, segment, summary: [] };

  // The buyers' distributions, sorted by danfojs: the quantile scores are positions in them.
  const buyerValues = (column: ArrayLike<number>) => {
    const values: number[] = [];
    for (let i = 0; i < n; i++) if (features.orders_paid[i]! > 0) values.push(column[i]!);
    return values;
  };
  const sorted = (values: number[]) =>
    values.length === 0 ? [] : (new dfd.Series(values).sortValues({ ascending: true }).values as number[]);
  const sinceSorted = sorted(buyerValues(features.sales_since_last_buy));
  const boughtSorted = sorted(buyerValues(features.sales_bought));
  const spentSorted = sorted(buyerValues(features.spent_cents));
  const nBuyers = sinceSorted.length;

  for (let i = 0; i < n; i++) {
    const buyer = features.orders_paid[i]! > 0;
    if (buyer) {
      recency[i] = quintile(countAtLeast(sinceSorted, features.sales_since_last_buy[i]!), nBuyers);
      frequency[i] = quintile(countAtMost(boughtSorted, features.sales_bought[i]!), nBuyers);
      monetary[i] = quintile(countAtMost(spentSorted, features.spent_cents[i]!), nBuyers);
    }
    const r = recency[i]!;
    const f = frequency[i]!;
    const m = monetary[i]!;
    segment[i] =
      features.bot_events[i]! > 0
        ? 'bots'
        : !buyer && features.missed_out[i]! > 0
          ? 'missed_out'
          : buyer && features.price_offer_share[i]! >= 0.5
            ? 'bargain_hunters'
            : features.first_seen_in_latest[i] === 1
              ? 'new'
              : buyer && r >= 4 && f >= 5 && m >= 3
                ? 'champions'
                : buyer && f >= 3 && r >= 3
                  ? 'loyal'
                  : buyer && r <= 2
                    ? 'at_risk'
                    : 'browsers';
  }

  const counts = new Map<Segment, number>();
  for (const name of segment) counts.set(name, (counts.get(name) ?? 0) + 1);
  const summary = SEGMENTS.filter((name) => counts.has(name)).map((name) => ({ segment: name, shoppers: counts.get(name)! }));
  return { features, recency_score: recency, frequency_score: frequency, monetary_score: monetary, segment, summary };
}
