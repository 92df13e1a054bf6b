// Each branch of the sale's Lua scripts (sale-core/scripts.ts), called through their typed wrappers
// against the real Redis. The sale-core here runs no sweeper and no relay, so a closed payment window
// stays unswept until a test says otherwise, and every order event stays in the sale's outbox to be read.
// Waits are on Redis's clock (the scripts' clock), by polling.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShopperContext } from '../../sale-core/context.js';
import { saleKeys } from '../../sale-core/keys.js';
import { expireReservations, payOrder, takeShopperTokens } from '../../sale-core/payment.js';
import { reserveUnit } from '../../sale-core/purchase.js';
import { readStockLedger } from '../../sale-core/sales.js';
import type { BucketLimits } from '../../sale-core/scripts.js';
import { joinQueueScript, saleStateScript } from '../../sale-core/scripts.js';
import { decideAdmission, SaleViews } from '../../sale-core/waiting-room.js';
import { ADMIN, createSale, OPEN_LIMITS, sleep, startTestSaleCore, type TestSaleCore, until } from './support.js';

let core: TestSaleCore;

beforeAll(async () => {
  core = await startTestSaleCore({ settings: OPEN_LIMITS, background: false });
});
afterAll(async () => {
  await core?.close();
});

const redisNow = async () => {
  const [seconds, micros] = await core.context.redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
};
/** Polls Redis's clock until it reads at least `ms`. */
const untilRedisTime = (ms: number) => until(redisNow, (now) => now >= ms, 10_000);

const shopperOf = (userId: string): ShopperContext => ({
  session: { sessionId: `session-${userId}`, anonId: `anon-${userId}`, userId, expiresAt: Date.now() + 3_600_000 },
  ipHash: 'scripts-test',
  channel: 'api',
  device: 'vitest',
});

/** A join from the address "scripts-test"; `perAddress` accounts at most from it. */
const join = (saleId: string, userId: string, perAddress = 1_000_000) =>
  joinQueueScript(core.context.redis, {
    saleId,
    userId,
    ipHash: 'scripts-test',
    limits: OPEN_LIMITS as BucketLimits,
    accountsPerAddress: perAddress,
  });

const reserve = (saleId: string, userId: string, options: { key?: string; qty?: number } = {}) =>
  reserveUnit(core.context, {
    saleId,
    userId,
    sku: 'SKU-1',
    qty: options.qty ?? 1,
    ticketId: randomUUID(),
    idempotencyKey: options.key ?? randomUUID(),
    shopper: shopperOf(userId),
  });

async function reserved(saleId: string, userId: string): Promise<{ order_id: string; expires_at: number }> {
  const result = await reserve(saleId, userId);
  if (result.outcome !== 'reserved') throw new Error(`expected a reservation, got ${JSON.stringify(result)}`);
  return JSON.parse(result.answer);
}

/** The order events of one order still in the sale's outbox, in order. */
async function outboxTypes(saleId: string, orderId: string): Promise<string[]> {
  const entries = await core.context.redis.xrange(saleKeys(saleId).outbox, '-', '+');
  return entries
    .map(([, fields]) => JSON.parse(fields[fields.indexOf('e') + 1]!))
    .filter((e) => e.order_id === orderId)
    .map((e) => e.type);
}

const endSale = (saleId: string) =>
  core.app.inject({ method: 'POST', url: `/admin/sales/${saleId}/end`, headers: { authorization: `Bearer ${ADMIN}` } });

