// The offer loop end to end on the real stack, in this process: a sale core on this file's own topics and
// active-sales set, ingest into a private chdb warehouse (its own consumer group), the warehouse endpoint over
// it, and every analytics read and write through createWarehouseReader. Sale 1 is run by the shopper
// simulator while the real-time path gives shoppers refused for stock an offer for sale 2 (the time from the
// refusal event to the offer readable in Redis is measured and reported, never asserted); then the offer job
// segments sale 1 and makes offers for sale 2 by rules written here, one rule per offer kind; then shoppers
// come to sale 2 and the offers change what happens to them; the warehouse sees it, and the uplift report
// splits sale 2's offered shoppers from the hold-out.
//
// The steps share one story, so they run in order and each relies on the one before.
import { randomUUID } from 'node:crypto';
import type { Consumer, Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isHeldOut } from '../../analytics/offers/assign.js';
import { type OfferJobResult, runOfferJob } from '../../analytics/offers/job.js';
import { type RealtimeOffers, startRealtimeOffers } from '../../analytics/offers/realtime.js';
import { parseOfferRules } from '../../analytics/offers/rules.js';
import { upliftReport } from '../../analytics/offers/uplift.js';
import { runShopperJourneys } from '../../bench/shopper-simulator.js';
import { createKafka } from '../../common/kafka.js';
import { readOffer, type ShopperOffer, saleMetaKey } from '../../common/offers.js';
import { type Ingest, startIngest } from '../../ingest/index.js';
import { groupCaughtUp } from '../ingest/support/events.js';
import { ADMIN, createSale, OPEN_LIMITS, startTestSaleCore, type TestSaleCore, uniqueSaleId } from '../sale-core/support.js';
import { createTestTopic, deleteTopics } from '../support/kafka.js';
import { until } from '../support/until.js';
import { openWarehouseEndpoint, type TestWarehouseEndpoint } from './insights-warehouse.js';

const HOLDOUT = 0.2;
const FULL_PRICE = 10_000;
const OFFER_PRICE = 8_000; // 20 % off

// One rule per offer kind, in precedence order. In a window of one sale everyone is first seen in it, so the
// shoppers who are neither bots nor missed out are `new`: the buyers among them get priority (one at most,
// the budget), the rest a price offer. Missed-out shoppers get early access, in real time during sale 1.
const RULES = parseOfferRules({
  holdout_share: HOLDOUT,
  rules: [
    {
      id: 'missed-out-early',
      when: { segments: ['missed_out'], events: ['refused_for_stock', 'reservation_lapsed'] },
      offer: { kind: 'early_access', minutes: 30 },
      budget: { max_offers: 1000 },
    },
    { id: 'buyers-priority', when: { segments: ['new'], min_sales_bought: 1 }, offer: { kind: 'priority' }, budget: { max_offers: 1 } },
    {
      id: 'new-price',
      when: { segments: ['new'] },
      offer: { kind: 'price', percent_off: 20 },
      budget: { max_offers: 1000, max_discount_cents: 1_000_000 },
    },
  ],
});

const kafka: Kafka = createKafka('offer-loop-e2e');
const topics = { clickstream: '', orders: '', deadLetters: '' };
const ingestGroup = `offer-loop-wh-${randomUUID().slice(0, 8)}`;
let wh: TestWarehouseEndpoint;
let ingest: Ingest;
let core: TestSaleCore;
let realtime: RealtimeOffers | undefined;
let watcher: Consumer | undefined;

let sale1 = '';
let sale2 = '';
let sale2StartsAt = 0;
let simPaid = 0;
let job: OfferJobResult;
const runId = `loop-${randomUUID().slice(0, 8)}`;
/** Sold-out refusals in sale 1 as the clickstream carried them: shopper → first refusal's time. */
const refusals = new Map<string, number>();
/** Sale 2's offers in Redis after the job, by shopper. */
let offers = new Map<string, ShopperOffer>();

const bot = (id: string) => id.startsWith('bot-');
const lateBot = `bot-late-${randomUUID().slice(0, 8)}`;
const sql = async <T>(query: string, params: Record<string, unknown> = {}) =>
  (await (await wh.reader.query({ query, query_params: params, format: 'JSONEachRow' })).json()) as T[];

