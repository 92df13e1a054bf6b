// The sale's funnel over stitched shoppers (see stitched.ts): how many shoppers reached each step in order
// within the window (ClickHouse windowFunnel), the conversion from the step before and from the first
// step, and the median time between the first time a shopper reached one step and the next.

import { InsightError, requireSale, selectRows, type WarehouseReader } from './query.js';
import { stitchedClickstream } from './stitched.js';

/** The funnel's steps, in order. reserved and paid come from order_facts, the rest from the clickstream. */
export const FUNNEL_STEPS = [
  'page_view',
  'product_view',
  'add_to_cart',
  'queue_joined',
  'admitted',
  'purchase_attempt',
  'reserved',
  'paid',
] as const;
export type FunnelStep = (typeof FUNNEL_STEPS)[number];

/**
 * How a funnel is broken down. channel and device are the shopper's first event's; offer is the offer id
 * any of the shopper's events or orders carried in the sale ('none' otherwise); segment is the shopper's
 * segment in the newest offer run that segmented them ('unsegmented' otherwise).
 */
export type FunnelBreakdown = 'none' | 'channel' | 'device' | 'segment' | 'offer';

export interface FunnelRow {
  /** The breakdown's value ('all' when not broken down). */
  group: string;
  step: number;
  step_name: FunnelStep;
  shoppers: number;
  /** Shoppers at this step / at the step before (1 for the first step; 0 when the step before had none). */
  conversion_from_previous: number;
  /** Shoppers at this step / at the first step. */
  conversion_from_first: number;
  /** Median seconds from the previous step to this one, over shoppers who reached this step; null for step 1. */
  median_seconds_from_previous: number | null;
}

const GROUP_EXPRESSIONS: Record<FunnelBreakdown, string> = {
  none: "'all'",
  channel: 'first_channel',
  device: 'first_device',
  offer: 'offer',
  segment: "if(seg.segment = '', 'unsegmented', seg.segment)",
};

export async function saleFunnel(
  reader: WarehouseReader,
  p: { saleId: string; windowSeconds?: number; breakdown?: FunnelBreakdown },
): Promise<FunnelRow[]> {
  const breakdown = p.breakdown ?? 'none';
  const group = GROUP_EXPRESSIONS[breakdown];
  if (!group) throw new InsightError('INSIGHT_BAD_PARAMETER', `unknown funnel breakdown ${JSON.stringify(breakdown)}`);
  const conditions = FUNNEL_STEPS.map((step) => `step_type = '${step}'`).join(', ');
  const firstTimes = FUNNEL_STEPS.map((step, i) => `minIf(t, step_type = '${step}') AS t${i + 1}`).join(',\n           ');
  const times = FUNNEL_STEPS.map((_, i) => `t${i + 1}`).join(', ');
  const segmentJoin =
    breakdown === 'segment'
      ? `LEFT JOIN (SELECT shopper_id, argMax(segment, computed_at) AS segment FROM shopper_segments GROUP BY shopper_id) AS seg
           ON seg.shopper_id = people.person`
      : '';
  const rows = await selectRows<{ group: string; step: number; shoppers: number; median_ms: number | null }>(
    reader,
    `WITH people AS (
       SELECT person,
              windowFunnel({windowMs:UInt64})(t, ${conditions}) AS level,
              ${firstTimes},
              argMin(channel, t) AS first_channel,
              argMin(device, t) AS first_device,
              ifNull(anyIf(offer_id, isNotNull(offer_id)), 'none') AS offer
       FROM (
         SELECT person, toUInt64(toUnixTimestamp64Milli(ts)) AS t, type AS step_type, channel, device, offer_id
         FROM ${stitchedClickstream('e.sale_id = {saleId:String}')}
         UNION ALL
         SELECT shopper_id AS person, toUInt64(toUnixTimestamp64Milli(ts)) AS t, status AS step_type, channel, device, offer_id
         FROM order_facts WHERE sale_id = {saleId:String} AND status IN ('reserved', 'paid')
       )
       GROUP BY person
     )
     SELECT ${group} AS group, step,
            countIf(level >= step) AS shoppers,
            if(step = 1, NULL, quantileExactIf(0.5)(toInt64([${times}][step]) - toInt64([${times}][step - 1]), level >= step)) AS median_ms
     FROM people ${segmentJoin}
     ARRAY JOIN range(1, ${FUNNEL_STEPS.length + 1}) AS step
     GROUP BY group, step
     ORDER BY group, step`,
    { saleId: requireSale(p.saleId), windowMs: (p.windowSeconds ?? 3600) * 1000 },
    ['step', 'shoppers', 'median_ms'],
  );
  const firstByGroup = new Map<string, number>();
  const byKey = new Map<string, number>();
  for (const row of rows) {
    byKey.set(`${row.group}\u0000${row.step}`, row.shoppers);
    if (row.step === 1) firstByGroup.set(row.group, row.shoppers);
  }
  return rows.map((row) => {
    const previous = row.step === 1 ? row.shoppers : (byKey.get(`${row.group}\u0000${row.step - 1}`) ?? 0);
    const first = firstByGroup.get(row.group) ?? 0;
    return {
      group: row.group,
      step: row.step,
      step_name: FUNNEL_STEPS[row.step - 1]!,
      shoppers: row.shoppers,
      conversion_from_previous: row.step === 1 ? 1 : previous === 0 ? 0 : row.shoppers / previous,
      conversion_from_first: first === 0 ? 0 : row.shoppers / first,
      median_seconds_from_previous: row.step === 1 || row.shoppers === 0 || row.median_ms === null ? null : row.median_ms / 1000,
    };
  });
}