describe('payOrder', () => {
  it('window closed, sweeper not run yet: expires the order inline, then takes a free unit back', async () => {
    const saleId = await createSale(core, { stock: 2, windowMinutes: 0.0005 }); // a 30 ms window
    const order = await reserved(saleId, 'inline-a');
    await untilRedisTime(order.expires_at);
    // Unswept: the order is still reserved when the payment arrives.
    expect(await core.context.redis.hget(saleKeys(saleId).order(order.order_id), 'status')).toBe('reserved');
    expect(await payOrder(core.context.redis, order.order_id, 'inline-a')).toEqual({
      status: 'paid',
      reacquired: true,
      alreadyPaid: false,
    });
    expect(await readStockLedger(core.context.redis, saleId)).toMatchObject({
      available: { 'SKU-1': 1 },
      reserved: { 'SKU-1': 0 },
      sold: { 'SKU-1': 1 },
    });
    expect(await outboxTypes(saleId, order.order_id)).toEqual(['order_reserved', 'order_expired', 'order_paid']);
    expect(await core.context.redis.hget(saleKeys(saleId).bought, 'inline-a|SKU-1')).toBe('1');
    // Paying again answers "already paid" and changes nothing.
    expect(await payOrder(core.context.redis, order.order_id, 'inline-a')).toEqual({
      status: 'paid',
      reacquired: false,
      alreadyPaid: true,
    });
    expect(await outboxTypes(saleId, order.order_id)).toHaveLength(3);
  });

  it('late payment is refused when the unit went to another shopper', async () => {
    const saleId = await createSale(core, { stock: 1, windowMinutes: 0.0005 });
    const late = await reserved(saleId, 'late-a');
    await untilRedisTime(late.expires_at);
    expect(await expireReservations(core.context.redis, saleId)).toBe(1);
    await reserved(saleId, 'late-b');
    expect(await payOrder(core.context.redis, late.order_id, 'late-a')).toEqual({
      status: 'refused',
      code: 'ORDER_EXPIRED',
      reason: 'unit_taken',
    });
    expect(await readStockLedger(core.context.redis, saleId)).toMatchObject({ available: { 'SKU-1': 0 }, reserved: { 'SKU-1': 1 } });
    expect(await outboxTypes(saleId, late.order_id)).toEqual(['order_reserved', 'order_expired']);
  });

  it('late payment is refused when the shopper already holds the limit again', async () => {
    const saleId = await createSale(core, { stock: 5, windowMinutes: 0.0005, limit: 1 });
    const first = await reserved(saleId, 'limit-a');
    await untilRedisTime(first.expires_at);
    expect(await expireReservations(core.context.redis, saleId)).toBe(1);
    await reserved(saleId, 'limit-a'); // a new reservation: the shopper holds 1 of 1
    expect(await payOrder(core.context.redis, first.order_id, 'limit-a')).toEqual({
      status: 'refused',
      code: 'ORDER_EXPIRED',
      reason: 'limit_reached',
    });
    expect(await core.context.redis.hget(saleKeys(saleId).bought, 'limit-a|SKU-1')).toBe('1');
  });

  it('in an ended sale: pays within the window', async () => {
    const saleId = await createSale(core, { stock: 2 });
    const order = await reserved(saleId, 'ended-a');
    expect((await endSale(saleId)).statusCode).toBe(200);
    // The unit has been the shopper's since the reservation: the end of the sale does not take it back.
    expect(await payOrder(core.context.redis, order.order_id, 'ended-a')).toEqual({
      status: 'paid',
      reacquired: false,
      alreadyPaid: false,
    });
    expect(await readStockLedger(core.context.redis, saleId)).toMatchObject({ sold: { 'SKU-1': 1 }, reserved: { 'SKU-1': 0 } });
  });

  it('in an ended sale: after the window, expires the order inline and refuses, though a unit is free', async () => {
    const saleId = await createSale(core, { stock: 2, windowMinutes: 0.0005 });
    const order = await reserved(saleId, 'ended-b');
    expect((await endSale(saleId)).statusCode).toBe(200);
    await untilRedisTime(order.expires_at);
    expect(await payOrder(core.context.redis, order.order_id, 'ended-b')).toEqual({
      status: 'refused',
      code: 'ORDER_EXPIRED',
      reason: 'sale_ended',
    });
    expect(await core.context.redis.hget(saleKeys(saleId).order(order.order_id), 'status')).toBe('expired');
    expect(await readStockLedger(core.context.redis, saleId)).toMatchObject({ available: { 'SKU-1': 2 }, reserved: { 'SKU-1': 0 } });
    expect(await outboxTypes(saleId, order.order_id)).toEqual(['order_reserved', 'order_expired']);
  });

  it('refuses an order of another shopper, or none', async () => {
    const saleId = await createSale(core, { stock: 1 });
    const order = await reserved(saleId, 'owner');
    expect(await payOrder(core.context.redis, order.order_id, 'someone-else')).toEqual({ status: 'refused', code: 'ORDER_NOT_FOUND' });
    expect(await payOrder(core.context.redis, `${saleId}.${randomUUID()}`, 'owner')).toEqual({
      status: 'refused',
      code: 'ORDER_NOT_FOUND',
    });
  });
});

describe('an ended sale', () => {
  it('refuses reservations, joins and polls with SALE_NOT_LIVE', async () => {
    const saleId = await createSale(core, { stock: 5 });
    expect((await join(saleId, 'ended-q'))[0]).toBe('joined');
    expect((await endSale(saleId)).statusCode).toBe(200);
    expect(await reserve(saleId, 'ended-r')).toEqual({
      outcome: 'rejected',
      code: 'SALE_NOT_LIVE',
      retryAfterMs: undefined,
      offerId: null,
      // No product view in this session: a refusal carries the signal as a reservation would.
      botSignals: ['no_prior_view'],
    });
    expect(await join(saleId, 'ended-q')).toEqual(['err', 'SALE_NOT_LIVE', 0]);
    const view = await new SaleViews(core.context.redis).get(saleId);
    expect(decideAdmission(view, { position: 1 }, Date.now())).toEqual({ outcome: 'refused', code: 'SALE_NOT_LIVE', retryMs: 0 });
    expect((await readStockLedger(core.context.redis, saleId)).available['SKU-1']).toBe(5);
  });
});

