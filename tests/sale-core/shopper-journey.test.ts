// The shopper's journey end to end against the real Redis and Kafka: catalog and stock, session and
// login, waiting room and tickets, purchase, payment window and expiry, offers, rate limits, and the
// clickstream with its bot signals.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLICKSTREAM_TYPES } from '../../common/events.js';
import { RETURN_SPREAD_MIN_MS } from '../../sale-core/errors.js';
import { saleKeys } from '../../sale-core/keys.js';
import { writeOffer } from '../../sale-core/offers.js';
import { readStockLedger } from '../../sale-core/sales.js';
import {
  ADMIN,
  createSale,
  OPEN_LIMITS,
  purchase,
  readTopic,
  type Shopper,
  shopper,
  sleep,
  startTestSaleCore,
  type TestSaleCore,
  until,
} from './support.js';

let core: TestSaleCore;
beforeAll(async () => {
  core = await startTestSaleCore({ settings: OPEN_LIMITS });
});
afterAll(async () => {
  await core?.close();
});

const auth = (who: Shopper) => ({ authorization: `Bearer ${who.token}` });
const pay = (who: Shopper, orderId: string, outcome?: 'approve' | 'decline') =>
  core.app.inject({ method: 'POST', url: `/orders/${orderId}/pay`, headers: auth(who), payload: outcome ? { outcome } : {} });
const queue = (saleId: string, who: Shopper) => core.app.inject({ method: 'POST', url: `/sales/${saleId}/queue`, headers: auth(who) });

