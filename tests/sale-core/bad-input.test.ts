// Bad input at the edge: every case gets a 4xx with a stable code and a message a person can act on,
// and changes nothing: the stock ledger, the shopper holdings and the outbox are compared before/after.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saleKeys } from '../../sale-core/keys.js';
import { readHoldings, readStockLedger, type SaleDefinition, createSale as storeSale } from '../../sale-core/sales.js';
import { checkTicket, issueTicket, readSession } from '../../sale-core/tokens.js';
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
    holdings: await readHoldings(redis, saleId),
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
    // A retry that comes after its ticket expired still gets the answer it was given; another key does not buy.
    const late = await purchase(core, saleId, buyer, { ticket: expired, key: 'first-purchase-key' });
    expect(late.statusCode).toBe(202);
    expect(late.json()).toEqual(first.json());
    await rejects(() => purchase(core, saleId, buyer, { ticket: expired, key: 'third-purchase-key' }), 403, 'TICKET_EXPIRED');
    expect(await state()).toEqual(before);
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
    while (Date.now() <= brief.expiresAt) await new Promise((r) => setTimeout(r, 10));
    await rejects(() => raw(briefBody, { authorization: `Bearer ${brief.token}` }), 401, 'SESSION_INVALID');
    // A valid session of someone else does not get the buyer's ticket to work.
    const thief = shopper('bad-input-thief');
    await rejects(() => raw(body, { authorization: `Bearer ${thief.token}` }), 403, 'TICKET_INVALID');
  });

  it("a ticket alone does not buy in its owner's name: it does not carry the session token, nor its signature", async () => {
    // The ticket as the waiting room issues it.
    const admitted = await core.app.inject({
      method: 'POST',
      url: `/sales/${saleId}/queue`,
      headers: { authorization: `Bearer ${buyer.token}` },
    });
    expect(admitted.json().status).toBe('admitted');
    const ticket: string = admitted.json().ticket;
    const signature = buyer.token.slice(buyer.token.indexOf('.') + 1);
    const payload = Buffer.from(ticket.slice(0, ticket.indexOf('.')), 'base64url').toString('utf8');
    expect(payload).not.toContain(signature);
    expect(payload).not.toContain(buyer.token.slice(0, buyer.token.indexOf('.')));
    const body = JSON.stringify({ sku: 'SKU-1', ticket });
    // Whoever holds the ticket cannot make a bearer token out of it…
    await rejects(() => raw(body, { authorization: `Bearer junk.${signature}` }), 401, 'SESSION_INVALID');
    const forgedBody = Buffer.from(JSON.stringify({ k: 's', sid: 'x', anon: 'x', uid: buyer.userId, exp: Date.now() + 60_000 })).toString(
      'base64url',
    );
    await rejects(() => raw(body, { authorization: `Bearer ${forgedBody}.${signature}` }), 401, 'SESSION_INVALID');
    // …while the shopper's own token with it buys, for that shopper and session.
    const res = await raw(body, { authorization: `Bearer ${buyer.token}` });
    expect(res.statusCode).toBe(202);
    const order = await core.context.redis.hmget(saleKeys(saleId).order(res.json().order_id), 'user', 'ctx');
    expect(order[0]).toBe(buyer.userId);
    expect(JSON.parse(order[1]!)).toMatchObject({ user_id: buyer.userId, session_id: buyer.sessionId, anon_id: `anon-${buyer.userId}` });
  });

  it('tokens verify only in their canonical form', async () => {
    const ticket = boundTicketFor(saleId, buyer);
    const respell = (token: string) => {
      // The last character of a 32-byte base64url signature carries two unused bits: flipping the lowest
      // one spells the same bytes.
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const last = alphabet.indexOf(token.at(-1)!);
      return [`${token}!!`, `${token}==`, `${token.slice(0, -1)}${alphabet[last ^ 1]}`];
    };
    expect(readSession(buyer.token, SECRET)?.userId).toBe(buyer.userId);
    expect(checkTicket(ticket, saleId, buyer.userId, SECRET).ok).toBe(true);
    for (const variant of respell(buyer.token)) {
      expect(Buffer.from(variant.split('.')[1]!, 'base64url')).toEqual(Buffer.from(buyer.token.split('.')[1]!, 'base64url'));
      expect(readSession(variant, SECRET)).toBeNull();
      await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket }), { authorization: `Bearer ${variant}` }), 401, 'SESSION_INVALID');
    }
    for (const variant of respell(ticket)) {
      expect(checkTicket(variant, saleId, buyer.userId, SECRET)).toEqual({ ok: false, code: 'TICKET_INVALID' });
      await rejects(() => raw(JSON.stringify({ sku: 'SKU-1', ticket: variant })), 403, 'TICKET_INVALID');
    }
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

