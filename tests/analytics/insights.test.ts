// Every insight query against a synthetic history with known answers: the expected numbers are computed
// here, in plain JS, from the rows the test generated, and each query must return exactly them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as insights from '../../analytics/insights/index.js';
import {
  buildHistory,
  type ClickRow,
  clickRowsForInsert,
  type History,
  type OrderRow,
  orderRowsForInsert,
  SALE_START,
  SALES,
} from './insights-history.js';
import { openWarehouseEndpoint, type TestWarehouseEndpoint } from './insights-warehouse.js';

const SALE = 'hist-s3';
const history: History = buildHistory(7);
const clicksOf = (sale: string) => history.clicks.filter((c) => c.sale_id === sale);
const ordersOf = (sale: string) => history.orders.filter((o) => o.sale_id === sale);

// The person behind an event: its user, else the user its anonymous id first logged in as, else the anon id.
const loginOf = new Map<string, { user: string; ts: number }>();
for (const c of history.clicks) {
  if (c.type !== 'login' || c.user_id === null) continue;
  const seen = loginOf.get(c.anon_id);
  if (!seen || c.ts < seen.ts) loginOf.set(c.anon_id, { user: c.user_id, ts: c.ts });
}
const personOf = (c: ClickRow) => c.user_id ?? loginOf.get(c.anon_id)?.user ?? c.anon_id;

function groupBy<T, K>(items: readonly T[], key: (item: T) => K): Map<K, T[]> {
  const map = new Map<K, T[]>();
  for (const item of items) {
    const k = key(item);
    if (!map.has(k)) map.set(k, []);
    map.get(k)!.push(item);
  }
  return map;
}
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
/** ClickHouse's quantileExact: the element at floor(level · n) of the sorted values. */
const quantileExact = (values: number[], level: number) => [...values].sort((a, b) => a - b)[Math.floor(level * values.length)]!;
const uniq = <T>(values: T[]) => new Set(values).size;

let wh: TestWarehouseEndpoint;

beforeAll(async () => {
  wh = await openWarehouseEndpoint('insights');
  await wh.warehouse.insert('clickstream_events', clickRowsForInsert(history.clicks));
  await wh.warehouse.insert('order_facts', orderRowsForInsert(history.orders));
  // The offer job's record for the last sale: bargain hunters offered, two loyal shoppers held out, one
  // newcomer offered who never saw it (no event carries its id).
  const offer = `offer-bargain-${SALE}`;
  const targets = [
    ...history.shoppers.filter((s) => s.persona === 'bargain').map((s) => ({ shopper: s.userId, holdout: false, offer })),
    { shopper: 'u-loyal-0', holdout: true, offer: null },
    { shopper: 'u-loyal-1', holdout: true, offer: null },
    { shopper: 'u-browser-0', holdout: false, offer: 'offer-unseen' },
  ];
  await wh.warehouse.insert(
    'offers',
    targets.map((t) => ({
      run_id: 'run-insights',
      sale_id: SALE,
      shopper_id: t.shopper,
      rule_id: 'bargain-price',
      offer_id: t.offer,
      kind: 'price',
      sku: null,
      price_cents: null,
      discount_cents: 0,
      early_access_ms: null,
      holdout: t.holdout,
      source: 'batch',
      segment: 'bargain_hunters',
      why: 'test',
      expires_at: '2026-12-01 00:00:00.000',
    })),
  );
}, 120_000);

afterAll(async () => wh?.close());

