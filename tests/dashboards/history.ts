// A small synthetic history for the dashboards' and notebooks' tests, with every number known by hand.
// Ten shoppers; stock 4. u1–u3 pay, u4 reserves and lapses, u5 is refused at the purchase, u6–u8 at the
// queue's door, u9–u10 only browse. In the next sale the rule offered u5–u7 (u8 held out): u5 and u6 buy.
import { v7 as uuidv7 } from 'uuid';
import type { Warehouse } from '../../analytics/warehouse/warehouse.js';

export const SALE = 'nb-sale-1';
export const NEXT = 'nb-sale-2';
const START = Date.UTC(2026, 10, 20, 10, 0, 0);
const iso = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

const shoppers = Array.from({ length: 10 }, (_, i) => `u${i + 1}`);
const reached = (n: number) => shoppers.slice(0, n);

function click(type: string, shopper: string, at: number, extra: Record<string, unknown> = {}) {
  return {
    event_id: uuidv7(),
    type,
    ts: iso(at),
    sale_id: SALE,
    user_id: shopper,
    anon_id: `anon-${shopper}`,
    shopper_id: shopper,
    session_id: `s-${shopper}`,
    sku: 'SKU-1',
    channel: shopper === 'u2' || shopper === 'u9' ? 'app' : 'web',
    device: 'desktop',
    ip_hash: `ip-${shopper}`,
    offer_id: null,
    bot_signals: [],
    path: null,
    price_cents: null,
    qty: null,
    queue_position: null,
    reject_reason: null,
    kafka_partition: 0,
    kafka_offset: 0,
    ingested_at: iso(at + 300),
    ...extra,
  };
}

function order(sale: string, status: 'reserved' | 'paid' | 'expired', shopper: string, at: number) {
  return {
    event_id: uuidv7(),
    type: `order_${status}`,
    status,
    ts: iso(at),
    order_id: `${sale}.order-${shopper}`,
    sale_id: sale,
    user_id: shopper,
    anon_id: `anon-${shopper}`,
    shopper_id: shopper,
    session_id: `s-${shopper}`,
    sku: 'SKU-1',
    channel: 'web',
    device: 'desktop',
    offer_id: null,
    bot_signals: [],
    price_cents: 10_000,
    qty: 1,
    amount_cents: 10_000,
    expires_at: status === 'reserved' ? iso(at + 600_000) : null,
    kafka_partition: 0,
    kafka_offset: 0,
    ingested_at: iso(at + 300),
  };
}

export async function insertHistory(warehouse: Warehouse): Promise<void> {
  const clicks = [
    ...reached(10).map((s, i) => click('page_view', s, START + i * 1000)),
    ...reached(10).map((s, i) => click('product_view', s, START + 20_000 + i * 1000)),
    ...reached(8).map((s, i) => click('add_to_cart', s, START + 40_000 + i * 1000, { qty: 1 })),
    ...reached(5).map((s, i) => click('queue_joined', s, START + 60_000 + i * 1000, { queue_position: i + 1 })),
    ...['u6', 'u7', 'u8'].map((s, i) =>
      click('queue_refused', s, START + 66_000 + i * 1000, { queue_position: 6 + i, reject_reason: 'sold_out' }),
    ),
    ...reached(5).map((s, i) => click('admitted', s, START + 70_000 + i * 1000)),
    ...reached(5).map((s, i) => click('purchase_attempt', s, START + 80_000 + i * 1000, { qty: 1 })),
    click('purchase_rejected', 'u5', START + 85_000, { reject_reason: 'sold_out' }),
  ];
  await warehouse.insert('clickstream_events', clicks);
  await warehouse.insert('order_facts', [
    ...reached(4).map((s, i) => order(SALE, 'reserved', s, START + 80_500 + i * 1000)),
    ...reached(3).map((s, i) => order(SALE, 'paid', s, START + 120_000 + i * 1000)),
    order(SALE, 'expired', 'u4', START + 700_000),
    ...['u5', 'u6'].map((s, i) => order(NEXT, 'reserved', s, START + 86_400_000 + i * 1000)),
    ...['u5', 'u6'].map((s, i) => order(NEXT, 'paid', s, START + 86_460_000 + i * 1000)),
  ]);
  await warehouse.insert(
    'offers',
    ['u5', 'u6', 'u7', 'u8'].map((shopper) => ({
      run_id: 'nb-run',
      sale_id: NEXT,
      shopper_id: shopper,
      rule_id: 'missed-out-discount',
      offer_id: shopper === 'u8' ? null : `offer-${shopper}`,
      kind: 'price',
      sku: null,
      price_cents: shopper === 'u8' ? null : 8000,
      discount_cents: shopper === 'u8' ? 0 : 2000,
      early_access_ms: null,
      holdout: shopper === 'u8',
      source: 'batch',
      segment: 'missed_out',
      why: 'missed out in nb-sale-1',
      expires_at: iso(START + 90_000_000),
    })),
  );
}
