// Bad input at the edge: every case gets a 4xx with a stable code and a message a person can act on,
// and changes nothing: the stock ledger, the shopper holdings and the outbox are compared before/after.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saleKeys } from '../../sale-core/keys.js';
import { readStockLedger } from '../../sale-core/sales.js';
import { issueTicket } from '../../sale-core/tokens.js';
import {
  ADMIN,
  boundTicketFor,
  createSale,
  OPEN_LIMITS,
  purchase,
  SECRET,
  shopper,
  startTestSaleCore,
  type TestSaleCore,
  ticketFor,
} from './support.js';

let core: TestSaleCore;
let saleId: string;

beforeAll(async () => {
  core = await startTestSaleCore({ settings: OPEN_LIMITS });
  saleId = await createSale(core, { stock: 5, limit: 2 });
});
afterAll(async () => {
  await core?.close();
});

async function state() {
  const redis = core.context.redis;
  const k = saleKeys(saleId);
  return {
    ledger: await readStockLedger(redis, saleId),
    holdings: await redis.hgetall(k.bought),
    // Order events written, whether still in the outbox or already relayed.
    orderEvents: (await redis.xlen(k.outbox)) + core.context.relay.published,
    orders: (await redis.zcard(k.expiry)) + (await redis.hlen(k.sold)),
  };
}

/** Runs a request and asserts the 4xx code, a useful message, and that nothing changed. */
async function rejects(
  send: () => Promise<{ statusCode: number; json(): { error: { code: string; message: string } }; headers: Record<string, unknown> }>,
  status: number,
  code: string,
) {
  const before = await state();
  const res = await send();
  expect(res.statusCode, JSON.stringify(res.json())).toBe(status);
  expect(res.json().error.code).toBe(code);
  expect(res.json().error.message.length).toBeGreaterThan(15);
  expect(await state()).toEqual(before);
  return res;
}

const buyer = shopper('bad-input-buyer');
const raw = (payload: string, headers: Record<string, string> = {}) =>
  core.app.inject({
    method: 'POST',
    url: `/sales/${saleId}/purchase`,
    headers: { authorization: `Bearer ${buyer.token}`, 'idempotency-key': randomUUID(), 'content-type': 'application/json', ...headers },
    payload,
  });

