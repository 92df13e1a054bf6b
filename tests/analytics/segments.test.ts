// Shopper features, RFM scores and segments over a synthetic history: every shopper's row is computed here
// in plain JS from the generated events, and the personas the history was built from land in the segment
// they were built for.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { segmentShoppers } from '../../analytics/segments/index.js';
import { buildHistory, clickRowsForInsert, type History, orderRowsForInsert, SALES } from './insights-history.js';
import { openWarehouseEndpoint, type TestWarehouseEndpoint } from './insights-warehouse.js';

const history: History = buildHistory(11);
let wh: TestWarehouseEndpoint;

beforeAll(async () => {
  wh = await openWarehouseEndpoint('segments');
  await wh.warehouse.insert('clickstream_events', clickRowsForInsert(history.clicks));
  await wh.warehouse.insert('order_facts', orderRowsForInsert(history.orders));
}, 120_000);

afterAll(async () => wh?.close());

interface Expected {
  shopper_id: string;
  segment: string;
  recency_score: number;
  frequency_score: number;
  monetary_score: number;
  sales_seen: number;
  sales_bought: number;
  orders_paid: number;
  spent_cents: number;
  sales_since_last_buy: number;
  engaged_events: number;
  missed_out: number;
  abandoned: number;
  price_offer_share: number;
  bot_events: number;
}

/** The whole segmentation, recomputed from the history's rows. */
function expectedSegments(): Expected[] {
  const login = new Map<string, string>();
  for (const c of [...history.clicks].sort((a, b) => a.ts - b.ts))
    if (c.type === 'login' && c.user_id && !login.has(c.anon_id)) login.set(c.anon_id, c.user_id);
  const salesByStart: string[] = [...SALES].sort(
    (a, b) =>
      Math.min(...history.clicks.filter((c) => c.sale_id === a).map((c) => c.ts)) -
      Math.min(...history.clicks.filter((c) => c.sale_id === b).map((c) => c.ts)),
  );
  const rank = (sale: string) => salesByStart.indexOf(sale) + 1;
  const people = new Map<
    string,
    {
      user: boolean;
      sales: Set<string>;
      events: number;
      bot: number;
      refused: Set<string>;
      carted: Set<string>;
      viewed: Set<string>;
      acted: Set<string>;
    }
  >();
  const acting = new Set(['add_to_cart', 'queue_joined', 'queue_refused', 'purchase_attempt', 'purchase_rejected']);
  for (const c of history.clicks) {
    const person = c.user_id ?? login.get(c.anon_id) ?? c.anon_id;
    const p = people.get(person) ?? {
      user: false,
      sales: new Set(),
      events: 0,
      bot: 0,
      refused: new Set(),
      carted: new Set(),
      viewed: new Set(),
      acted: new Set(),
    };
    p.user ||= c.user_id !== null || login.has(c.anon_id);
    p.sales.add(c.sale_id);
    p.events += 1;
    if (c.bot_signals.length > 0) p.bot += 1;
    if (c.reject_reason === 'sold_out') p.refused.add(c.sale_id);
    if (c.type === 'add_to_cart') p.carted.add(c.sale_id);
    if (c.type === 'product_view') p.viewed.add(c.sale_id);
    if (acting.has(c.type)) p.acted.add(c.sale_id);
    people.set(person, p);
  }
  const rows = [...people.entries()]
    .filter(([, p]) => p.user)
    .map(([person, p]) => {
      const orders = history.orders.filter((o) => o.shopper_id === person);
      const paid = orders.filter((o) => o.status === 'paid');
      const reservedIn = new Set(orders.filter((o) => o.status === 'reserved').map((o) => o.sale_id));
      const boughtIn = new Set(paid.map((o) => o.sale_id));
      const lastBought = Math.max(0, ...[...boughtIn].map(rank));
      return {
        shopper_id: person,
        sales_seen: p.sales.size,
        sales_bought: boughtIn.size,
        orders_paid: paid.length,
        spent_cents: paid.reduce((n, o) => n + o.amount_cents, 0),
        sales_since_last_buy: SALES.length - lastBought,
        first_seen_in_latest: Math.min(...[...p.sales].map(rank)) === SALES.length,
        engaged_events: p.events,
        missed_out: [...p.refused].filter((s) => !reservedIn.has(s)).length,
        abandoned: [...p.carted].filter((s) => !reservedIn.has(s)).length,
        price_offer_share: paid.length === 0 ? 0 : paid.filter((o) => o.offer_id !== null).length / paid.length,
        // Flagged events, plus the sales where the shopper went for the stock without viewing a product.
        bot_events: p.bot + [...p.acted].filter((sale) => !p.viewed.has(sale)).length,
      };
    });
  const buyers = rows.filter((r) => r.orders_paid > 0);
  const score = (better: (other: (typeof rows)[number], me: (typeof rows)[number]) => boolean, me: (typeof rows)[number]) =>
    Math.min(5, Math.max(1, Math.ceil((5 * buyers.filter((b) => better(b, me)).length) / buyers.length)));
  return rows
    .map((r) => {
      const buyer = r.orders_paid > 0;
      const R = buyer ? score((b, me) => b.sales_since_last_buy >= me.sales_since_last_buy, r) : 0;
      const F = buyer ? score((b, me) => b.sales_bought <= me.sales_bought, r) : 0;
      const M = buyer ? score((b, me) => b.spent_cents <= me.spent_cents, r) : 0;
      let segment = 'browsers';
      if (r.bot_events > 0) segment = 'bots';
      else if (!buyer && r.missed_out > 0) segment = 'missed_out';
      else if (buyer && r.price_offer_share >= 0.5) segment = 'bargain_hunters';
      else if (r.first_seen_in_latest) segment = 'new';
      else if (buyer && R >= 4 && F >= 5 && M >= 3) segment = 'champions';
      else if (buyer && F >= 3 && R >= 3) segment = 'loyal';
      else if (buyer && R <= 2) segment = 'at_risk';
      const { first_seen_in_latest: _, ...features } = r;
      return { ...features, segment, recency_score: R, frequency_score: F, monetary_score: M };
    })
    .sort((a, b) => a.shopper_id.localeCompare(b.shopper_id));
}

