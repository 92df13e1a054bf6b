// The waiting room under a crowd of made-up accounts: it cannot end a sale or push real shoppers out.
// "Sold out" is final only when no unit is left or held; an early "sold out" (more shoppers ahead than
// units left) keeps the shopper's place and says when it comes up; and one address brings at most
// `queueAccountsPerAddress` accounts into a sale's queue.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStockLedger } from '../../sale-core/sales.js';
import { createSale, OPEN_LIMITS, purchase, type Shopper, shopper, startTestSaleCore, type TestSaleCore, until } from './support.js';

let core: TestSaleCore;
const ACCOUNTS_PER_ADDRESS = 10;

beforeAll(async () => {
  core = await startTestSaleCore({ settings: { ...OPEN_LIMITS, queueAccountsPerAddress: ACCOUNTS_PER_ADDRESS } });
});
afterAll(async () => {
  await core?.close();
});

/** A join (POST), or a poll (GET) with the place the join signed. */
const queue = (saleId: string, who: Shopper, from = '127.0.0.1', method: 'POST' | 'GET' = 'POST', place?: string) =>
  core.app.inject({
    method,
    url: `/sales/${saleId}/queue`,
    // A client may claim any address: it counts only when a trusted load balancer says so.
    headers: {
      authorization: `Bearer ${who.token}`,
      'x-forwarded-for': `192.0.2.${Math.floor(Math.random() * 250)}`,
      ...(place ? { 'x-position-token': place } : {}),
    },
    remoteAddress: from,
  });