const poll = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000) => until(what, probe, timeoutMs, { everyMs: 50 });

/** The shopper API over HTTP, as a browser calls it. */
async function api(method: string, path: string, token?: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${core.url}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : null) as Record<string, unknown>, headers: res.headers };
}

/** A shopper: an anonymous session that looks at the product (a bot does not), then logs in as `userId`. */
async function arrive(userId: string, saleId = sale2, looks = true): Promise<string> {
  const anon = String((await api('POST', '/session')).json.token);
  if (looks) expect((await api('POST', `/sales/${saleId}/events`, anon, { type: 'product_view', sku: 'SKU-1' })).status).toBe(202);
  const login = await api('POST', '/session/login', anon, { user_id: userId, sale_id: saleId });
  expect(login.status).toBe(200);
  return String(login.json.token);
}

async function join(token: string) {
  const q = await api('POST', `/sales/${sale2}/queue`, token);
  expect(q.status, JSON.stringify(q.json)).toBe(200);
  return q.json as { status: 'admitted' | 'waiting'; position: number; ticket?: string; position_token?: string };
}

async function pollPlace(token: string, place: string) {
  const q = await api('GET', `/sales/${sale2}/queue`, token, undefined, { 'x-position-token': place });
  expect(q.status, JSON.stringify(q.json)).toBe(200);
  return q.json as { status: 'admitted' | 'waiting'; position: number; ticket?: string; ahead?: number };
}

async function buyAndPay(token: string, ticket: string) {
  const p = await api('POST', `/sales/${sale2}/purchase`, token, { sku: 'SKU-1', ticket }, { 'idempotency-key': randomUUID() });
  expect(p.status, JSON.stringify(p.json)).toBe(202);
  const paid = await api('POST', `/orders/${p.json.order_id}/pay`, token, {});
  expect(paid.status, JSON.stringify(paid.json)).toBe(200);
  return p.json as { order_id: string; price: number; offer_id: string | null };
}

beforeAll(async () => {
  [topics.clickstream, topics.orders, topics.deadLetters] = await Promise.all([
    createTestTopic('clickstream.v1', 3, kafka),
    createTestTopic('orders.v1', 3, kafka),
    createTestTopic('dlq.v1', 1, kafka),
  ]);
  wh = await openWarehouseEndpoint('offer-loop');
  ingest = await startIngest({
    warehouse: wh.warehouse,
    kafka,
    topics,
    groupIds: { warehouse: ingestGroup },
    sinks: ['warehouse'],
    migrate: false,
    limits: { lingerMs: 50, maxRows: 500 },
  });
  core = await startTestSaleCore({
    topics: { clickstream: topics.clickstream, orders: topics.orders },
    settings: { ...OPEN_LIMITS },
  });
  // Sale 2 first, starting later: while sale 1 runs it is the next scheduled sale, the one the real-time
  // path makes offers for. One unit per shopper, 100.00; admission of one shopper at the start, then two a
  // second, so a queue forms.
  sale2 = await createSale(core, {
    id: uniqueSaleId('loop-next'),
    startsInMs: 20 * 60_000,
    stock: 40,
    limit: 1,
    price: FULL_PRICE,
    admissionRate: 2,
    admissionBurst: 1,
  });
  sale2StartsAt = Number(await core.context.redis.hget(saleMetaKey(sale2), 'starts_at'));
}, 120_000);

afterAll(async () => {
  await realtime?.stop();
  await watcher?.disconnect();
  await ingest?.close();
  await core?.close();
  await wh?.close();
  await deleteTopics(Object.values(topics).filter(Boolean), kafka).catch(() => undefined);
});

