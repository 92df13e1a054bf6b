// The marketer pages' data: every number comes from the insight queries (analytics/insights) or from a
// query of the dashboards' own, both through the warehouse endpoint; sales are created and ended only
// through the sale core's admin API.
import type { ClickHouseClient } from '@clickhouse/client';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import {
  FUNNEL_STEPS,
  type FunnelBreakdown,
  InsightError,
  missedOutShoppers,
  newVsReturning,
  offerOutcomes,
  repeatBuyers,
  retentionAcrossSales,
  saleFunnel,
} from '../analytics/insights/index.js';
import { selectRows } from '../analytics/insights/query.js';
import { upliftOf } from '../analytics/offers/uplift.js';
import { requireRole, signedInAccount } from './auth.js';
import { dashboardError } from './errors.js';
import type { OfferJobs } from './offer-jobs.js';
import type { SaleCoreClient, SaleDefinition } from './sale-core-client.js';
import type { DashboardStore } from './store.js';

export const SALE_ID = '^[a-z0-9][a-z0-9-]{0,39}$';
const SaleParams = Type.Object({ sale: Type.String({ pattern: SALE_ID }) });

/** An insight that failed is a warehouse problem for the person looking: say so, with its message. */
export async function insight<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof InsightError && error.code === 'INSIGHT_BAD_PARAMETER') throw dashboardError('WAREHOUSE_REFUSED', error.message);
    throw dashboardError('WAREHOUSE_UNAVAILABLE', `The warehouse did not answer: ${(error as Error).message}`);
  }
}

/** Sales the warehouse has seen (from the rollups: a few rows per minute of sale), newest first. */
export async function knownSales(reader: ClickHouseClient, limit = 200): Promise<{ sale_id: string; first_ms: number }[]> {
  return selectRows<{ sale_id: string; first_ms: number }>(
    reader,
    `SELECT sale_id, toUnixTimestamp(min(at)) * 1000 AS first_ms FROM (
       SELECT sale_id, min(minute) AS at FROM funnel_stages_per_minute GROUP BY sale_id
       UNION ALL
       SELECT sale_id, min(second) AS at FROM sales_velocity_per_second GROUP BY sale_id
     ) GROUP BY sale_id ORDER BY first_ms DESC LIMIT {limit:UInt32}`,
    { limit },
    ['first_ms'],
  );
}

/** A row of the sales comparison as the Sales page gets it: the totals, and paid orders per shopper. */
export type SaleComparison = Awaited<ReturnType<typeof compareSales>>[number] & { conversion: number | null };

/** Per-sale totals for comparing sales side by side. */
export async function compareSales(reader: ClickHouseClient, saleIds: string[]) {
  return selectRows<{
    sale_id: string;
    shoppers: number;
    orders_reserved: number;
    orders_paid: number;
    units_paid: number;
    revenue_cents: number;
    rejections: number;
    sell_out_seconds: number | null;
  }>(
    reader,
    `WITH v AS (
       SELECT sale_id, sum(orders_reserved) AS v_reserved, sum(orders_paid) AS v_paid, sum(units_paid) AS v_units,
              sum(revenue_cents) AS v_revenue,
              dateDiff('second', minIf(second, orders_reserved > 0), maxIf(second, orders_reserved > 0)) AS v_selling_seconds
       FROM sales_velocity_per_second WHERE has({sales:Array(String)}, sale_id) GROUP BY sale_id
     ),
     f AS (
       SELECT sale_id, uniqMerge(shoppers) AS f_shoppers FROM funnel_stages_per_minute WHERE has({sales:Array(String)}, sale_id) GROUP BY sale_id
     ),
     r AS (
       SELECT sale_id, sum(rejections) AS r_rejections FROM rejection_reasons_per_minute WHERE has({sales:Array(String)}, sale_id) GROUP BY sale_id
     )
     SELECT s AS sale_id, ifNull(f.f_shoppers, 0) AS shoppers, ifNull(v.v_reserved, 0) AS orders_reserved,
            ifNull(v.v_paid, 0) AS orders_paid, ifNull(v.v_units, 0) AS units_paid, ifNull(v.v_revenue, 0) AS revenue_cents,
            ifNull(r.r_rejections, 0) AS rejections, v.v_selling_seconds AS sell_out_seconds
     FROM (SELECT arrayJoin({sales:Array(String)}) AS s) AS all_sales
     LEFT JOIN v ON v.sale_id = all_sales.s
     LEFT JOIN f ON f.sale_id = all_sales.s
     LEFT JOIN r ON r.sale_id = all_sales.s
     SETTINGS join_use_nulls = 1`,
    { sales: saleIds },
    ['shoppers', 'orders_reserved', 'orders_paid', 'units_paid', 'revenue_cents', 'rejections', 'sell_out_seconds'],
  );
}