describe('live sale', () => {
  it('orders and units per second', async () => {
    const bySecond = groupBy(ordersOf(SALE), (o) => Math.floor(o.ts / 1000) * 1000);
    const expected = [...bySecond.entries()]
      .sort(([a], [b]) => a - b)
      .map(([second, rows]) => ({
        second_ms: second,
        orders_reserved: rows.filter((o) => o.status === 'reserved').length,
        units_reserved: sum(rows.filter((o) => o.status === 'reserved').map((o) => o.qty)),
        orders_paid: rows.filter((o) => o.status === 'paid').length,
        units_paid: sum(rows.filter((o) => o.status === 'paid').map((o) => o.qty)),
        revenue_cents: sum(rows.filter((o) => o.status === 'paid').map((o) => o.amount_cents)),
      }));
    expect(expected.length).toBeGreaterThan(10);
    expect(await insights.salesVelocity(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('units left per SKU and time to sell out', async () => {
    const initial = history.initialStock[SALE]!;
    const units = (sku: string, status: OrderRow['status']) =>
      sum(
        ordersOf(SALE)
          .filter((o) => o.sku === sku && o.status === status)
          .map((o) => o.qty),
      );
    const expectedLeft = Object.keys(initial)
      .sort()
      .map((sku) => ({
        sku,
        initial_units: initial[sku]!,
        units_reserved: units(sku, 'reserved'),
        units_released: units(sku, 'expired'),
        units_paid: units(sku, 'paid'),
        units_left: initial[sku]! - units(sku, 'reserved') + units(sku, 'expired'),
      }));
    expect(expectedLeft.some((row) => row.units_released > 0)).toBe(true);
    expect(await insights.unitsLeftPerSku(wh.reader, { saleId: SALE, initialStock: initial })).toEqual(expectedLeft);

    const start = SALE_START[SALE]!;
    const expectedSellOut = Object.keys(initial)
      .sort()
      .map((sku) => {
        const moves = ordersOf(SALE)
          .filter((o) => o.sku === sku && o.status !== 'paid')
          .map((o) => ({ second: Math.floor(o.ts / 1000) * 1000, delta: o.status === 'reserved' ? o.qty : -o.qty }))
          .sort((a, b) => a.second - b.second);
        let net = 0;
        let at: number | null = null;
        for (const [second, rows] of groupBy(moves, (m) => m.second)) {
          net += sum(rows.map((r) => r.delta));
          if (net >= initial[sku]!) {
            at = second;
            break;
          }
        }
        return { sku, initial_units: initial[sku]!, sold_out_at_ms: at, seconds_to_sell_out: at === null ? null : (at - start) / 1000 };
      });
    expect(expectedSellOut.every((row) => row.sold_out_at_ms !== null)).toBe(true);
    expect(await insights.timeToSellOut(wh.reader, { saleId: SALE, initialStock: initial, startsAtMs: start })).toEqual(expectedSellOut);
  });

  it('waiting-room length and admission rate per minute', async () => {
    const room = clicksOf(SALE).filter((c) => ['queue_joined', 'admitted', 'queue_refused'].includes(c.type));
    let waiting = 0;
    const expected = [...groupBy(room, (c) => Math.floor(c.ts / 60_000) * 60_000).entries()]
      .sort(([a], [b]) => a - b)
      .map(([minute, rows]) => {
        const joined = rows.filter((c) => c.type === 'queue_joined').length;
        const admitted = rows.filter((c) => c.type === 'admitted').length;
        waiting += joined - admitted;
        return {
          minute_ms: minute,
          joined,
          admitted,
          refused: rows.filter((c) => c.type === 'queue_refused').length,
          waiting,
          admitted_per_second: admitted / 60,
        };
      });
    expect(expected.some((row) => row.waiting > 0)).toBe(true);
    expect(await insights.waitingRoom(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('rejections by reason, at the purchase and at the queue', async () => {
    const rejected = clicksOf(SALE).filter((c) => c.type === 'purchase_rejected' || c.type === 'queue_refused');
    const expected = [...groupBy(rejected, (c) => `${c.type === 'purchase_rejected' ? 'purchase' : 'queue'}|${c.reject_reason}`).entries()]
      .map(([key, rows]) => ({ stage: key.split('|')[0], reason: key.split('|')[1], rejections: rows.length }))
      .sort((a, b) => b.rejections - a.rejections || a.stage!.localeCompare(b.stage!) || a.reason!.localeCompare(b.reason!));
    expect(expected.map((row) => row.stage).sort()).toEqual(['purchase', 'queue']);
    expect(await insights.rejectionsByReason(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('bot-flagged purchase attempts', async () => {
    const attempts = clicksOf(SALE).filter((c) => c.type === 'purchase_attempt');
    const flagged = attempts.filter((c) => c.bot_signals.length > 0);
    const signals = [...new Set(flagged.flatMap((c) => c.bot_signals))];
    const bySignal = signals
      .map((signal) => {
        const rows = attempts.filter((c) => c.bot_signals.includes(signal));
        return { signal, attempts: rows.length, shoppers: uniq(rows.map((c) => c.shopper_id)) };
      })
      .sort((a, b) => b.attempts - a.attempts || a.signal.localeCompare(b.signal));
    const expected = {
      attempts: attempts.length,
      flagged_attempts: flagged.length,
      flagged_shoppers: uniq(flagged.map((c) => c.shopper_id)),
      by_signal: bySignal,
    };
    expect(expected.flagged_attempts).toBe(3);
    expect(await insights.botFlaggedAttempts(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('pipeline freshness', async () => {
    const rows = clicksOf(SALE);
    const lastEvent = Math.max(...rows.map((c) => c.ts));
    const window = rows.filter((c) => c.ts >= lastEvent - 30_000);
    const lags = window.map((c) => c.ingested_at - c.ts);
    expect(window.length).toBeGreaterThan(2);
    expect(window.length).toBeLessThan(rows.length);
    expect(await insights.pipelineFreshness(wh.reader, { saleId: SALE, windowSeconds: 30 })).toEqual({
      last_event_ms: lastEvent,
      last_ingested_ms: Math.max(...window.map((c) => c.ingested_at)),
      lag_p50_ms: quantileExact(lags, 0.5),
      lag_p95_ms: quantileExact(lags, 0.95),
      rows_in_window: window.length,
    });
    expect(await insights.pipelineFreshness(wh.reader, { saleId: 'no-such-sale' })).toEqual({
      last_event_ms: null,
      last_ingested_ms: null,
      lag_p50_ms: null,
      lag_p95_ms: null,
      rows_in_window: 0,
    });
  });
});

describe('funnel', () => {
  const steps = insights.FUNNEL_STEPS;
  interface Journey {
    firsts: (number | undefined)[];
    level: number;
    channel: string;
    device: string;
    offer: string;
  }
  // Each shopper's first time at each step, and how far along the steps in order they got (the history
  // reaches steps in order, well inside the window, so the level is the run of steps from the first).
  function journeys(): Map<string, Journey> {
    const events = [
      ...clicksOf(SALE).map((c) => ({
        person: personOf(c),
        t: c.ts,
        step: c.type,
        channel: c.channel,
        device: c.device,
        offer: c.offer_id,
      })),
      ...ordersOf(SALE)
        .filter((o) => o.status !== 'expired')
        .map((o) => ({ person: o.shopper_id, t: o.ts, step: o.status, channel: o.channel, device: o.device, offer: o.offer_id })),
    ];
    const out = new Map<string, Journey>();
    for (const [person, rows] of groupBy(events, (e) => e.person)) {
      rows.sort((a, b) => a.t - b.t);
      const firsts = steps.map((step) => rows.find((r) => r.step === step)?.t);
      let level = 0;
      while (level < steps.length && firsts[level] !== undefined && (level === 0 || firsts[level]! > firsts[level - 1]!)) level++;
      out.set(person, {
        firsts,
        level,
        channel: rows[0]!.channel,
        device: rows[0]!.device,
        offer: rows.find((r) => r.offer)?.offer ?? 'none',
      });
    }
    return out;
  }
  function expectedFunnel(groupOf: (j: Journey, person: string) => string) {
    const rows: insights.FunnelRow[] = [];
    const groups = groupBy([...journeys().entries()], ([person, j]) => groupOf(j, person));
    for (const group of [...groups.keys()].sort()) {
      const people = groups.get(group)!.map(([, j]) => j);
      const counts = steps.map((_, i) => people.filter((j) => j.level >= i + 1).length);
      steps.forEach((step, i) => {
        const reached = people.filter((j) => j.level >= i + 1);
        rows.push({
          group,
          step: i + 1,
          step_name: step,
          shoppers: counts[i]!,
          conversion_from_previous: i === 0 ? 1 : counts[i - 1] === 0 ? 0 : counts[i]! / counts[i - 1]!,
          conversion_from_first: counts[0] === 0 ? 0 : counts[i]! / counts[0]!,
          median_seconds_from_previous:
            i === 0 || reached.length === 0
              ? null
              : quantileExact(
                  reached.map((j) => j.firsts[i]! - j.firsts[i - 1]!),
                  0.5,
                ) / 1000,
        });
      });
    }
    return rows;
  }

  it('counts stitched shoppers through every step, with conversion and median time between steps', async () => {
    const expected = expectedFunnel(() => 'all');
    // Stitching matters: the page and product views are anonymous, the queue and purchase are not.
    expect(expected.find((row) => row.step_name === 'paid')!.shoppers).toBeGreaterThan(5);
    expect(await insights.saleFunnel(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('breaks down by channel, device and offer', async () => {
    expect(await insights.saleFunnel(wh.reader, { saleId: SALE, breakdown: 'channel' })).toEqual(expectedFunnel((j) => j.channel));
    expect(await insights.saleFunnel(wh.reader, { saleId: SALE, breakdown: 'device' })).toEqual(expectedFunnel((j) => j.device));
    const byOffer = expectedFunnel((j) => j.offer);
    expect(new Set(byOffer.map((row) => row.group))).toEqual(new Set(['none', `offer-bargain-${SALE}`]));
    expect(await insights.saleFunnel(wh.reader, { saleId: SALE, breakdown: 'offer' })).toEqual(byOffer);
  });

  it('breaks down by segment (unsegmented when no run segmented the shopper)', async () => {
    const segmentOf = new Map(history.shoppers.map((s) => [s.userId, s.persona]));
    await wh.warehouse.insert(
      'shopper_segments',
      history.shoppers.map((s) => ({ run_id: 'run-funnel', shopper_id: s.userId, segment: s.persona })),
    );
    const rows = await insights.saleFunnel(wh.reader, { saleId: SALE, breakdown: 'segment' });
    const want = expectedFunnel((_, person) => segmentOf.get(person) ?? 'unsegmented');
    expect(want.some((row) => row.group === 'unsegmented')).toBe(true);
    expect(rows).toEqual(want);
  });
});

describe('shoppers', () => {
  it('new against returning', async () => {
    const first = new Map<string, number>();
    for (const c of history.clicks) first.set(personOf(c), Math.min(first.get(personOf(c)) ?? Infinity, c.ts));
    const here = new Map<string, number>();
    for (const c of clicksOf(SALE)) here.set(personOf(c), Math.min(here.get(personOf(c)) ?? Infinity, c.ts));
    const kinds = [...here.entries()].map(([person, ts]) => (first.get(person)! < ts ? 'returning' : 'new'));
    const expected = ['new', 'returning'].map((kind) => ({ kind, shoppers: kinds.filter((k) => k === kind).length }));
    expect(expected[0]!.shoppers).toBe(3);
    expect(await insights.newVsReturning(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('retention across sales', async () => {
    const peopleIn = (sale: string) => new Set(clicksOf(sale).map(personOf));
    const cohort = peopleIn(SALES[0]);
    const expected = SALES.map((sale) => {
      const shoppers = [...peopleIn(sale)].filter((p) => cohort.has(p)).length;
      return { sale_id: sale, shoppers, share_of_first: shoppers / cohort.size };
    });
    expect(expected[1]!.shoppers).toBeLessThan(cohort.size);
    expect(await insights.retentionAcrossSales(wh.reader, { saleIds: [...SALES] })).toEqual(expected);
    // One sale is a question too (ClickHouse's retention wants two conditions or more): all of its shoppers.
    const one = peopleIn(SALES[1]).size;
    expect(one).toBeGreaterThan(0);
    expect(await insights.retentionAcrossSales(wh.reader, { saleIds: [SALES[1]] })).toEqual([
      { sale_id: SALES[1], shoppers: one, share_of_first: 1 },
    ]);
  });

  it('repeat buyers', async () => {
    const paid = history.orders.filter((o) => o.status === 'paid');
    const expected = [...groupBy(paid, (o) => o.shopper_id).entries()]
      .map(([shopper, rows]) => ({
        shopper_id: shopper,
        sales_bought: uniq(rows.map((o) => o.sale_id)),
        orders_paid: rows.length,
        spent_cents: sum(rows.map((o) => o.amount_cents)),
      }))
      .filter((row) => row.sales_bought >= 2)
      .sort((a, b) => b.sales_bought - a.sales_bought || b.spent_cents - a.spent_cents || a.shopper_id.localeCompare(b.shopper_id));
    expect(expected.length).toBeGreaterThan(5);
    expect(await insights.repeatBuyers(wh.reader, { saleIds: [...SALES] })).toEqual(expected);
  });

  it('missed-out shoppers with their queue position against the units', async () => {
    const reservedBy = new Set(
      ordersOf(SALE)
        .filter((o) => o.status === 'reserved')
        .map((o) => o.shopper_id),
    );
    const unitsReserved = sum(
      ordersOf(SALE)
        .filter((o) => o.status === 'reserved')
        .map((o) => o.qty),
    );
    const expected = [...groupBy(clicksOf(SALE), personOf).entries()]
      .map(([person, rows]) => {
        const refusals = rows.filter((c) => c.reject_reason === 'sold_out').length;
        const places = rows
          .filter((c) => (c.type === 'queue_joined' || c.type === 'queue_refused') && c.queue_position !== null)
          .map((c) => c.queue_position!);
        const place = places.length ? Math.min(...places) : null;
        return {
          shopper_id: person,
          refusals,
          queue_position: place,
          units_reserved_in_sale: unitsReserved,
          places_short: place === null ? null : place - unitsReserved,
        };
      })
      .filter((row) => row.refusals > 0 && !reservedBy.has(row.shopper_id))
      .sort((a, b) => (a.queue_position ?? 2 ** 32) - (b.queue_position ?? 2 ** 32) || a.shopper_id.localeCompare(b.shopper_id));
    expect(expected.map((row) => row.shopper_id).sort()).toEqual(['u-missed-0', 'u-missed-1', 'u-missed-2', 'u-missed-3']);
    expect(await insights.missedOutShoppers(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('cart abandoners', async () => {
    const reservedBy = new Set(
      ordersOf(SALE)
        .filter((o) => o.status === 'reserved')
        .map((o) => o.shopper_id),
    );
    const expected = [...groupBy(clicksOf(SALE), personOf).entries()]
      .map(([person, rows]) => {
        const has = (type: string) => rows.some((c) => c.type === type);
        return {
          shopper_id: person,
          cart_adds: rows.filter((c) => c.type === 'add_to_cart').length,
          units_in_cart: sum(rows.filter((c) => c.type === 'add_to_cart').map((c) => c.qty ?? 0)),
          furthest_step: has('purchase_attempt')
            ? 'purchase_attempt'
            : has('admitted')
              ? 'admitted'
              : has('queue_joined')
                ? 'queue_joined'
                : 'add_to_cart',
        };
      })
      .filter((row) => row.cart_adds > 0 && !reservedBy.has(row.shopper_id))
      .sort((a, b) => a.shopper_id.localeCompare(b.shopper_id));
    expect(expected.some((row) => row.shopper_id.startsWith('u-abandoner'))).toBe(true);
    expect(await insights.cartAbandoners(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('late payers and lapsed reservations', async () => {
    const expected = [...groupBy(ordersOf(SALE), (o) => o.order_id).entries()]
      .map(([orderId, rows]) => {
        const reserved = rows.find((o) => o.status === 'reserved')!;
        const paid = rows.find((o) => o.status === 'paid');
        const window = (reserved.expires_at! - reserved.ts) / 1000;
        const toPay = paid ? (paid.ts - reserved.ts) / 1000 : null;
        const outcome =
          rows.some((o) => o.status === 'expired') && !paid ? 'lapsed' : toPay !== null && toPay > 0.5 * window ? 'late_paid' : '';
        return {
          order_id: orderId,
          shopper_id: reserved.shopper_id,
          outcome,
          seconds_to_pay: toPay,
          window_seconds: window,
          amount_cents: reserved.amount_cents,
        };
      })
      .filter((row) => row.outcome !== '')
      .sort((a, b) => a.outcome.localeCompare(b.outcome) || a.order_id.localeCompare(b.order_id));
    expect(new Set(expected.map((row) => row.outcome))).toEqual(new Set(['lapsed', 'late_paid']));
    expect(await insights.latePayersAndLapsed(wh.reader, { saleId: SALE })).toEqual(expected);
  });
});

describe('bots', () => {
  it('flagged shoppers and sessions, and what they took', async () => {
    const expected = [...groupBy(clicksOf(SALE), personOf).entries()]
      .map(([person, rows]) => {
        const orders = ordersOf(SALE).filter((o) => o.shopper_id === person);
        return {
          shopper_id: person,
          signals: [...new Set(rows.flatMap((c) => c.bot_signals))].sort(),
          sessions: uniq(rows.map((c) => c.session_id)),
          flagged_sessions: uniq(rows.filter((c) => c.bot_signals.length > 0).map((c) => c.session_id)),
          events: rows.length,
          purchase_attempts: rows.filter((c) => c.type === 'purchase_attempt').length,
          units_reserved: sum(orders.filter((o) => o.status === 'reserved').map((o) => o.qty)),
          units_paid: sum(orders.filter((o) => o.status === 'paid').map((o) => o.qty)),
          ip_hashes: uniq(rows.map((c) => c.ip_hash)),
        };
      })
      .filter((row) => row.signals.length > 0)
      .sort((a, b) => b.purchase_attempts - a.purchase_attempts || a.shopper_id.localeCompare(b.shopper_id));
    expect(expected.map((row) => row.shopper_id).sort()).toEqual(['u-bot-0', 'u-bot-1', 'u-bot-2']);
    expect(await insights.flaggedShoppers(wh.reader, { saleId: SALE })).toEqual(expected);
  });

  it('IP-hash clusters', async () => {
    const expected = [...groupBy(clicksOf(SALE), (c) => c.ip_hash).entries()]
      .map(([ip, rows]) => ({
        ip_hash: ip,
        shoppers: uniq(rows.map(personOf)),
        sessions: uniq(rows.map((c) => c.session_id)),
        flagged_shoppers: uniq(rows.filter((c) => c.bot_signals.length > 0).map(personOf)),
        purchase_attempts: rows.filter((c) => c.type === 'purchase_attempt').length,
      }))
      .filter((row) => row.shoppers >= 3)
      .sort((a, b) => b.shoppers - a.shoppers || a.ip_hash.localeCompare(b.ip_hash));
    expect(expected).toHaveLength(1);
    expect(await insights.ipHashClusters(wh.reader, { saleId: SALE })).toEqual(expected);
  });
});

describe('offers', () => {
  it('made, shown, redeemed, and conversion against the hold-out', async () => {
    const offer = `offer-bargain-${SALE}`;
    const offered = [...history.shoppers.filter((s) => s.persona === 'bargain').map((s) => s.userId), 'u-browser-0'];
    const holdout = ['u-loyal-0', 'u-loyal-1'];
    const paid = ordersOf(SALE).filter((o) => o.status === 'paid');
    const revenue = (who: string) => sum(paid.filter((o) => o.shopper_id === who).map((o) => o.amount_cents));
    const offeredBuyers = offered.filter((who) => revenue(who) > 0).length;
    const holdoutBuyers = holdout.filter((who) => revenue(who) > 0).length;
    const expected = [
      {
        rule_id: 'bargain-price',
        offered: offered.length,
        holdout: holdout.length,
        shown: offered.filter((who) => clicksOf(SALE).some((c) => c.shopper_id === who && c.offer_id === offer)).length,
        redeemed: offered.filter((who) => paid.some((o) => o.shopper_id === who && o.offer_id === offer)).length,
        offered_buyers: offeredBuyers,
        holdout_buyers: holdoutBuyers,
        offered_revenue_cents: sum(offered.map(revenue)),
        holdout_revenue_cents: sum(holdout.map(revenue)),
        offered_conversion: offeredBuyers / offered.length,
        holdout_conversion: holdoutBuyers / holdout.length,
      },
    ];
    expect(expected[0]!.shown).toBe(3);
    expect(await insights.offerOutcomes(wh.reader, { saleId: SALE })).toEqual(expected);
  });
});
