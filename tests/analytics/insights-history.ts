// A small synthetic history of three sales, deterministic from a seed, shaped like the real contract: each
// shopper browses anonymously, logs in (the `login` event links the anon id to the user id), carts, queues,
// is admitted, tries to buy, and reserves, pays, lapses, or is refused for stock. Personas make segments
// predictable (champions buy in every sale, bots carry bot signals from one IP hash, ...). The tests compute
// every expected number from these rows in plain JS, never from the warehouse.
import { v7 as uuidv7 } from 'uuid';

export const SALES = ['hist-s1', 'hist-s2', 'hist-s3'] as const;
export const SALE_START: Record<string, number> = {
  'hist-s1': Date.UTC(2026, 10, 2, 10, 0, 0),
  'hist-s2': Date.UTC(2026, 10, 9, 10, 0, 0),
  'hist-s3': Date.UTC(2026, 10, 16, 10, 0, 0),
};
export const PAYMENT_WINDOW_MS = 300_000;
export const PRICES: Record<string, number> = { A: 5000, B: 12000 };

export type Persona =
  | 'champion' // buys in every sale
  | 'loyal' // buys in the last two sales
  | 'at_risk' // bought in the first sale only, browses since
  | 'newcomer' // first seen in the last sale, buys there
  | 'missed' // refused for stock in the last two sales, never buys
  | 'bargain' // buys in the last two sales, always with a price offer
  | 'bot' // flagged automation, one IP hash
  | 'browser' // views and leaves
  | 'abandoner'; // carts and leaves

export interface ClickRow {
  event_id: string;
  type: string;
  ts: number;
  sale_id: string;
  user_id: string | null;
  anon_id: string;
  shopper_id: string;
  session_id: string;
  sku: string | null;
  channel: string;
  device: string;
  ip_hash: string;
  offer_id: string | null;
  bot_signals: string[];
  path: string | null;
  price_cents: number | null;
  qty: number | null;
  queue_position: number | null;
  reject_reason: string | null;
  ingested_at: number;
}

export interface OrderRow {
  event_id: string;
  type: string;
  status: 'reserved' | 'paid' | 'expired';
  ts: number;
  order_id: string;
  sale_id: string;
  user_id: string;
  anon_id: string;
  shopper_id: string;
  session_id: string;
  sku: string;
  channel: string;
  device: string;
  offer_id: string | null;
  bot_signals: string[];
  price_cents: number;
  qty: number;
  amount_cents: number;
  expires_at: number | null;
  ingested_at: number;
}

export interface Shopper {
  userId: string;
  anonId: string;
  persona: Persona;
  channel: string;
  device: string;
  ipHash: string;
}

export interface History {
  shoppers: Shopper[];
  clicks: ClickRow[];
  orders: OrderRow[];
  initialStock: Record<string, Record<string, number>>;
}

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PERSONAS: [Persona, number][] = [
  ['champion', 4],
  ['loyal', 4],
  ['at_risk', 3],
  ['newcomer', 3],
  ['missed', 4],
  ['bargain', 3],
  ['bot', 3],
  ['browser', 4],
  ['abandoner', 3],
];

/** How far a persona goes in a sale: 0 absent, 1 page view … 6 purchase attempt, 7 reserves, 8 pays. */
function intent(persona: Persona, saleIndex: number): number {
  switch (persona) {
    case 'champion':
      return 8;
    case 'loyal':
      return saleIndex === 0 ? 2 : 8;
    case 'at_risk':
      return saleIndex === 0 ? 8 : 2;
    case 'newcomer':
      return saleIndex === 2 ? 8 : 0;
    case 'missed':
      return saleIndex === 0 ? 0 : 6;
    case 'bargain':
      return saleIndex === 0 ? 1 : 8;
    case 'bot':
      return 7;
    case 'browser':
      return saleIndex === 1 ? 0 : 2;
    case 'abandoner':
      return 3;
  }
}

const STEP_TYPES = ['page_view', 'product_view', 'add_to_cart', 'queue_joined', 'admitted', 'purchase_attempt'];