describe('bad input is refused and changes nothing', () => {
  it('malformed JSON', async () => {
    await rejects(() => raw('{"sku": "SKU-1", "ticket": '), 400, 'MALFORMED_JSON');
  });

  it('wrong types and unknown fields', async () => {
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', qty: 'two', ticket: ticketFor(saleId, buyer.userId) })), 400, 'INVALID_REQUEST');
    await rejects(() => raw(JSON.stringify({ sku: 42, ticket: ticketFor(saleId, buyer.userId) })), 400, 'INVALID_REQUEST');
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', qty: 0, ticket: ticketFor(saleId, buyer.userId) })), 400, 'INVALID_REQUEST');
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket: ticketFor(saleId, buyer.userId), price: 1 })), 400, 'INVALID_REQUEST');
    await rejects(() => raw('[]'), 400, 'INVALID_REQUEST');
  });

  it('oversized body', async () => {
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket: 'x'.repeat(40_000) })), 413, 'BODY_TOO_LARGE');
  });

  it('unknown sale and unknown SKU', async () => {
    await rejects(() => purchase(core, 'no-such-sale', buyer), 404, 'SALE_NOT_FOUND');
    await rejects(() => purchase(core, saleId, buyer, { sku: 'SKU-404' }), 404, 'SKU_NOT_FOUND');
    await rejects(() => purchase(core, 'BAD_SALE', buyer), 400, 'INVALID_REQUEST');
  });

  it('missing or malformed Idempotency-Key', async () => {
    const ticket = ticketFor(saleId, buyer.userId);
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket }), { 'idempotency-key': '' }), 400, 'IDEMPOTENCY_KEY_REQUIRED');
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket }), { 'idempotency-key': 'short' }), 400, 'IDEMPOTENCY_KEY_REQUIRED');
    await rejects(
      () =>
        core.app.inject({
          method: 'POST',
          url: `/sales/${saleId}/purchase`,
          headers: { authorization: `Bearer ${buyer.token}` },
          payload: { sku: 'SKU-1', ticket },
        }),
      400,
      'IDEMPOTENCY_KEY_REQUIRED',
    );
  });

  it('expired, forged, foreign and replayed tickets', async () => {
    const expired = issueTicket({ saleId, userId: buyer.userId, position: 1, expiresAt: Date.now() - 1 }, SECRET);
    await rejects(() => purchase(core, saleId, buyer, { ticket: expired }), 403, 'TICKET_EXPIRED');
    const forged = issueTicket({ saleId, userId: buyer.userId, position: 1, expiresAt: Date.now() + 60_000 }, 'another-secret');
    await rejects(() => purchase(core, saleId, buyer, { ticket: forged }), 403, 'TICKET_INVALID');
    await rejects(() => purchase(core, saleId, buyer, { ticket: ticketFor(saleId, 'someone-else') }), 403, 'TICKET_INVALID');
    await rejects(() => purchase(core, saleId, buyer, { ticket: ticketFor('other-sale', buyer.userId) }), 403, 'TICKET_INVALID');
    await rejects(() => purchase(core, saleId, buyer, { ticket: 'not-a-ticket-at-all' }), 403, 'TICKET_INVALID');

    // A ticket buys once: the same ticket with a new key is a replayed ticket.
    const ticket = ticketFor(saleId, buyer.userId);
    const first = await purchase(core, saleId, buyer, { ticket, key: 'first-purchase-key' });
    expect(first.statusCode).toBe(202);
    await rejects(() => purchase(core, saleId, buyer, { ticket, key: 'second-purchase-key' }), 409, 'TICKET_REUSED');

    // The same key again is a retry, not a replayed ticket: it gets the same answer and changes nothing.
    const before = await state();
    const again = await purchase(core, saleId, buyer, { ticket, key: 'first-purchase-key' });
    expect(again.statusCode).toBe(202);
    expect(again.json()).toEqual(first.json());
    expect(await state()).toEqual(before);
    // …but the same key for a different purchase is refused.
    await rejects(() => purchase(core, saleId, buyer, { ticket, key: 'first-purchase-key', qty: 2 }), 422, 'IDEMPOTENCY_KEY_CONFLICT');
  });

  it('missing, forged or anonymous sessions', async () => {
    const ticket = ticketFor(saleId, buyer.userId);
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket }), { authorization: '' }), 401, 'SESSION_REQUIRED');
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket }), { authorization: 'Bearer forged.token' }), 401, 'SESSION_INVALID');
    const anon = (await core.app.inject({ method: 'POST', url: '/session' })).json();
    await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket }), { authorization: `Bearer ${anon.token}` }), 401, 'LOGIN_REQUIRED');
  });

  it('a ticket naming its session vouches for that exact session token only', async () => {
    const bound = boundTicketFor(saleId, buyer);
    const body = JSON.stringify({ sku: 'SKU-1', ticket: bound });
    await rejects(() => raw(body, { authorization: '' }), 401, 'SESSION_REQUIRED');
    await rejects(() => raw(body, { authorization: 'Bearer forged.token' }), 401, 'SESSION_INVALID');
    // A session that has expired since the ticket was issued is refused like any expired session.
    const brief = shopper('bad-input-brief', 50);
    const briefBody = JSON.stringify({ sku: 'SKU-1', ticket: boundTicketFor(saleId, brief) });
    await new Promise((r) => setTimeout(r, 100));
    await rejects(() => raw(briefBody, { authorization: `Bearer ${brief.token}` }), 401, 'SESSION_INVALID');
    // A valid session of someone else does not get the buyer's ticket to work…
    const thief = shopper('bad-input-thief');
    await rejects(() => raw(body, { authorization: `Bearer ${thief.token}` }), 403, 'TICKET_INVALID');
    // …and a forged token carrying the right signature gains nothing: the identity is the ticket's.
    const forgedBody = Buffer.from(JSON.stringify({ k: 's', sid: 'x', anon: 'x', uid: thief.userId, exp: Date.now() + 60_000 })).toString(
      'base64url',
    );
    const forged = `${forgedBody}.${buyer.token.split('.')[1]}`;
    const res = await raw(body, { authorization: `Bearer ${forged}` });
    expect(res.statusCode).toBe(202);
    const order = await core.context.redis.hmget(saleKeys(saleId).order(res.json().order_id), 'user', 'ctx');
    expect(order[0]).toBe(buyer.userId);
    expect(JSON.parse(order[1]!)).toMatchObject({ user_id: buyer.userId, session_id: buyer.sessionId, anon_id: `anon-${buyer.userId}` });
  });

  it('admin routes need the admin token; sale definitions are validated; sales are immutable', async () => {
    await rejects(() => core.app.inject({ method: 'POST', url: `/admin/sales/${saleId}/end` }), 401, 'ADMIN_REQUIRED');
    const auth = { authorization: `Bearer ${ADMIN}` };
    const def = {
      id: saleId,
      title: 'again',
      starts_at: Date.now(),
      ends_at: Date.now() + 1000,
      payment_window_minutes: 1,
      skus: [{ sku: 'SKU-1', title: 'x', price: 1, stock: 999, limit_per_shopper: 1 }],
    };
    await rejects(() => core.app.inject({ method: 'POST', url: '/admin/sales', headers: auth, payload: def }), 409, 'SALE_EXISTS');
    await rejects(
      () =>
        core.app.inject({ method: 'POST', url: '/admin/sales', headers: auth, payload: { ...def, skus: [{ ...def.skus[0], stock: -1 }] } }),
      400,
      'INVALID_REQUEST',
    );
    const fresh = { ...def, id: `${saleId}-b`, ends_at: def.starts_at - 1 };
    const res = await core.app.inject({ method: 'POST', url: '/admin/sales', headers: auth, payload: fresh });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('SALE_INVALID');
  });
});