const Sku = Type.Object(
  {
    sku: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' }),
    title: Type.String({ minLength: 1, maxLength: 200 }),
    price: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    stock: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    limit_per_shopper: Type.Integer({ minimum: 1, maximum: 100 }),
  },
  { additionalProperties: false },
);
const SaleBody = Type.Object(
  {
    id: Type.String({ pattern: SALE_ID }),
    title: Type.String({ minLength: 1, maxLength: 200 }),
    starts_at: Type.Integer({ minimum: 0 }),
    ends_at: Type.Integer({ minimum: 0 }),
    payment_window_minutes: Type.Number({ exclusiveMinimum: 0, maximum: 1440 }),
    admission_rate_per_second: Type.Optional(Type.Number({ minimum: 0.01, maximum: 1_000_000 })),
    skus: Type.Array(Sku, { minItems: 1, maxItems: 200 }),
  },
  { additionalProperties: false },
);
const CreateSales = Type.Object({ sale: SaleBody, follow_up: Type.Optional(SaleBody) }, { additionalProperties: false });

export function registerInsightRoutes(
  root: FastifyInstance,
  deps: { store: DashboardStore; reader: ClickHouseClient; saleCore: SaleCoreClient; offerJobs?: OfferJobs },
): void {
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const { store, reader, saleCore } = deps;
  const anyRole = { preHandler: requireRole('marketer', 'analyst') };
  const marketer = { preHandler: requireRole('marketer') };

  app.get('/api/sale-list', anyRole, async () => {
    const [seen, created] = await Promise.all([insight(knownSales(reader)), store.listSales()]);
    const titles = new Map(created.map((s) => [s.sale_id, s.title]));
    const sales: { sale_id: string; title: string | null; first_event: string | null }[] = seen.map((s) => ({
      sale_id: s.sale_id,
      title: titles.get(s.sale_id) ?? null,
      first_event: new Date(s.first_ms).toISOString(),
    }));
    for (const s of created)
      if (!sales.some((x) => x.sale_id === s.sale_id)) sales.push({ sale_id: s.sale_id, title: s.title, first_event: null });
    return { sales };
  });

  app.get(
    '/api/funnel/:sale',
    {
      ...anyRole,
      schema: {
        params: SaleParams,
        querystring: Type.Object({
          by: Type.Optional(Type.Union([Type.Literal('channel'), Type.Literal('device'), Type.Literal('segment'), Type.Literal('offer')])),
        }),
      },
    },
    async (request) => {
      const saleId = request.params.sale;
      const by = (request.query.by ?? 'channel') as FunnelBreakdown;
      const [overall, split] = await Promise.all([
        insight(saleFunnel(reader, { saleId })),
        insight(saleFunnel(reader, { saleId, breakdown: by })),
      ]);
      const groups = new Map<string, Record<string, string | number>>();
      for (const row of split) {
        const entry = groups.get(row.group) ?? { key: row.group };
        entry[row.step_name] = row.shoppers;
        groups.set(row.group, entry);
      }
      return {
        sale_id: saleId,
        by,
        stages: [...FUNNEL_STEPS],
        overall: overall.map((r) => ({
          stage: r.step_name,
          shoppers: r.shoppers,
          conversion: r.step === 1 ? null : r.conversion_from_previous,
          median_seconds_from_previous: r.median_seconds_from_previous,
        })),
        breakdown: [...groups.values()],
      };
    },
  );

  app.get('/api/shoppers/:sale', { ...anyRole, schema: { params: SaleParams } }, async (request) => {
    const saleId = request.params.sale;
    const seen = await insight(knownSales(reader, 32));
    // Retention: this sale's shoppers, and which of the later sales they came back to (oldest first).
    const chronological = [...seen].reverse().map((s) => s.sale_id);
    const from = chronological.indexOf(saleId);
    const cohort = from >= 0 ? chronological.slice(from, from + 8) : [saleId];
    const [kinds, missed, repeat, retention, segments] = await Promise.all([
      insight(newVsReturning(reader, { saleId })),
      insight(missedOutShoppers(reader, { saleId, limit: 500 })),
      insight(repeatBuyers(reader, { saleIds: chronological.length ? chronological : [saleId], limit: 200 })),
      // Retention needs a later sale to come back to: with this sale alone there is nothing to show, nor to ask.
      cohort.length >= 2 ? insight(retentionAcrossSales(reader, { saleIds: cohort })) : Promise.resolve([]),
      insight(
        selectRows<{ segment: string; shoppers: number }>(
          reader,
          `SELECT segment, count() AS shoppers FROM shopper_segments FINAL
           WHERE run_id = (SELECT argMax(run_id, at) FROM offer_runs WHERE has(from_sales, {sale:String}) OR for_sale = {sale:String})
           GROUP BY segment ORDER BY shoppers DESC`,
          { sale: saleId },
          ['shoppers'],
        ),
      ),
    ]);
    const why = (m: (typeof missed)[number]) =>
      m.queue_position === null
        ? 'refused before a queue place'
        : (m.places_short ?? 0) > 0
          ? 'queued past the last unit'
          : 'in reach, but units went first';
    const summary = new Map<string, number>();
    for (const m of missed) summary.set(why(m), (summary.get(why(m)) ?? 0) + 1);
    const first = retention[0]?.shoppers ?? 0;
    return {
      sale_id: saleId,
      new_vs_returning: kinds,
      segments,
      missed_out: missed.map((m) => ({ shopper_id: m.shopper_id, queue_position: m.queue_position, reason: why(m) })),
      missed_out_summary: [...summary].map(([reason, shoppers]) => ({ reason, shoppers })),
      repeat_buyers: repeat,
      retention: retention.slice(1).map((r) => ({
        cohort_sale: saleId,
        later_sale: r.sale_id,
        cohort_shoppers: first,
        returned: r.shoppers,
        share: r.share_of_first,
      })),
    };
  });

  app.get('/api/offers/:sale', { ...anyRole, schema: { params: SaleParams } }, async (request) => {
    const saleId = request.params.sale;
    const [outcomes, runs, offers] = await Promise.all([
      insight(offerOutcomes(reader, { saleId })),
      insight(
        // Aliases differ from the columns: ClickHouse would otherwise read `for_sale` in WHERE as the aggregate.
        selectRows<Record<string, unknown>>(
          reader,
          `SELECT run_id, argMax(step, at) AS last_step, any(from_sales) AS run_from_sales, any(for_sale) AS run_for_sale,
                  max(shoppers) AS run_shoppers, max(at) AS last_at
           FROM offer_runs WHERE for_sale = {sale:String} OR has(from_sales, {sale:String})
           GROUP BY run_id ORDER BY last_at DESC LIMIT 50`,
          { sale: saleId },
          ['run_shoppers'],
        ).then((rows) =>
          rows.map((row) => {
            return {
              run_id: String(row.run_id),
              step: String(row.last_step),
              from_sales: row.run_from_sales as string[],
              for_sale: String(row.run_for_sale),
              shoppers: Number(row.run_shoppers),
              at: String(row.last_at),
            };
          }),
        ),
      ),
      insight(
        selectRows<Record<string, unknown>>(
          reader,
          `SELECT run_id, rule_id, shopper_id, segment, offer_id, kind, price_cents, toUInt8(holdout) AS holdout, why
           FROM offers FINAL WHERE sale_id = {sale:String} ORDER BY created_at DESC, shopper_id LIMIT 100`,
          { sale: saleId },
          ['holdout', 'price_cents'],
        ),
      ),
    ]);
    // The offer loop's own uplift arithmetic (95% interval, small-sample warning), so page and CLI agree.
    const uplift = outcomes.map(upliftOf).map((u) => ({
      rule_id: u.rule_id,
      offered: u.offered,
      offered_conversion: u.offered_conversion,
      holdout: u.holdout,
      holdout_conversion: u.holdout_conversion,
      difference: u.difference,
      ci_low: Number.isFinite(u.ci95_low) ? u.ci95_low : null,
      ci_high: Number.isFinite(u.ci95_high) ? u.ci95_high : null,
      revenue_per_offered_shopper_cents: u.offered_revenue_per_shopper_cents,
      revenue_per_holdout_shopper_cents: u.holdout_revenue_per_shopper_cents,
      shown: u.shown,
      redeemed: u.redeemed,
      warning: u.warning,
    }));
    return {
      sale_id: saleId,
      rules: deps.offerJobs ? await deps.offerJobs.rules().catch(() => []) : [],
      runs,
      offers,
      uplift,
      note: runs.length === 0 ? 'No offer job has run for this sale yet.' : null,
    };
  });

  // ---------------------------------------------------------------- sales

  app.get('/api/sales', anyRole, async () => ({ sales: await store.listSales() }));

  app.get('/api/sales/compare', anyRole, async () => {
    const seen = await insight(knownSales(reader, 20));
    const rows = seen.length
      ? await insight(
          compareSales(
            reader,
            seen.map((s) => s.sale_id),
          ),
        )
      : [];
    return { sales: rows.map((r): SaleComparison => ({ ...r, conversion: r.shoppers ? r.orders_paid / r.shoppers : null })) };
  });

  app.post('/api/sales', { ...marketer, schema: { body: CreateSales } }, async (request, reply) => {
    const account = signedInAccount(request);
    const { sale, follow_up } = request.body;
    if (follow_up && follow_up.id === sale.id) throw dashboardError('SALE_CORE_REFUSED', 'The follow-up sale needs an id of its own.');
    // The follow-up first, so the sale that names it never points at a sale that does not exist.
    const withLink = follow_up && (await saleCore.supportsFollowUp());
    if (follow_up) await saleCore.createSale(follow_up as SaleDefinition);
    await saleCore.createSale({ ...(sale as SaleDefinition), ...(withLink ? { follow_up_sale_id: follow_up.id } : {}) });
    if (follow_up)
      await store.recordSale({
        saleId: follow_up.id,
        title: follow_up.title,
        startsAt: follow_up.starts_at,
        endsAt: follow_up.ends_at,
        followUpSaleId: null,
        createdBy: account.id,
      });
    await store.recordSale({
      saleId: sale.id,
      title: sale.title,
      startsAt: sale.starts_at,
      endsAt: sale.ends_at,
      followUpSaleId: follow_up?.id ?? null,
      createdBy: account.id,
    });
    reply.code(201);
    return { sale_id: sale.id, follow_up_sale_id: follow_up?.id ?? null, linked_in_sale_core: !!withLink };
  });

  app.post('/api/sales/:sale/end', { ...marketer, schema: { params: SaleParams } }, async (request) => {
    await saleCore.endSale(request.params.sale);
    await store.markSaleEnded(request.params.sale);
    return { sale_id: request.params.sale, status: 'ended' };
  });
}