describe('joinQueue and saleState', () => {
  it('assigns a place once, refuses a full address, and reads the state a poll decides from', async () => {
    const saleId = await createSale(core, { stock: 3, admissionRate: 7, admissionBurst: 2 });
    const first = await join(saleId, 'q-a');
    expect(first.slice(0, 4)).toEqual(['joined', 1, 1, 3]);
    expect((await join(saleId, 'q-a')).slice(0, 4)).toEqual(['joined', 1, 0, 3]); // same place, nothing written
    expect((await join(saleId, 'q-b')).slice(0, 3)).toEqual(['joined', 2, 1]);
    expect(await join(saleId, 'q-c', 2)).toEqual(['err', 'QUEUE_ADDRESS_FULL', 0]);
    const [status, , , rate, burst, unitsLeft, back] = await saleStateScript(core.context.redis, saleId);
    expect([status, rate, burst, unitsLeft, back]).toEqual(['scheduled', '7', '2', 3, 0]);
    expect(await saleStateScript(core.context.redis, `${saleId}-none`)).toEqual(['', 0, 0, 0, 0, 0, 0]);
  });
});

describe('token buckets', () => {
  const settings = (rate: number, burst: number) => ({
    ipRatePerSecond: rate,
    ipBurst: burst,
    shopperRatePerSecond: 1_000_000,
    shopperBurst: 1_000_000,
  });

  it('gives the burst, refuses with the ms until the next token, and refills as Redis time passes', async () => {
    const bucket = `bucket-${randomUUID()}`;
    const take = () => takeShopperTokens(core.context.redis, bucket, 'ip', 'shopper', settings(10, 3));
    for (let i = 0; i < 3; i++) expect(await take()).toBe(0);
    const before = await redisNow();
    const wait = await take();
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(100); // one token per 100 ms at 10/s
    // A refused take writes nothing: polling does not push the refill back.
    let taken = await take();
    while (taken > 0) {
      await sleep(Math.min(taken, 20));
      taken = await take();
    }
    expect((await redisNow()) - before).toBeGreaterThanOrEqual(wait);
    await core.context.redis.del(saleKeys(bucket).rateByIp('ip'), saleKeys(bucket).rateByShopper('shopper'));
  });

  it('never holds more than the burst, however long it was idle', async () => {
    const bucket = `bucket-${randomUUID()}`;
    // Empty, last used a thousand seconds ago (on Redis's clock): refilled to the burst, not beyond.
    await core.context.redis.set(saleKeys(bucket).rateByIp('ip'), `0:${(await redisNow()) - 1_000_000}`, 'PX', 60_000);
    const take = () => takeShopperTokens(core.context.redis, bucket, 'ip', 'shopper', settings(1, 4));
    for (let i = 0; i < 4; i++) expect(await take()).toBe(0);
    expect(await take()).toBeGreaterThan(0);
    await core.context.redis.del(saleKeys(bucket).rateByIp('ip'), saleKeys(bucket).rateByShopper('shopper'));
  });
});

describe('idempotency keys', () => {
  it('replays the same purchase with the same answer and refuses a different one under the same key', async () => {
    const saleId = await createSale(core, { stock: 5, limit: 3 });
    const first = await reserve(saleId, 'idem-a', { key: 'idem-key-0001' });
    expect(first.outcome).toBe('reserved');
    const ledger = await readStockLedger(core.context.redis, saleId);
    const replay = await reserve(saleId, 'idem-a', { key: 'idem-key-0001' });
    expect(replay).toEqual({
      outcome: 'replayed',
      answer: first.outcome === 'reserved' ? first.answer : '',
      botSignals: [],
      offerId: null,
    });
    expect(await reserve(saleId, 'idem-a', { key: 'idem-key-0001', qty: 2 })).toEqual({
      outcome: 'rejected',
      code: 'IDEMPOTENCY_KEY_CONFLICT',
      retryAfterMs: undefined,
      offerId: null,
      // No product view in this session; the third try in a row may also come within 100 ms (inhuman_rate).
      botSignals: expect.arrayContaining(['no_prior_view']),
    });
    // Another shopper's key of the same text is another key.
    expect((await reserve(saleId, 'idem-b', { key: 'idem-key-0001' })).outcome).toBe('reserved');
    expect((await readStockLedger(core.context.redis, saleId)).available['SKU-1']).toBe(ledger.available['SKU-1']! - 1);
  });

  it('asks for fewer when fewer units are left than asked for, and says sold out only when none is', async () => {
    const saleId = await createSale(core, { stock: 1, limit: 3 });
    expect(await reserve(saleId, 'fewer-a', { qty: 2 })).toEqual({
      outcome: 'rejected',
      code: 'SALE_FEWER_LEFT',
      retryAfterMs: undefined,
      offerId: null,
      // No product view in this session: a refusal carries the signal as a reservation would.
      botSignals: ['no_prior_view'],
    });
    await reserved(saleId, 'fewer-a');
    const soldOut = await reserve(saleId, 'fewer-b');
    expect(soldOut.outcome === 'rejected' && soldOut.code).toBe('SALE_SOLD_OUT');
  });
});
