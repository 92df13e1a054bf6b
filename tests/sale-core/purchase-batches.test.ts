// The purchases that reach one process in the same event-loop turn go to Redis as one script call per sale
// (sale-core/purchase-batches.ts). Each must still be answered as if it ran alone: the limit, the idempotency
// key, the ticket and the last unit hold inside a batch, the shared keys it writes once hold what each purchase
// alone would have written, batches of two sales keep to their own keys, a crowd larger than
// the cap is split, a purchase Redis refuses fails alone, and a batch Redis cannot run fails every purchase in
// it and records nothing.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ShopperContext } from '../../sale-core/context.js';
import { saleKeys } from '../../sale-core/keys.js';
import { type ReserveResult, reserveUnit } from '../../sale-core/purchase.js';
import { MAX_PURCHASES_PER_BATCH, PurchaseBatches } from '../../sale-core/purchase-batches.js';
import { readStockLedger } from '../../sale-core/sales.js';
import { withSaleScripts } from '../../sale-core/scripts.js';
import { freePort } from '../support/private-server.js';
import { createSale, OPEN_LIMITS, startTestSaleCore, type TestSaleCore } from './support.js';

let core: TestSaleCore;
/** The purchase script calls this process sent (EVALSHA, or EVAL after a script-cache miss), counted at the client. */
let scriptCalls = 0;