export function buildHistory(seed = 7): History {
  const random = prng(seed);
  const shoppers: Shopper[] = [];
  for (const [persona, count] of PERSONAS) {
    for (let i = 0; i < count; i++) {
      const n = shoppers.length;
      shoppers.push({
        userId: `u-${persona}-${i}`,
        anonId: `a-${persona}-${i}`,
        persona,
        channel: ['web', 'app', 'api'][n % 3]!,
        device: ['desktop', 'phone'][n % 2]!,
        ipHash: persona === 'bot' ? 'beefbeefbeefbeef' : (0x1000000000000000n + BigInt(n)).toString(16),
      });
    }
  }
  const clicks: ClickRow[] = [];
  const orders: OrderRow[] = [];
  const initialStock: Record<string, Record<string, number>> = {};

  SALES.forEach((saleId, saleIndex) => {
    let queuePosition = 0;
    const start = SALE_START[saleId]!;
    // Shoppers come in an order that puts the missed-out ones last (after the stock is gone).
    const order = [...shoppers].sort((a, b) => Number(a.persona === 'missed') - Number(b.persona === 'missed'));
    // The last sale has exactly the units its buyers take, so it sells out; the earlier ones have spare.
    const demand: Record<string, number> = { A: 0, B: 0 };
    order.forEach((shopper, k) => {
      if (shopper.persona !== 'missed' && intent(shopper.persona, saleIndex) >= 7) demand[k % 2 === 0 ? 'A' : 'B']! += 1;
    });
    const stock: Record<string, number> = saleIndex === 2 ? demand : { A: 30, B: 10 };
    initialStock[saleId] = { ...stock };
    order.forEach((shopper, k) => {
      const reach = intent(shopper.persona, saleIndex);
      if (reach === 0) return;
      const session = `sess-${saleId}-${shopper.userId}`;
      const bot = shopper.persona === 'bot';
      const signals = bot ? ['too_fast', 'no_product_view'] : [];
      const offer = shopper.persona === 'bargain' && saleIndex > 0 ? `offer-bargain-${saleId}` : null;
      const sku = k % 2 === 0 ? 'A' : 'B';
      let t = start + k * 9_000 + Math.floor(random() * 3000);
      let loggedIn = false;
      const click = (type: string, extra: Partial<ClickRow> = {}) => {
        t += 1000 + Math.floor(random() * 4000);
        const userId = loggedIn ? shopper.userId : null;
        clicks.push({
          event_id: uuidv7({ msecs: t }),
          type,
          ts: t,
          sale_id: saleId,
          user_id: userId,
          anon_id: shopper.anonId,
          shopper_id: userId ?? shopper.anonId,
          session_id: session,
          sku: null,
          channel: shopper.channel,
          device: shopper.device,
          ip_hash: shopper.ipHash,
          offer_id: offer,
          bot_signals: signals,
          path: null,
          price_cents: null,
          qty: null,
          queue_position: null,
          reject_reason: null,
          ingested_at: t + 100 + ((clicks.length * 37) % 900),
          ...extra,
        });
      };
      // Bots log in first and skip the product page.
      if (bot) {
        loggedIn = true;
        click('login');
      }
      for (let step = 1; step <= Math.min(reach, 6); step++) {
        const type = STEP_TYPES[step - 1]!;
        if (bot && type === 'product_view') continue;
        if (type === 'page_view') click(type, { path: '/sale' });
        else if (type === 'product_view') click(type, { sku, price_cents: PRICES[sku]! });
        else if (type === 'add_to_cart') {
          if (!loggedIn) {
            loggedIn = true;
            click('login');
          }
          click(type, { sku, price_cents: PRICES[sku]!, qty: 1 });
        } else if (type === 'queue_joined') {
          if (shopper.persona === 'missed' && saleIndex === 2 && k % 2 === 1) {
            // Refused at the waiting room's door: sold out before they got a place.
            click('queue_refused', { reject_reason: 'sold_out', queue_position: queuePosition + 1 });
            return;
          }
          queuePosition += 1;
          click(type, { queue_position: queuePosition });
        } else if (type === 'admitted') click(type);
        else if (type === 'purchase_attempt') click(type, { sku, qty: 1 });
      }
      if (reach < 6) return;
      const qty = 1;
      if (reach === 6 || stock[sku]! < qty) {
        click('purchase_rejected', { sku, reject_reason: 'sold_out' });
        return;
      }
      stock[sku]! -= qty;
      const orderId = `${saleId}.${uuidv7({ msecs: t })}`;
      const price = offer ? Math.round(PRICES[sku]! * 0.8) : PRICES[sku]!;
      const base = {
        order_id: orderId,
        sale_id: saleId,
        user_id: shopper.userId,
        anon_id: shopper.anonId,
        shopper_id: shopper.userId,
        session_id: session,
        sku,
        channel: shopper.channel,
        device: shopper.device,
        offer_id: offer,
        bot_signals: signals,
        price_cents: price,
        qty,
        amount_cents: price * qty,
      };
      const reservedAt = t + 40;
      orders.push({
        ...base,
        event_id: uuidv7({ msecs: reservedAt }),
        type: 'order_reserved',
        status: 'reserved',
        ts: reservedAt,
        expires_at: reservedAt + PAYMENT_WINDOW_MS,
        ingested_at: reservedAt + 200,
      });
      // Every third payer pays late (after more than half the window); bots never pay.
      const pays = reach === 8;
      if (pays) {
        const late = k % 3 === 0;
        const paidAt = reservedAt + (late ? 200_000 : 20_000) + Math.floor(random() * 20_000);
        orders.push({
          ...base,
          event_id: uuidv7({ msecs: paidAt }),
          type: 'order_paid',
          status: 'paid',
          ts: paidAt,
          expires_at: null,
          ingested_at: paidAt + 150,
        });
      } else {
        // The unit comes back only when the window closes, after every later shopper here has tried.
        const expiredAt = reservedAt + PAYMENT_WINDOW_MS;
        orders.push({
          ...base,
          event_id: uuidv7({ msecs: expiredAt }),
          type: 'order_expired',
          status: 'expired',
          ts: expiredAt,
          expires_at: null,
          ingested_at: expiredAt + 150,
        });
      }
    });
  });
  return { shoppers, clicks, orders, initialStock };
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

/** Rows as the warehouse takes them (every column given, times as text). */
export function clickRowsForInsert(rows: readonly ClickRow[]): Record<string, unknown>[] {
  return rows.map((row) => ({ ...row, ts: iso(row.ts), ingested_at: iso(row.ingested_at), kafka_partition: 0, kafka_offset: 0 }));
}

export function orderRowsForInsert(rows: readonly OrderRow[]): Record<string, unknown>[] {
  return rows.map((row) => ({
    ...row,
    ts: iso(row.ts),
    expires_at: row.expires_at === null ? null : iso(row.expires_at),
    ingested_at: iso(row.ingested_at),
    kafka_partition: 0,
    kafka_offset: 0,
  }));
}