describe('the offer loop on the real stack', () => {
  it('sale 1 runs with the simulator; shoppers refused for stock get an offer for sale 2 within seconds', async ({ annotate }) => {
    realtime = await startRealtimeOffers({
      reader: wh.reader,
      redis: core.context.redis,
      kafka,
      rules: RULES,
      groupId: `offer-loop-rt-${randomUUID().slice(0, 8)}`,
      topics: { clickstream: topics.clickstream, orders: topics.orders },
      fromBeginning: true,
      activeSalesKey: core.activeSalesKey,
    });
    // The refusals, read off the clickstream by a consumer of the test's own.
    watcher = kafka.consumer({ groupId: `offer-loop-watch-${randomUUID().slice(0, 8)}`, maxWaitTimeInMs: 50 });
    await watcher.connect();
    await watcher.subscribe({ topic: topics.clickstream, fromBeginning: true });
    await watcher.run({
      eachMessage: async ({ message }) => {
        const e = JSON.parse(String(message.value)) as Record<string, unknown>;
        const refused = (e.type === 'purchase_rejected' || e.type === 'queue_refused') && e.reason === 'sold_out';
        if (refused && typeof e.user_id === 'string' && !refusals.has(e.user_id)) refusals.set(e.user_id, Number(e.ts));
      },
    });

    // While the simulator runs, a probe looks for each refused shopper's offer every few ms. Bots and the
    // real-time run's hold-out get none.
    const expectOffer = (userId: string) => !bot(userId) && !isHeldOut(`rt-${sale2}`, userId, HOLDOUT);
    const seenAfter = new Map<string, number>();
    let simulating = true;
    let probeDeadline = Number.POSITIVE_INFINITY;
    const probing = (async () => {
      while (simulating || [...refusals.keys()].some((u) => expectOffer(u) && !seenAfter.has(u))) {
        for (const [userId, ts] of refusals) {
          if (seenAfter.has(userId) || !expectOffer(userId)) continue;
          if (await readOffer(core.context.redis, sale2, userId)) seenAfter.set(userId, Date.now() - ts);
        }
        await new Promise((r) => setTimeout(r, 20));
        if (!simulating && Date.now() > probeDeadline) break;
      }
    })();

    const sim = await runShopperJourneys({
      url: core.url,
      adminToken: ADMIN,
      shoppers: 60,
      stock: 24,
      botShare: 0.1,
      latePayShare: 0,
      neverPayShare: 0,
      arrivalSpreadMs: 2000,
      paymentWindowMinutes: 1,
      admissionRate: 40,
    });
    sale1 = sim.saleId;
    core.sales.add(sale1);
    simPaid = (sim.outcomes.paid ?? 0) + (sim.outcomes.paid_late_reacquired ?? 0);
    // Sale 1 is sold out and still running. Two more come late and are turned away at the waiting room: a
    // shopper who looked at the product, and a bot that did not (the simulator's bots may all have bought,
    // and sale-core flags only the attempts that reserved, so this one arrives unflagged).
    const lateShopper = Array.from({ length: 50 }, (_, i) => `shopper-late-${runId}-${i}`).find(expectOffer)!;
    for (const [userId, looks] of [
      [lateBot, false],
      [lateShopper, true],
    ] as const) {
      const refused = await api('POST', `/sales/${sale1}/queue`, await arrive(userId, sale1, looks));
      expect(refused.status, JSON.stringify(refused.json)).toBe(409);
    }
    await poll('the late refusals on the clickstream', async () => (refusals.has(lateBot) && refusals.has(lateShopper) ? true : undefined));
    probeDeadline = Date.now() + 15_000;
    simulating = false;
    await probing;

    // The simulator sold the stock and turned shoppers away.
    expect(simPaid).toBeGreaterThan(0);
    const refusedHumans = [...refusals.keys()].filter((u) => !bot(u));
    const refusedBots = [...refusals.keys()].filter(bot);
    expect(refusedBots).toContain(lateBot);
    expect(refusedHumans.length).toBeGreaterThan(5);
    const expected = refusedHumans.filter(expectOffer);
    expect(expected.length).toBeGreaterThan(0);
    expect(expected.filter((u) => !seenAfter.has(u))).toEqual([]);
    for (const userId of expected) {
      expect(await readOffer(core.context.redis, sale2, userId)).toMatchObject({ kind: 'early_access', early_access_ms: 30 * 60_000 });
    }
    // Held out, or a bot: nothing.
    for (const userId of refusedHumans.filter((u) => !expectOffer(u)))
      expect(await readOffer(core.context.redis, sale2, userId)).toBeNull();
    for (const userId of refusedBots) expect(await readOffer(core.context.redis, sale2, userId)).toBeNull();

    const sorted = [...seenAfter.values()].sort((a, b) => a - b);
    const p95 = sorted[Math.ceil(0.95 * sorted.length) - 1]!;
    const own = realtime.latencies().sort((a, b) => a - b);
    await annotate(
      `real-time offers in sale 1 (${sim.seconds.toFixed(1)} s, ${JSON.stringify(sim.outcomes)}): ${refusedHumans.length} shoppers ` +
        `and ${refusedBots.length} bots refused for stock; ${expected.length} offers; refusal → offer readable p95 ${p95} ms ` +
        `(max ${sorted.at(-1)} ms) as the test saw it, ${own[Math.ceil(0.95 * own.length) - 1]} ms as the consumer measured it ` +
        '(target p95 < 5000 ms)',
    );
  }, 150_000);

  it('the offer job segments sale 1 and gives each offer kind for sale 2, never to a bot, within the budgets', async () => {
    // Everything sale 1 produced is in the warehouse: the simulator's paid orders, and all the topics hold.
    await poll('sale 1 in the warehouse', async () => {
      const [row] = await sql<{ paid: string }>(
        "SELECT toString(count()) AS paid FROM order_facts FINAL WHERE sale_id = {sale:String} AND status = 'paid'",
        { sale: sale1 },
      );
      return Number(row?.paid) === simPaid && (await groupCaughtUp(kafka, ingestGroup, [topics.clickstream, topics.orders]))
        ? true
        : undefined;
    });
    job = await runOfferJob({ reader: wh.reader, redis: core.context.redis, runId, fromSales: [sale1], forSale: sale2, rules: RULES });
    expect(job.alreadyDone).toBe(false);
    expect(job.shoppers).toBeGreaterThan(0);

    // Bots are segmented as bots: every simulated bot that logged in.
    const segments = await sql<{ shopper_id: string; segment: string }>(
      'SELECT shopper_id, segment FROM shopper_segments FINAL WHERE run_id = {run:String} ORDER BY shopper_id',
      { run: runId },
    );
    const botRows = segments.filter((s) => bot(s.shopper_id));
    expect(botRows.map((s) => s.shopper_id)).toContain(lateBot);
    expect(botRows.filter((s) => s.segment !== 'bots')).toEqual([]);
    expect(segments.filter((s) => !bot(s.shopper_id) && s.segment === 'bots')).toEqual([]);

    // Every decision for sale 2 (real time and batch): one per shopper, none for a bot, budgets held.
    const decisions = await sql<{ shopper_id: string; rule_id: string; holdout: boolean; kind: string; source: string }>(
      'SELECT shopper_id, rule_id, holdout, kind, source FROM offers FINAL WHERE sale_id = {sale:String}',
      { sale: sale2 },
    );
    expect(decisions.filter((d) => bot(d.shopper_id))).toEqual([]);
    expect(new Set(decisions.map((d) => d.shopper_id)).size).toBe(decisions.length);
    expect(decisions.filter((d) => d.rule_id === 'buyers-priority' && !d.holdout)).toHaveLength(1);

    offers = new Map();
    for (const userId of new Set(segments.map((s) => s.shopper_id))) {
      const offer = await readOffer(core.context.redis, sale2, userId);
      if (offer) offers.set(userId, offer);
    }
    const kinds = new Set([...offers.values()].map((o) => o.kind));
    expect([...kinds].sort()).toEqual(['early_access', 'price', 'priority']);
    expect([...offers.keys()].filter(bot)).toEqual([]);
    // Redis holds exactly the offers the warehouse records, hold-outs hold none.
    expect([...offers.keys()].sort()).toEqual(
      decisions
        .filter((d) => !d.holdout)
        .map((d) => d.shopper_id)
        .sort(),
    );
    expect([...offers.values()].find((o) => o.kind === 'price')).toMatchObject({ sku: 'SKU-1', price: OFFER_PRICE });

    // A rerun of the same run writes nothing twice.
    const again = await runOfferJob({
      reader: wh.reader,
      redis: core.context.redis,
      runId,
      fromSales: [sale1],
      forSale: sale2,
      rules: RULES,
    });
    expect(again.alreadyDone).toBe(true);
    expect(await sql('SELECT shopper_id FROM offers FINAL WHERE sale_id = {sale:String}', { sale: sale2 })).toHaveLength(decisions.length);
  }, 120_000);

  it('sale 2 applies them: early access admits before the start, priority skips the queue, a price offer changes the price', async () => {
    const holder = (kind: ShopperOffer['kind']) => [...offers.entries()].find(([, o]) => o.kind === kind)!;
    const [early, earlyOffer] = holder('early_access');
    const [priority, priorityOffer] = holder('priority');
    const [bargain, priceOffer] = holder('price');

    // Before the start: the early-access shopper is admitted and buys at the full price; a shopper without an
    // offer waits, as does the price-offer shopper.
    expect(Date.now()).toBeLessThan(sale2StartsAt);
    const earlyToken = await arrive(early);
    const earlyPlace = await join(earlyToken);
    expect(earlyPlace.status).toBe('admitted');
    const earlyOrder = await buyAndPay(earlyToken, earlyPlace.ticket!);
    expect(earlyOrder).toMatchObject({ price: FULL_PRICE, offer_id: earlyOffer.offer_id });

    const bargainToken = await arrive(bargain);
    const catalog = await api('GET', `/sales/${sale2}/catalog`, bargainToken);
    expect(catalog.json.offer).toMatchObject({ offer_id: priceOffer.offer_id, kind: 'price' });
    const bargainPlace = await join(bargainToken);
    expect(bargainPlace.status).toBe('waiting');
    const walkIns = await Promise.all(Array.from({ length: 12 }, (_, i) => arrive(`walk-in-${runId}-${i}`)));
    const walkInPlaces: Awaited<ReturnType<typeof join>>[] = [];
    for (const token of walkIns) walkInPlaces.push(await join(token));
    expect(walkInPlaces.every((p) => p.status === 'waiting')).toBe(true);

    // The sale opens. Rather than wait twenty minutes, the test brings its start forward (as sale-core's own
    // tests shorten a payment window): the waiting room and the purchase read the start from the sale's meta.
    await core.context.redis.hset(saleMetaKey(sale2), 'starts_at', Date.now());

    // The priority shopper comes last and is admitted at once, while the walk-ins before them still wait.
    const priorityToken = await arrive(priority);
    const priorityPlace = await poll('the sale to open for the priority shopper', async () => {
      const place = await join(priorityToken);
      return place.status === 'admitted' ? place : undefined;
    });
    const lastWalkIn = await pollPlace(walkIns.at(-1)!, walkInPlaces.at(-1)!.position_token!);
    expect(lastWalkIn.status).toBe('waiting');
    expect(priorityPlace.position).toBeGreaterThan(lastWalkIn.position);
    const priorityOrder = await buyAndPay(priorityToken, priorityPlace.ticket!);
    expect(priorityOrder).toMatchObject({ price: FULL_PRICE, offer_id: priorityOffer.offer_id });

    // The price-offer shopper, first in the queue, is admitted at the start and pays the offer's price; the
    // walk-in behind them pays the full price.
    const bargainTicket = await poll('the price-offer shopper to be admitted', async () => {
      const place = await pollPlace(bargainToken, bargainPlace.position_token!);
      return place.status === 'admitted' ? place.ticket : undefined;
    });
    const bargainOrder = await buyAndPay(bargainToken, bargainTicket!);
    expect(bargainOrder).toMatchObject({ price: OFFER_PRICE, offer_id: priceOffer.offer_id });
    const walkInTicket = await poll('the first walk-in to be admitted', async () => {
      const place = await pollPlace(walkIns[0]!, walkInPlaces[0]!.position_token!);
      return place.status === 'admitted' ? place.ticket : undefined;
    });
    expect(await buyAndPay(walkIns[0]!, walkInTicket!)).toMatchObject({ price: FULL_PRICE, offer_id: null });
  }, 120_000);

  it('the warehouse sees the offers on the events, and the uplift report splits offered from hold-out', async ({ annotate }) => {
    const shoppers = ['early_access', 'priority', 'price'].map((kind) => [...offers.entries()].find(([, o]) => o.kind === kind)!);
    await poll('ingest to catch up with sale 2', async () => {
      const [row] = await sql<{ paid: string }>(
        "SELECT toString(count()) AS paid FROM order_facts FINAL WHERE sale_id = {sale:String} AND status = 'paid'",
        { sale: sale2 },
      );
      return Number(row?.paid) === 4 ? true : undefined;
    });
    await poll('the clickstream of sale 2', async () => {
      const [row] = await sql<{ n: string }>(
        "SELECT toString(count()) AS n FROM clickstream_events WHERE sale_id = {sale:String} AND type = 'purchase_attempt'",
        { sale: sale2 },
      );
      return Number(row?.n) === 4 && (await groupCaughtUp(kafka, ingestGroup, [topics.clickstream, topics.orders])) ? true : undefined;
    });
    for (const [userId, offer] of shoppers) {
      const types = await sql<{ type: string }>(
        `SELECT DISTINCT type FROM clickstream_events
         WHERE sale_id = {sale:String} AND shopper_id = {user:String} AND offer_id = {offer:String} ORDER BY type`,
        { sale: sale2, user: userId, offer: offer.offer_id },
      );
      expect(
        types.map((t) => t.type),
        userId,
      ).toEqual(expect.arrayContaining(['admitted', 'purchase_attempt', 'queue_joined']));
      const orders = await sql<{ status: string; price_cents: number; offer_id: string }>(
        `SELECT status, toFloat64(price_cents) AS price_cents, offer_id FROM order_facts FINAL
         WHERE sale_id = {sale:String} AND shopper_id = {user:String} ORDER BY status`,
        { sale: sale2, user: userId },
      );
      const price = offer.kind === 'price' ? OFFER_PRICE : FULL_PRICE;
      expect(orders).toEqual([
        { status: 'paid', price_cents: price, offer_id: offer.offer_id },
        { status: 'reserved', price_cents: price, offer_id: offer.offer_id },
      ]);
    }
    // The shown offer: the price-offer shopper's catalog page view carried it.
    const [bargain, priceOffer] = shoppers[2]!;
    expect(
      await sql(
        `SELECT event_id FROM clickstream_events
         WHERE sale_id = {sale:String} AND shopper_id = {user:String} AND type = 'page_view' AND offer_id = {offer:String}`,
        { sale: sale2, user: bargain, offer: priceOffer.offer_id },
      ),
    ).toHaveLength(1);

    // Uplift: per rule, offered vs hold-out with the sample sizes the decisions have, and one redemption each.
    const decisions = await sql<{ rule_id: string; holdout: boolean }>(
      'SELECT rule_id, holdout FROM offers FINAL WHERE sale_id = {sale:String}',
      { sale: sale2 },
    );
    const report = await upliftReport(wh.reader, { saleId: sale2 });
    const rules = [...new Set(decisions.map((d) => d.rule_id))].sort();
    expect(report.map((r) => r.rule_id)).toEqual(rules);
    for (const r of report) {
      const mine = decisions.filter((d) => d.rule_id === r.rule_id);
      expect(r.offered, r.rule_id).toBe(mine.filter((d) => !d.holdout).length);
      expect(r.holdout, r.rule_id).toBe(mine.filter((d) => d.holdout).length);
      // Only the three shoppers the test sent bought, one per rule, each with their offer.
      expect(r.redeemed, r.rule_id).toBe(1);
      expect(r.shown, r.rule_id).toBe(1);
      expect(r.offered_conversion, r.rule_id).toBeCloseTo(1 / r.offered, 10);
      expect(r.holdout_conversion, r.rule_id).toBe(0);
      // Sale 2 is tiny: the report says so rather than claim an effect.
      expect(r.warning, r.rule_id).toMatch(/Too few shoppers/);
    }
    await annotate(
      `uplift for sale 2: ${report
        .map((r) => `${r.rule_id} ${r.offered} offered (${r.redeemed} redeemed) vs ${r.holdout} held out`)
        .join('; ')}`,
    );
  }, 120_000);
});