describe('a crowd of made-up accounts', () => {
  it('ten invented accounts ahead of a real shopper do not end a 10-unit sale: the shopper keeps the place and buys', async () => {
    // Starts in 5 s, then admits 20 shoppers a second with no burst: the crowd joins before the start.
    const saleId = await createSale(core, { stock: 10, startsInMs: 5000, admissionRate: 20, admissionBurst: 0 });
    const crowd = Array.from({ length: 10 }, (_, i) => shopper(`${saleId}-fake-${i}`));
    for (const fake of crowd) expect((await queue(saleId, fake)).json().status).toBe('waiting');

    const real = shopper(`${saleId}-real`);
    const early = await queue(saleId, real, '10.1.1.1');
    // More shoppers wait ahead than units are left: "sold out" for now, but not final.
    expect(early.statusCode).toBe(409);
    expect(early.json().error.code).toBe('SALE_SOLD_OUT');
    expect(Number(early.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(early.json().error.message).toMatch(/place is kept/);
    expect((await readStockLedger(core.context.redis, saleId)).available['SKU-1']).toBe(10);

    // The queue reaches the shopper's place past the fakes, who never buy: admitted, and the unit is sold.
    const admitted = await until(
      () => queue(saleId, real, '10.1.1.1', 'GET', String(early.headers['x-position-token'])),
      (res) => res.statusCode === 200 && res.json().status === 'admitted',
    );
    expect(admitted.json()).toMatchObject({ status: 'admitted', position: 11 });
    const bought = await purchase(core, saleId, real, { ticket: admitted.json().ticket });
    expect(bought.statusCode).toBe(202);
  });

  it("one address brings at most the configured number of accounts into a sale's queue", async () => {
    const saleId = await createSale(core, { stock: 100, startsInMs: 60_000 });
    const crowd = Array.from({ length: ACCOUNTS_PER_ADDRESS + 1 }, (_, i) => shopper(`${saleId}-acct-${i}`));
    for (const account of crowd.slice(0, ACCOUNTS_PER_ADDRESS)) expect((await queue(saleId, account, '10.2.2.2')).statusCode).toBe(200);
    // The same accounts polling again, or joining again, are not new accounts.
    expect((await queue(saleId, crowd[0]!, '10.2.2.2')).statusCode).toBe(200);
    const refused = await queue(saleId, crowd.at(-1)!, '10.2.2.2');
    expect([refused.statusCode, refused.json().error.code]).toEqual([403, 'QUEUE_ADDRESS_FULL']);
    // The refused account was not placed; from its own address it joins.
    expect((await queue(saleId, crowd.at(-1)!, '10.2.2.2', 'GET')).json().error.code).toBe('QUEUE_NOT_JOINED');
    expect((await queue(saleId, crowd.at(-1)!, '10.3.3.3')).json()).toMatchObject({
      status: 'waiting',
      position: ACCOUNTS_PER_ADDRESS + 1,
    });
  });

  it('counts the addresses of one IPv6 /64 as one address, and an IPv4-mapped address as its IPv4', async () => {
    const saleId = await createSale(core, { stock: 100, startsInMs: 60_000 });
    const crowd = Array.from({ length: ACCOUNTS_PER_ADDRESS + 1 }, (_, i) => shopper(`${saleId}-v6-${i}`));
    // Each account from an address of its own, all in the block one subscriber holds.
    for (const [i, account] of crowd.slice(0, ACCOUNTS_PER_ADDRESS).entries())
      expect((await queue(saleId, account, `2001:db8:5:6::${(i + 1).toString(16)}`)).statusCode).toBe(200);
    const refused = await queue(saleId, crowd.at(-1)!, '2001:db8:5:6:ffff::99');
    expect([refused.statusCode, refused.json().error.code]).toEqual([403, 'QUEUE_ADDRESS_FULL']);
    // Another /64 is another address.
    expect((await queue(saleId, crowd.at(-1)!, '2001:db8:5:7::1')).statusCode).toBe(200);

    const mapped = await createSale(core, { stock: 100, startsInMs: 60_000 });
    const accounts = Array.from({ length: ACCOUNTS_PER_ADDRESS + 1 }, (_, i) => shopper(`${mapped}-v4-${i}`));
    for (const [i, account] of accounts.slice(0, ACCOUNTS_PER_ADDRESS).entries())
      expect((await queue(mapped, account, i % 2 === 0 ? '10.9.9.9' : '::ffff:10.9.9.9')).statusCode).toBe(200);
    const full = await queue(mapped, accounts.at(-1)!, '::ffff:10.9.9.9');
    expect([full.statusCode, full.json().error.code]).toEqual([403, 'QUEUE_ADDRESS_FULL']);
  });

  it('behind a trusted load balancer, the address is the one the balancer forwards', async () => {
    const behind = await startTestSaleCore({ settings: { ...OPEN_LIMITS, queueAccountsPerAddress: 2, trustedProxies: ['10.4.4.4'] } });
    try {
      const saleId = await createSale(behind, { stock: 100, startsInMs: 60_000 });
      const join = (who: Shopper, client: string) =>
        behind.app.inject({
          method: 'POST',
          url: `/sales/${saleId}/queue`,
          headers: { authorization: `Bearer ${who.token}`, 'x-forwarded-for': client },
          remoteAddress: '10.4.4.4',
        });
      const accounts = Array.from({ length: 4 }, (_, i) => shopper(`${saleId}-lb-${i}`));
      // Four accounts through one balancer, from two clients: two each.
      for (const [i, account] of accounts.entries()) expect((await join(account, `198.51.100.${i % 2}`)).statusCode).toBe(200);
      const third = await join(shopper(`${saleId}-lb-extra`), '198.51.100.0');
      expect([third.statusCode, third.json().error.code]).toEqual([403, 'QUEUE_ADDRESS_FULL']);
    } finally {
      await behind.close();
    }
  });
});

describe('"sold out" says whether it is final', () => {
  it('is final only when no unit is left or held', async () => {
    const saleId = await createSale(core, { stock: 1 });
    const [buyer, next, last] = ['buyer', 'next', 'last'].map((u) => shopper(`${saleId}-${u}`)) as [Shopper, Shopper, Shopper];
    const ticket = (await queue(saleId, buyer)).json().ticket;
    const order = (await purchase(core, saleId, buyer, { ticket })).json();
    // The unit is held by an unpaid order: it may come back.
    const held = await queue(saleId, next);
    expect([held.statusCode, held.json().error.code]).toEqual([409, 'SALE_SOLD_OUT']);
    expect(Number(held.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Paid: nothing is left or held, and the answer is final.
    const paid = await core.app.inject({
      method: 'POST',
      url: `/orders/${order.order_id}/pay`,
      headers: { authorization: `Bearer ${buyer.token}` },
      payload: {},
    });
    expect(paid.json().status).toBe('paid');
    const final = await queue(saleId, last);
    expect([final.statusCode, final.json().error.code]).toEqual([409, 'SALE_SOLD_OUT']);
    expect(final.headers['retry-after']).toBeUndefined();
  });

  it('waits it announces are sane for a sale a year ahead', async () => {
    const saleId = await createSale(core, { stock: 1, startsInMs: 365 * 86_400_000, admissionRate: 0.01, admissionBurst: 0 });
    const waiting = (await queue(saleId, shopper(`${saleId}-early`))).json();
    expect(waiting.status).toBe('waiting');
    expect(waiting.retry_after_ms).toBeGreaterThan(0);
    expect(waiting.retry_after_ms).toBeLessThanOrEqual(5000);
    // Outnumbered far ahead of the start: Retry-After is a whole number of seconds, at most a day.
    const outnumbered = await queue(saleId, shopper(`${saleId}-later`));
    expect(outnumbered.statusCode).toBe(409);
    const retryAfter = Number(outnumbered.headers['retry-after']);
    expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 86_400).toBe(true);
  });
});