describe('shopper segments', () => {
  it('computes every shopper’s features, scores and segment, and writes them under the run id', async () => {
    const result = await segmentShoppers(wh.reader, { runId: 'seg-run-1', fromSales: [...SALES] });
    const expected = expectedSegments();
    expect(result.scored.features.shopper_id).toEqual(expected.map((e) => e.shopper_id));
    const stored = await (
      await wh.reader.query({
        query: `SELECT shopper_id, segment, recency_score, frequency_score, monetary_score, sales_seen, sales_bought, orders_paid,
                       toFloat64(spent_cents) AS spent_cents, sales_since_last_buy, engaged_events, missed_out, abandoned,
                       price_offer_share, bot_events
                FROM shopper_segments FINAL WHERE run_id = {run:String} ORDER BY shopper_id`,
        query_params: { run: 'seg-run-1' },
        format: 'JSONEachRow',
      })
    ).json<Expected>();
    expect(stored.map((row) => ({ ...row, spent_cents: Number(row.spent_cents) }))).toEqual(expected.map((e) => ({ ...e })));
  });

  it('puts the known shoppers where they belong', async () => {
    const rows = await (
      await wh.reader.query({
        query: 'SELECT shopper_id, segment FROM shopper_segments FINAL WHERE run_id = {run:String}',
        query_params: { run: 'seg-run-1' },
        format: 'JSONEachRow',
      })
    ).json<{ shopper_id: string; segment: string }>();
    const segmentOf = new Map(rows.map((r) => [r.shopper_id, r.segment]));
    const want: Record<string, string> = {
      champion: 'champions',
      loyal: 'loyal',
      at_risk: 'at_risk',
      newcomer: 'new',
      missed: 'missed_out',
      bargain: 'bargain_hunters',
      bot: 'bots',
      abandoner: 'browsers',
    };
    for (const shopper of history.shoppers) {
      // Browsers never log in: no user id, so nobody can make them an offer and they are not segmented.
      if (shopper.persona === 'browser') expect(segmentOf.has(shopper.userId)).toBe(false);
      else expect(`${shopper.userId}: ${segmentOf.get(shopper.userId)}`).toBe(`${shopper.userId}: ${want[shopper.persona]}`);
    }
  });

  it('writes nothing twice when a run writes its segments again', async () => {
    await segmentShoppers(wh.reader, { runId: 'seg-run-1', fromSales: [...SALES] });
    const [row] = await (
      await wh.reader.query({
        query: 'SELECT count() AS rows, uniqExact(shopper_id) AS shoppers FROM shopper_segments WHERE run_id = {run:String}',
        query_params: { run: 'seg-run-1' },
        format: 'JSONEachRow',
      })
    ).json<{ rows: string; shoppers: string }>();
    expect(Number(row!.rows)).toBe(expectedSegments().length);
    expect(Number(row!.shoppers)).toBe(expectedSegments().length);
  });
});