beforeAll(async () => {
  core = await startTestSaleCore({ settings: OPEN_LIMITS, background: false });
  // Counted at our own client, not from Redis's INFO: other suites share the stack's Redis.
  const redis = core.context.redis;
  const sendCommand = redis.sendCommand.bind(redis);
  redis.sendCommand = ((command: { name: string; args: unknown[] }, ...rest: unknown[]) => {
    if ((command.name === 'evalsha' || command.name === 'eval') && isPurchase(command.args)) scriptCalls++;
    return (sendCommand as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof redis.sendCommand;
});
afterAll(async () => {
  await core?.close();
});

/** RESERVE_UNITS's keys begin meta, stock, reserved, bought (after the script and the key count); no other script's do. */
const isPurchase = (args: unknown[]) => String(args[2]).endsWith(':meta') && String(args[5]).endsWith(':bought');

const shopperOf = (userId: string): ShopperContext => ({
  session: { sessionId: `session-${userId}`, anonId: `anon-${userId}`, userId, expiresAt: Date.now() + 3_600_000 },
  ipHash: 'batches-test',
  channel: 'api',
  device: 'vitest',
});

const reserve = (saleId: string, userId: string, options: { key?: string; qty?: number; sku?: string; ticket?: string } = {}) =>
  reserveUnit(core.context, {
    saleId,
    userId,
    sku: options.sku ?? 'SKU-1',
    qty: options.qty ?? 1,
    ticketId: options.ticket ?? randomUUID(),
    idempotencyKey: options.key ?? randomUUID(),
    shopper: shopperOf(userId),
  });

/** Each purchase's outcome, or its refusal's code. */
const outcomes = (results: ReserveResult[]) => results.map((r) => (r.outcome === 'rejected' ? r.code : r.outcome));

/** SKU-1's units by state, from one consistent read of the sale's counters. */
async function units(saleId: string) {
  const l = await readStockLedger(core.context.redis, saleId);
  return { available: l.available['SKU-1'], reserved: l.reserved['SKU-1'], sold: l.sold['SKU-1'], initial: l.initial['SKU-1'] };
}

/** Runs `fire` and returns its results with the number of purchase script calls it caused. */
async function counted<T>(fire: () => Promise<T>): Promise<{ result: T; calls: number }> {
  const before = scriptCalls;
  const result = await fire();
  return { result, calls: scriptCalls - before };
}

describe('purchases that arrive together', () => {
  it('go to Redis in one call, and each is answered as if alone: limit, replay, key conflict, last unit', async () => {
    const saleId = await createSale(core, { stock: 2, limit: 1 });
    const key = randomUUID();
    const { result, calls } = await counted(() =>
      Promise.all([
        reserve(saleId, 'alice', { key }),
        reserve(saleId, 'alice', { key }), // the same purchase again: the same answer
        reserve(saleId, 'alice', { key, qty: 2 }), // the same key for another purchase
        reserve(saleId, 'alice'), // a second purchase over the limit of one
        reserve(saleId, 'bob'), // the last unit
        reserve(saleId, 'carol'), // none left
      ]),
    );
    expect(calls).toBe(1);
    const [first, replay, conflict, overLimit, last, late] = result;
    expect(first.outcome).toBe('reserved');
    expect(replay.outcome).toBe('replayed');
    expect(replay.outcome === 'replayed' && first.outcome === 'reserved' && replay.answer).toBe(
      first.outcome === 'reserved' && first.answer,
    );
    expect(conflict).toMatchObject({ outcome: 'rejected', code: 'IDEMPOTENCY_KEY_CONFLICT' });
    expect(overLimit).toMatchObject({ outcome: 'rejected', code: 'SALE_LIMIT_REACHED' });
    expect(last.outcome).toBe('reserved');
    expect(late).toMatchObject({ outcome: 'rejected', code: 'SALE_SOLD_OUT' });

    expect(await units(saleId)).toEqual({ available: 0, reserved: 2, sold: 0, initial: 2 });
    const orders = [first, last].map((r) => (r.outcome === 'reserved' ? JSON.parse(r.answer).order_id : null));
    expect(new Set(orders).size).toBe(2);
  });

  it('spend a ticket once, even when both uses are in the same batch', async () => {
    const saleId = await createSale(core, { stock: 5, limit: 2 });
    const ticket = randomUUID();
    const { result, calls } = await counted(() => Promise.all([reserve(saleId, 'lena', { ticket }), reserve(saleId, 'lena', { ticket })]));
    expect(calls).toBe(1);
    expect(outcomes(result)).toEqual(['reserved', 'TICKET_REUSED']);
    expect(await units(saleId)).toMatchObject({ available: 4, reserved: 1 });
  });

  it("record each reserved order's count, ticket, answer, expiry entry and event once, as a purchase alone does", async () => {
    const saleId = await createSale(core, { stock: 3, limit: 2 });
    const k = saleKeys(saleId);
    const tickets = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const keys = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const { result, calls } = await counted(() =>
      Promise.all([
        reserve(saleId, 'max', { ticket: tickets[0], key: keys[0] }),
        reserve(saleId, 'max', { ticket: tickets[1], key: keys[1] }),
        reserve(saleId, 'nina', { ticket: tickets[2], key: keys[2] }),
        reserve(saleId, 'otto', { ticket: tickets[3], key: keys[3] }), // none left
      ]),
    );
    expect(calls).toBe(1);
    expect(outcomes(result)).toEqual(['reserved', 'reserved', 'reserved', 'SALE_SOLD_OUT']);
    const orders = result.slice(0, 3).map((r) => (r.outcome === 'reserved' ? JSON.parse(r.answer) : null));

    const redis = core.context.redis;
    expect(await redis.hmget(k.bought, 'max|SKU-1', 'nina|SKU-1', 'otto|SKU-1')).toEqual(['2', '1', null]);
    expect(await redis.hmget(k.bought, ...tickets.map((t) => `ticket:${t}`))).toEqual(['1', '1', '1', null]);
    const answers = await redis.hmget(
      k.bought,
      `idem:max:${keys[0]}`,
      `idem:max:${keys[1]}`,
      `idem:nina:${keys[2]}`,
      `idem:otto:${keys[3]}`,
    );
    expect(answers.slice(0, 3).map((a) => JSON.parse(String(a).split('\n')[1]!))).toEqual(orders);
    expect(answers[3]).toBeNull();
    // Each order once in the expiry set, at its own expiry; each order's event once in the outbox.
    const expiry = await redis.zrange(k.expiry, 0, -1, 'WITHSCORES');
    expect(Object.fromEntries(Array.from({ length: expiry.length / 2 }, (_, i) => [expiry[2 * i], Number(expiry[2 * i + 1])]))).toEqual(
      Object.fromEntries(orders.map((o) => [o.order_id, o.expires_at])),
    );
    const events = (await redis.xrange(k.outbox, '-', '+')).map(([, fields]) => JSON.parse(fields[fields.indexOf('e') + 1]!));
    expect(events.filter((e) => e.type === 'order_reserved').map((e) => e.order_id)).toEqual(orders.map((o) => o.order_id));
    expect(await units(saleId)).toEqual({ available: 0, reserved: 3, sold: 0, initial: 3 });
    // Turned away by the batch that took the last unit, the late shopper still learns when one could come back.
    const late = result[3];
    expect(late?.outcome === 'rejected' && late.retryAfterMs).toBeGreaterThan(0);
    expect(late?.outcome === 'rejected' && late.retryAfterMs).toBeLessThanOrEqual(10 * 60_000);
  });

  it('of two sales go in one call per sale, each on its own keys', async () => {
    const [a, b] = [await createSale(core, { stock: 1 }), await createSale(core, { stock: 1 })];
    const { result, calls } = await counted(() =>
      Promise.all([reserve(a, 'dan'), reserve(b, 'dan'), reserve(a, 'erin'), reserve(b, 'erin')]),
    );
    expect(calls).toBe(2);
    expect(outcomes(result)).toEqual(['reserved', 'reserved', 'SALE_SOLD_OUT', 'SALE_SOLD_OUT']);
    for (const saleId of [a, b]) {
      expect(await units(saleId)).toMatchObject({ available: 0, reserved: 1 });
    }
  });

  it('more than a batch holds are split, and every unit still goes exactly once', async () => {
    const crowd = 2 * MAX_PURCHASES_PER_BATCH + 6;
    const stock = MAX_PURCHASES_PER_BATCH + 5;
    const saleId = await createSale(core, { stock });
    const { result, calls } = await counted(() => Promise.all(Array.from({ length: crowd }, (_, i) => reserve(saleId, `crowd-${i}`))));
    expect(calls).toBe(Math.ceil(crowd / MAX_PURCHASES_PER_BATCH));
    expect(result.filter((r) => r.outcome === 'reserved')).toHaveLength(stock);
    expect(result.filter((r) => r.outcome === 'rejected' && r.code === 'SALE_SOLD_OUT')).toHaveLength(crowd - stock);
    // First come, first served inside and across batches: the units went to the first `stock` arrivals.
    expect(result.slice(0, stock).every((r) => r.outcome === 'reserved')).toBe(true);
    expect(await units(saleId)).toMatchObject({ available: 0, reserved: stock });
  });

  it('a purchase that Redis refuses fails alone; the rest of its batch goes on', async () => {
    const saleId = await createSale(core, { stock: 5 });
    // An offer written as a string instead of a hash (another job's bug): reading it raises WRONGTYPE.
    await core.context.redis.set(saleKeys(saleId).offer('mallory'), 'not a hash');
    const { result, calls } = await counted(() =>
      Promise.allSettled([reserve(saleId, 'jack'), reserve(saleId, 'mallory'), reserve(saleId, 'kim')]),
    );
    expect(calls).toBe(1);
    expect(result.map((r) => (r.status === 'fulfilled' ? r.value.outcome : 'failed'))).toEqual(['reserved', 'failed', 'reserved']);
    expect(String((result[1] as PromiseRejectedResult).reason)).toContain('WRONGTYPE');
    expect(await units(saleId)).toMatchObject({ available: 3, reserved: 2 });
    expect(await core.context.redis.hmget(saleKeys(saleId).bought, 'jack|SKU-1', 'mallory|SKU-1', 'kim|SKU-1')).toEqual(['1', null, '1']);
  });

  it('a purchase alone is not held back for company', async () => {
    const saleId = await createSale(core, { stock: 1 });
    const { result, calls } = await counted(() => reserve(saleId, 'frank'));
    expect(calls).toBe(1);
    expect(result.outcome).toBe('reserved');
  });

  it('that Redis cannot take all fail, and nothing of them is recorded', async () => {
    const saleId = await createSale(core, { stock: 5 });
    // A client of the sale scripts whose Redis is not there: the batch's command fails at once.
    const gone = withSaleScripts(
      new Redis({ port: await freePort(), host: '127.0.0.1', lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0 }),
    );
    const batches = new PurchaseBatches(gone);
    try {
      const call = (userId: string) => ({
        saleId,
        userId,
        sku: 'SKU-1',
        qty: 1,
        orderId: `${saleId}.${randomUUID()}`,
        ticketId: randomUUID(),
        idempotencyKey: randomUUID(),
        sessionId: `session-${userId}`,
        envelopeJson: '{"sale_id":"x"',
        rapid: false,
      });
      const settled = await Promise.allSettled([batches.reserve(call('gina')), batches.reserve(call('hal')), batches.reserve(call('ida'))]);
      expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected', 'rejected']);
    } finally {
      gone.disconnect();
    }
    expect(await units(saleId)).toMatchObject({ available: 5, reserved: 0 });
  });
});