describe('sale definitions', () => {
  const auth = { authorization: `Bearer ${ADMIN}` };
  const definition = (id: string, change: Record<string, unknown> = {}, sku: Record<string, unknown> = {}) => ({
    id,
    title: 'Definition test',
    starts_at: Date.now(),
    ends_at: Date.now() + 3_600_000,
    payment_window_minutes: 1,
    skus: [{ sku: 'SKU-1', title: 'x', price: 1, stock: 5, limit_per_shopper: 1, ...sku }],
    ...change,
  });
  const create = (payload: unknown, headers: Record<string, string> = auth) =>
    core.app.inject({ method: 'POST', url: '/admin/sales', headers, payload: payload as object });
  /** Nothing of the sale exists: no meta, no catalog, not in the set the relay and the sweeper visit. */
  const nothingStored = async (id: string) => {
    const redis = core.context.redis;
    expect(await redis.exists(saleKeys(id).meta, saleKeys(id).catalog, saleKeys(id).stock)).toBe(0);
    expect(await redis.sismember(core.activeSalesKey, id)).toBe(0);
  };

  it('admin routes authenticate before they validate', async () => {
    const id = `${saleId}-noauth`;
    for (const headers of [{}, { authorization: 'Bearer not-the-admin-token' }] as Record<string, string>[]) {
      const bad = await create({ id: 42, starts_at: 'soon' }, headers);
      expect([bad.statusCode, bad.json().error.code]).toEqual([401, 'ADMIN_REQUIRED']);
      const malformed = await core.app.inject({
        method: 'POST',
        url: '/admin/sales',
        headers: { ...headers, 'content-type': 'application/json' },
        payload: '{"id": ',
      });
      expect([malformed.statusCode, malformed.json().error.code]).toEqual([401, 'ADMIN_REQUIRED']);
      const valid = await create(definition(id), headers);
      expect([valid.statusCode, valid.json().error.code]).toEqual([401, 'ADMIN_REQUIRED']);
      const read = await core.app.inject({ method: 'GET', url: '/admin/sales/NOT_AN_ID', headers });
      expect([read.statusCode, read.json().error.code]).toEqual([401, 'ADMIN_REQUIRED']);
    }
    await nothingStored(id);
    // With the token, the same bad body is a validation error.
    expect((await create({ id: 42 })).json().error.code).toBe('INVALID_REQUEST');
  });

  it('refuses values that pass the types but make no sense, naming the field, and stores nothing', async () => {
    const id = `${saleId}-values`;
    const now = Date.now();
    const cases: [Record<string, unknown>, Record<string, unknown>, string][] = [
      [{ starts_at: 1e300, ends_at: 1e300 + 1 }, {}, 'starts_at'],
      [{ starts_at: 0 }, {}, 'starts_at'],
      [{ starts_at: now + 2 * 365 * 86_400_000, ends_at: now + 2 * 365 * 86_400_000 + 1000 }, {}, 'starts_at'],
      [{ ends_at: now + 60 * 86_400_000 }, {}, 'ends_at'],
      [{ ends_at: now - 1 }, {}, 'ends_at'],
      [{ payment_window_minutes: 1e-9 }, {}, 'payment_window_minutes'],
      [{ payment_window_minutes: 0.5 }, {}, 'payment_window_minutes'],
      [{ follow_up_sale_id: id }, {}, 'follow_up_sale_id'],
      [{}, { image_url: 'javascript:alert(1)' }, 'image_url'],
      [{}, { image_url: 'data:text/html,<script>alert(1)</script>' }, 'image_url'],
    ];
    for (const [change, sku, field] of cases) {
      const res = await create(definition(id, change, sku));
      expect(res.statusCode, `${JSON.stringify(change)} ${JSON.stringify(sku)}`).toBe(400);
      expect(['INVALID_REQUEST', 'SALE_INVALID']).toContain(res.json().error.code);
      expect(res.json().error.message).toContain(field);
    }
    await nothingStored(id);
    // The sane neighbours of those values are accepted, and the follow-up sale is kept and shown.
    const ok = await create(definition(id, { follow_up_sale_id: `${id}-next` }, { image_url: 'https://img.example/sneaker.png' }));
    expect(ok.statusCode).toBe(201);
    core.sales.add(id);
    const shown = await core.app.inject({ method: 'GET', url: `/admin/sales/${id}`, headers: auth });
    expect(shown.json()).toMatchObject({ follow_up_sale_id: `${id}-next`, products: [{ image_url: 'https://img.example/sneaker.png' }] });
    expect(await core.context.redis.hget(saleKeys(id).meta, 'follow_up_sale_id')).toBe(`${id}-next`);
    expect(await core.context.redis.hget(saleKeys(id).meta, 'window_ms')).toBe('60000');
  });

  it('a create that Redis refuses leaves nothing behind, not even its id in the active set', async () => {
    const redis = core.context.redis;
    // A title the Lua cjson refuses (a lone UTF-16 surrogate), handed past the HTTP edge to the create itself.
    const inTitle = `${saleId}-surrogate`;
    const def = definition(inTitle, { title: 'Sale \ud800' }) as SaleDefinition;
    await expect(storeSale(redis, core.activeSalesKey, def, 100)).rejects.toThrow(/unicode/);
    await nothingStored(inTitle);
    // The SKU list is decoded after the sale's meta: a refused SKU title must not leave a half-made sale.
    const inSku = `${saleId}-surrogate-sku`;
    await expect(storeSale(redis, core.activeSalesKey, definition(inSku, {}, { title: 'x\udc00' }) as SaleDefinition, 100)).rejects.toThrow(
      /unicode/,
    );
    await nothingStored(inSku);
    // Through the API: refused with a 400, nothing stored.
    const res = await core.app.inject({
      method: 'POST',
      url: '/admin/sales',
      headers: { ...auth, 'content-type': 'application/json' },
      payload: JSON.stringify(definition(inTitle)).replace('"Definition test"', '"Sale \\ud800"'),
    });
    expect(res.statusCode).toBe(400);
    await nothingStored(inTitle);
  });

  it('the sweeper retires an id a failed create left in the active set, and keeps one being created', async () => {
    const redis = core.context.redis;
    const [leftover, creating] = [`${saleId}-leftover`, `${saleId}-creating`];
    core.sales.add(creating);
    await redis.set(saleKeys(creating).creating, '1', 'PX', 60_000);
    await redis.sadd(core.activeSalesKey, leftover, creating);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (await redis.sismember(core.activeSalesKey, leftover)) === 1)
      await new Promise((r) => setTimeout(r, 50));
    expect(await redis.sismember(core.activeSalesKey, leftover)).toBe(0);
    expect(await redis.sismember(core.activeSalesKey, creating)).toBe(1);
    await redis.srem(core.activeSalesKey, creating);
  });
});