describe('catalog and stock', () => {
  it('serves the catalog from a snapshot with an ETag, and live stock separately', async () => {
    const saleId = await createSale(core, { stock: 3, price: 1999 });
    const first = await core.app.inject({ method: 'GET', url: `/sales/${saleId}/catalog` });
    expect(first.statusCode).toBe(200);
    expect(first.headers['cache-control']).toContain('public');
    expect(first.json().products[0]).toMatchObject({ sku: 'SKU-1', price: 1999, limit_per_shopper: 1 });
    const etag = String(first.headers.etag);
    const again = await core.app.inject({ method: 'GET', url: `/sales/${saleId}/catalog`, headers: { 'if-none-match': etag } });
    expect(again.statusCode).toBe(304);
    // No body, and no length of one (a client reading a 304 with a content-length waits for bytes that never come).
    expect([again.body, again.headers['content-length'] ?? '0']).toEqual(['', '0']);
    // Served from memory: the catalog keeps answering when its Redis key is gone.
    await core.context.redis.del(saleKeys(saleId).catalog);
    expect((await core.app.inject({ method: 'GET', url: `/sales/${saleId}/catalog` })).statusCode).toBe(200);
    const stock = await core.app.inject({ method: 'GET', url: `/sales/${saleId}/stock` });
    expect(stock.json()).toMatchObject({ status: 'live', available: { 'SKU-1': 3 } });
    expect(stock.headers['cache-control']).toBe('public, max-age=1');
    const openapi = (await core.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(Object.keys(openapi.paths)).toContain('/sales/{saleId}/purchase');
  });
});

describe('waiting room', () => {
  it('admits at the admission rate, gives positions to the rest, and tells late arrivals "probably sold out" when those ahead cover the stock', async () => {
    // One admission every 2 s after a burst of one: slow enough that a loaded machine cannot blur the steps.
    const saleId = await createSale(core, { stock: 2, admissionRate: 0.5, admissionBurst: 1, startsInMs: -10 });
    const [s1, s2, s3, s4] = ['q1', 'q2', 'q3', 'q4'].map((u) => shopper(`${saleId}-${u}`)) as [Shopper, Shopper, Shopper, Shopper];
    const a1 = (await queue(saleId, s1)).json();
    expect(a1).toMatchObject({ status: 'admitted', position: 1 });
    const a2 = (await queue(saleId, s2)).json();
    expect(a2).toMatchObject({ status: 'waiting', position: 2, ahead: 0 });
    expect(a2.retry_after_ms).toBeGreaterThan(0);
    expect((await queue(saleId, s3)).json()).toMatchObject({ status: 'waiting', position: 3, ahead: 1 });
    const late = await queue(saleId, s4);
    expect(late.statusCode).toBe(409);
    expect(late.json().error.code).toBe('SALE_SOLD_OUT');
    // Not final: those ahead may never buy, so the place is kept and Retry-After says when it comes up.
    expect(Number(late.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(late.json().error.message).toMatch(/place is kept/);
    // Polling keeps the place; time admits the next shopper.
    const poll = await core.app.inject({
      method: 'GET',
      url: `/sales/${saleId}/queue`,
      headers: { ...auth(s2), 'x-position-token': a2.position_token },
    });
    expect(poll.json().position).toBe(2);
    const a2later = await until(
      async () => (await queue(saleId, s2)).json(),
      (answer) => answer.status === 'admitted',
    );
    expect(a2later.status).toBe('admitted');
    // The ticket from the queue buys.
    const bought = await purchase(core, saleId, s1, { ticket: a1.ticket });
    expect(bought.statusCode).toBe(202);
  });

  it('rate-limits a shopper with 429 and Retry-After', async () => {
    const limited = await startTestSaleCore({ settings: { ...OPEN_LIMITS, shopperRatePerSecond: 1, shopperBurst: 2 } });
    try {
      const saleId = await createSale(limited, {});
      const who = shopper(`${saleId}-hasty`);
      const answers = [];
      for (let i = 0; i < 4; i++)
        answers.push(await limited.app.inject({ method: 'POST', url: `/sales/${saleId}/queue`, headers: auth(who) }));
      const last = answers.at(-1)!;
      expect(last.statusCode).toBe(429);
      expect(last.json().error.code).toBe('RATE_LIMITED');
      expect(Number(last.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    } finally {
      await limited.close();
    }
  });

  it("rate-limits a shopper's purchases in the process, before the ticket or Redis is touched", async () => {
    const limited = await startTestSaleCore({ settings: { ...OPEN_LIMITS, shopperRatePerSecond: 1, shopperBurst: 2 } });
    try {
      const saleId = await createSale(limited, { stock: 10, limit: 5 });
      const who = shopper(`${saleId}-hasty`);
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await purchase(limited, saleId, who)).statusCode);
      expect(statuses).toEqual([202, 202, 429]);
      // A flood of made-up tickets is turned away by the same budget, not by a Redis read per request.
      const forged = await purchase(limited, saleId, who, { ticket: 'not-a-ticket.at-all' });
      expect(forged.statusCode).toBe(429);
      expect(forged.json().error.code).toBe('RATE_LIMITED');
      expect(Number(forged.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect((await readStockLedger(limited.context.redis, saleId)).available['SKU-1']).toBe(8);
      // Another shopper has a budget of their own.
      expect((await purchase(limited, saleId, shopper(`${saleId}-calm`))).statusCode).toBe(202);
    } finally {
      await limited.close();
    }
  });
});

describe('payment window', () => {
  it('pays within the window (idempotently) and shows the order', async () => {
    const saleId = await createSale(core, { stock: 2 });
    const who = shopper(`${saleId}-payer`);
    const order = (await purchase(core, saleId, who)).json();
    expect((await pay(who, order.order_id, 'decline')).statusCode).toBe(402);
    const paid = await pay(who, order.order_id);
    expect(paid.json()).toMatchObject({ status: 'paid', already_paid: false });
    expect((await pay(who, order.order_id)).json()).toMatchObject({ status: 'paid', already_paid: true });
    const shown = await core.app.inject({ method: 'GET', url: `/orders/${order.order_id}`, headers: auth(who) });
    expect(shown.json()).toMatchObject({ status: 'paid', sku: 'SKU-1', qty: 1, price: 4999 });
    const stranger = shopper('stranger');
    expect((await core.app.inject({ method: 'GET', url: `/orders/${order.order_id}`, headers: auth(stranger) })).statusCode).toBe(404);
    expect((await pay(stranger, order.order_id)).statusCode).toBe(404);
    expect((await readStockLedger(core.context.redis, saleId)).sold['SKU-1']).toBe(1);
  });

  it('expires unpaid reservations once, takes a unit back for a late payment when one is free, and refuses it when none is', async () => {
    const saleId = await createSale(core, { stock: 1, windowMinutes: 0.01 }); // 600 ms
    const [early, second] = [shopper(`${saleId}-a`), shopper(`${saleId}-b`)];
    const first = (await purchase(core, saleId, early)).json();
    // Sold out for now: the unit is held by an unpaid order, so the answer says when it may come back.
    const soldOut = await purchase(core, saleId, second);
    // Retry-After: from then, spread over RETURN_SPREAD_MIN_MS (errors.ts soldOut).
    const comeBack = (res: { headers: Record<string, unknown> }) => Number(res.headers['retry-after']);
    const latest = Math.ceil((600 + RETURN_SPREAD_MIN_MS) / 1000);
    expect(soldOut.json().error.code).toBe('SALE_SOLD_OUT');
    expect(comeBack(soldOut)).toBeGreaterThanOrEqual(1);
    expect(comeBack(soldOut)).toBeLessThanOrEqual(latest);
    expect(soldOut.json().error.message).toMatch(/not paid yet.*about 1 s/);
    const queued = await queue(saleId, shopper(`${saleId}-c`));
    expect(queued.json().error.code).toBe('SALE_SOLD_OUT');
    expect(comeBack(queued)).toBeGreaterThanOrEqual(1);
    expect(comeBack(queued)).toBeLessThanOrEqual(latest);
    // The window closes; the sweeper returns the unit.
    let ledger = await until(
      () => readStockLedger(core.context.redis, saleId),
      (l) => l.available['SKU-1'] === 1,
    );
    expect(ledger).toMatchObject({ available: { 'SKU-1': 1 }, reserved: { 'SKU-1': 0 } });
    const shown = await core.app.inject({ method: 'GET', url: `/orders/${first.order_id}`, headers: auth(early) });
    expect(shown.json().status).toBe('expired');
    // Late payment while the unit is free: taken back atomically.
    const late = await pay(early, first.order_id);
    expect(late.json()).toMatchObject({ status: 'paid', late_reacquired: true });
    ledger = await readStockLedger(core.context.redis, saleId);
    expect(ledger).toMatchObject({ available: { 'SKU-1': 0 }, reserved: { 'SKU-1': 0 }, sold: { 'SKU-1': 1 } });

    // Second sale: the unit goes to another shopper before the late payment arrives → refused.
    const saleB = await createSale(core, { stock: 1, windowMinutes: 0.01 });
    const [slow, quick] = [shopper(`${saleB}-slow`), shopper(`${saleB}-quick`)];
    const slowOrder = (await purchase(core, saleB, slow)).json();
    await until(
      () => readStockLedger(core.context.redis, saleB),
      (l) => l.available['SKU-1'] === 1,
    );
    const quickOrder = await purchase(core, saleB, quick);
    expect(quickOrder.statusCode).toBe(202);
    const refused = await pay(slow, slowOrder.order_id);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.code).toBe('ORDER_EXPIRED');
    expect(refused.json().error.message).toMatch(/went to another shopper/);
    ledger = await readStockLedger(core.context.redis, saleB);
    expect(ledger).toMatchObject({ available: { 'SKU-1': 0 }, reserved: { 'SKU-1': 1 }, sold: { 'SKU-1': 0 } });

    expect(await core.context.relay.drained(10_000)).toBe(true);
    const events = (await readTopic(core.topics.orders, { expected: 1 })).map((e) => e.value);
    const of = (orderId: string) => events.filter((e) => e.order_id === orderId).map((e) => e.type);
    expect(of(first.order_id)).toEqual(['order_reserved', 'order_expired', 'order_paid']);
    expect(of(slowOrder.order_id)).toEqual(['order_reserved', 'order_expired']);
  });
});

describe('offers and clickstream', () => {
  it('applies a price offer to catalog and purchase, and events carry the offer id', async () => {
    const saleId = await createSale(core, { stock: 5, price: 5000 });
    const who = shopper(`${saleId}-loyal`);
    await writeOffer(core.context.redis, saleId, who.userId, {
      offer_id: 'offer-42',
      kind: 'price',
      sku: 'SKU-1',
      price: 3500,
      early_access_ms: null,
    });
    const catalog = await core.app.inject({ method: 'GET', url: `/sales/${saleId}/catalog`, headers: auth(who) });
    expect(catalog.headers['cache-control']).toBe('private, no-store');
    expect(catalog.json().products[0]).toMatchObject({ price: 3500, list_price: 5000 });
    expect(catalog.json().offer.offer_id).toBe('offer-42');
    const order = (await purchase(core, saleId, who)).json();
    expect(order).toMatchObject({ price: 3500, offer_id: 'offer-42' });
    expect(await core.context.relay.drained(10_000)).toBe(true);
    const events = (await readTopic(core.topics.orders, { expected: 1 })).map((e) => e.value);
    expect(events.find((e) => e.order_id === order.order_id)).toMatchObject({ offer_id: 'offer-42', price: 3500 });
  });

  it('early access lets an offer holder buy before the start; priority skips the queue', async () => {
    const saleId = await createSale(core, { stock: 5, startsInMs: 60_000, admissionRate: 0.05, admissionBurst: 0 });
    const [vip, regular] = [shopper(`${saleId}-vip`), shopper(`${saleId}-regular`)];
    await writeOffer(core.context.redis, saleId, vip.userId, {
      offer_id: 'early-1',
      kind: 'early_access',
      sku: null,
      price: null,
      early_access_ms: 120_000,
    });
    expect((await purchase(core, saleId, regular)).json().error.code).toBe('SALE_NOT_LIVE');
    expect((await queue(saleId, regular)).json()).toMatchObject({ status: 'waiting' });
    expect((await queue(saleId, vip)).json()).toMatchObject({ status: 'admitted' });
    expect((await purchase(core, saleId, vip)).json()).toMatchObject({ status: 'reserved', offer_id: 'early-1' });

    const live = await createSale(core, { stock: 5, admissionRate: 0.05, admissionBurst: 0, startsInMs: -10 });
    const [first, prio] = [shopper(`${live}-first`), shopper(`${live}-prio`)];
    await writeOffer(core.context.redis, live, prio.userId, {
      offer_id: 'prio-1',
      kind: 'priority',
      sku: null,
      price: null,
      early_access_ms: null,
    });
    expect((await queue(live, first)).json().status).toBe('waiting');
    expect((await queue(live, prio)).json().status).toBe('admitted');
  });

  it('sends browsing, login, queue and purchase events (with rejection reasons and bot signals) to the clickstream', async () => {
    const saleId = await createSale(core, { stock: 1 });
    const anon = (await core.app.inject({ method: 'POST', url: '/session' })).json();
    const send = (token: string, payload: object) =>
      core.app.inject({ method: 'POST', url: `/sales/${saleId}/events`, headers: { authorization: `Bearer ${token}` }, payload });
    expect((await send(anon.token, { type: 'page_view', path: '/sale' })).statusCode).toBe(202);
    expect((await send(anon.token, { type: 'product_view', sku: 'SKU-1' })).statusCode).toBe(202);
    expect((await send(anon.token, { type: 'add_to_cart', sku: 'SKU-1', qty: 1 })).statusCode).toBe(202);
    expect((await send(anon.token, { type: 'product_view', sku: 'NOPE' })).statusCode).toBe(404);
    const login = await core.app.inject({
      method: 'POST',
      url: '/session/login',
      headers: { authorization: `Bearer ${anon.token}` },
      payload: { user_id: `${saleId}-human`, sale_id: saleId },
    });
    const human: Shopper = {
      userId: `${saleId}-human`,
      token: login.json().token,
      sessionId: anon.session_id,
      expiresAt: login.json().expires_at,
    };
    expect(login.json().anon_id).toBe(anon.anon_id);
    // The "viewed" mark is written in the background.
    await until(
      () => core.context.redis.sismember(saleKeys(saleId).viewed, anon.session_id),
      (viewed) => viewed === 1,
    );
    const ticket = (await queue(saleId, human)).json().ticket;
    await sleep(150); // a person takes a moment between admission and purchase
    expect((await purchase(core, saleId, human, { ticket })).statusCode).toBe(202);
    const bot = shopper(`${saleId}-bot`);
    expect((await purchase(core, saleId, bot)).json().error.code).toBe('SALE_SOLD_OUT');
    expect((await purchase(core, saleId, bot)).json().error.code).toBe('SALE_SOLD_OUT');
    expect((await queue(saleId, bot)).json().error.code).toBe('SALE_SOLD_OUT'); // queue_refused

    const events = (await readTopic(core.topics.clickstream, { expected: 10 })).map((e) => e.value).filter((e) => e.sale_id === saleId);
    const types = events.map((e) => e.type);
    for (const t of CLICKSTREAM_TYPES) expect(types).toContain(t);
    expect(events.filter((e) => e.type !== 'login' && e.anon_id === anon.anon_id).length).toBeGreaterThanOrEqual(6); // stitched by anon id
    const rejections = events.filter((e) => e.type === 'purchase_rejected' && e.user_id === bot.userId);
    expect(rejections.map((e) => e.reason)).toEqual(['sold_out', 'sold_out']);
    expect(events.every((e) => typeof e.ip_hash === 'string' && !String(e.ip_hash).includes('.'))).toBe(true);

    expect(await core.context.relay.drained(10_000)).toBe(true);
    const orders = (await readTopic(core.topics.orders, { expected: 1 })).map((e) => e.value).filter((e) => e.sale_id === saleId);
    expect(orders[0]?.bot_signals).toBeUndefined(); // viewed first, human pace
  });

  it('records bot signals on an order bought without a prior view at an inhuman rate', async () => {
    const saleId = await createSale(core, { stock: 5, limit: 5 });
    const bot = shopper(`${saleId}-bot`);
    await purchase(core, saleId, bot);
    const second = (await purchase(core, saleId, bot)).json();
    expect(await core.context.relay.drained(10_000)).toBe(true);
    const orders = (await readTopic(core.topics.orders, { expected: 1 })).map((e) => e.value);
    expect(orders.find((e) => e.order_id === second.order_id)?.bot_signals).toEqual(['no_prior_view', 'inhuman_rate']);
  });

  it('ends a sale early', async () => {
    const saleId = await createSale(core, { stock: 5 });
    const end = await core.app.inject({ method: 'POST', url: `/admin/sales/${saleId}/end`, headers: { authorization: `Bearer ${ADMIN}` } });
    expect(end.statusCode).toBe(200);
    expect((await purchase(core, saleId, shopper(`${saleId}-x`))).json().error.code).toBe('SALE_NOT_LIVE');
    const admin = await core.app.inject({ method: 'GET', url: `/admin/sales/${saleId}`, headers: { authorization: `Bearer ${ADMIN}` } });
    expect(admin.json()).toMatchObject({ status: 'ended', ledger: { available: { 'SKU-1': 5 } } });
    // Ended with nothing pending: the sweeper retires it from the set the relay and the sweeper visit.
    const member = await until(
      () => core.context.redis.sismember(core.activeSalesKey, saleId),
      (m) => m === 0,
    );
    expect(member).toBe(0);
  });
});
