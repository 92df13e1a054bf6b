// The cheap poll (issue 11): a poll answered from the sale's view in memory, with the place verified once per
// process and remembered by its text. What must not change with it: a remembered place is still bound to its
// sale and its shopper, forged and altered places are still refused, the abuse limits still answer 429 with
// Retry-After, and a sale the process has no view of yet is still looked up (404, not a token error).
// Polls no longer echo the place they were sent; the join still hands it out, in the body and the header. Joins
// turned away from the view after a sellout keep an abuse limit of the process's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RETURN_SPREAD_MIN_MS } from '../../sale-core/errors.js';
import { issuePositionToken } from '../../sale-core/tokens.js';
import { SaleViews, VerifiedPlaces } from '../../sale-core/waiting-room.js';
import {
  ADMIN,
  createSale,
  OPEN_LIMITS,
  purchase,
  SECRET,
  type Shopper,
  shopper,
  startTestSaleCore,
  type TestSaleCore,
  uniqueSaleId,
  until,
} from './support.js';

let core: TestSaleCore;
// Per-shopper poll budget of 3 (no refill to speak of during a test), per-address budget of 5.
let limited: TestSaleCore;
beforeAll(async () => {
  [core, limited] = await Promise.all([
    startTestSaleCore({ settings: OPEN_LIMITS }),
    startTestSaleCore({
      settings: { ...OPEN_LIMITS, shopperRatePerSecond: 0.001, shopperBurst: 3, ipRatePerSecond: 0.001, ipBurst: 5 },
    }),
  ]);
});
afterAll(async () => {
  await Promise.all([core?.close(), limited?.close()]);
});

const join = (c: TestSaleCore, saleId: string, who: Shopper, from = '127.0.0.1') =>
  c.app.inject({
    method: 'POST',
    url: `/sales/${saleId}/queue`,
    headers: { authorization: `Bearer ${who.token}` },
    remoteAddress: from,
  });
const poll = (c: TestSaleCore, saleId: string, who: Shopper, place?: string, from = '127.0.0.1') =>
  c.app.inject({
    method: 'GET',
    url: `/sales/${saleId}/queue`,
    headers: { authorization: `Bearer ${who.token}`, ...(place === undefined ? {} : { 'x-position-token': place }) },
    remoteAddress: from,
  });
const refusal = (res: Awaited<ReturnType<typeof poll>>) => [res.statusCode, res.json().error?.code];

describe('a remembered place', () => {
  it('is still refused for another sale, another shopper, or altered; a forged one is refused every time', async () => {
    const [saleId, other] = await Promise.all([
      createSale(core, { stock: 5, startsInMs: 60_000 }),
      createSale(core, { stock: 5, startsInMs: 60_000 }),
    ]);
    const [who, someone] = [shopper(`${saleId}-who`), shopper(`${saleId}-someone`)];
    const place: string = (await join(core, saleId, who)).json().position_token;
    // Twice: the second poll finds the place remembered.
    for (let i = 0; i < 2; i++) expect((await poll(core, saleId, who, place)).json()).toMatchObject({ status: 'waiting', position: 1 });
    expect(refusal(await poll(core, other, who, place))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    expect(refusal(await poll(core, saleId, someone, place))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    const [body, signature] = place.split('.') as [string, string];
    const better = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body, 'base64url').toString('utf8')), pos: 0 })).toString(
      'base64url',
    );
    expect(refusal(await poll(core, saleId, who, `${better}.${signature}`))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    const forged = issuePositionToken({ saleId, userId: who.userId, position: 1, issuedAt: Date.now() }, 'not-the-secret');
    for (let i = 0; i < 2; i++) expect(refusal(await poll(core, saleId, who, forged))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    // The genuine place still answers after all that.
    expect((await poll(core, saleId, who, place)).statusCode).toBe(200);
  });

  it('is bound the same way when the memory has moved on a generation, and a refused check is not remembered', () => {
    const places = new VerifiedPlaces(SECRET, 2);
    const tokens = [1, 2, 3, 4, 5].map((position) =>
      issuePositionToken({ saleId: 'sale-a', userId: `u${position}`, position, issuedAt: Date.now() }, SECRET),
    );
    // Presented first by the wrong shopper: refused, and not remembered for the right one either way.
    expect(places.check(tokens[0]!, 'sale-a', 'u2')).toBeNull();
    expect(places.check(tokens[0]!, 'sale-a', 'u1')?.position).toBe(1);
    for (const [i, token] of tokens.entries()) expect(places.check(token, 'sale-a', `u${i + 1}`)?.position).toBe(i + 1);
    // Evicted or kept, every place answers only for its own sale and shopper.
    for (const [i, token] of tokens.entries()) {
      expect(places.check(token, 'sale-a', `u${i + 1}`)?.position).toBe(i + 1);
      expect(places.check(token, 'sale-b', `u${i + 1}`)).toBeNull();
      expect(places.check(token, 'sale-a', `u${((i + 1) % 5) + 1}`)).toBeNull();
    }
  });
});

describe('polls', () => {
  it('answer without echoing the place; the join hands it out, on an early "sold out" too', async () => {
    // One unit: the third shopper in the queue waits behind two for one unit ("sold out" for now).
    const saleId = await createSale(core, { stock: 1, startsInMs: 60_000 });
    const crowd = [0, 1, 2].map((i) => shopper(`${saleId}-s${i}`));
    const joins = [];
    for (const who of crowd) joins.push(await join(core, saleId, who));
    expect(joins[0]!.json().position_token).toBe(joins[0]!.headers['x-position-token']);
    const waiting = await poll(core, saleId, crowd[0]!, joins[0]!.json().position_token);
    expect(waiting.json()).toMatchObject({ status: 'waiting', position: 1, ahead: 0 });
    expect(waiting.json().position_token).toBeUndefined();
    expect(waiting.headers['x-position-token']).toBeUndefined();
    expect(waiting.json().retry_after_ms).toBeGreaterThan(0);

    expect([joins[2]!.statusCode, joins[2]!.json().error.code]).toEqual([409, 'SALE_SOLD_OUT']);
    const place = String(joins[2]!.headers['x-position-token']);
    expect(place.split('.')).toHaveLength(2);
    const outnumbered = await poll(core, saleId, crowd[2]!, place);
    expect(refusal(outnumbered)).toEqual([409, 'SALE_SOLD_OUT']);
    expect(Number(outnumbered.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(outnumbered.headers['x-position-token']).toBeUndefined();
  });

  it('of a sale this process has no view of are looked up: an unknown sale is 404, an ended one not live', async () => {
    const who = shopper('nobody');
    const unknown = uniqueSaleId('never-created');
    const place = issuePositionToken({ saleId: unknown, userId: who.userId, position: 1, issuedAt: Date.now() }, SECRET);
    expect(refusal(await poll(core, unknown, who, place))).toEqual([404, 'SALE_NOT_FOUND']);

    const saleId = await createSale(core, { stock: 5, startsInMs: 60_000 });
    const member = shopper(`${saleId}-member`);
    const mine: string = (await join(core, saleId, member)).json().position_token;
    expect((await poll(core, saleId, member, mine)).json().status).toBe('waiting');
    const ended = await core.app.inject({
      method: 'POST',
      url: `/admin/sales/${saleId}/end`,
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    expect(ended.statusCode).toBeLessThan(300);
    // The view learns of the end within a refresh.
    const notLive = await until(
      () => poll(core, saleId, member, mine),
      (res) => res.statusCode === 409,
      10_000,
    );
    expect(refusal(notLive)).toEqual([409, 'SALE_NOT_LIVE']);
  });

  it('are limited per shopper and per address in the process: 429 with Retry-After', async () => {
    const saleId = await createSale(limited, { stock: 5, startsInMs: 60_000 });
    const [first, second] = [shopper(`${saleId}-first`), shopper(`${saleId}-second`)];
    const from = '10.9.9.9';
    const firstPlace: string = (await join(limited, saleId, first, from)).json().position_token;
    const secondPlace: string = (await join(limited, saleId, second, from)).json().position_token;
    // The shopper's budget of 3, then refused (the refused poll spends an address token too).
    for (let i = 0; i < 3; i++) expect((await poll(limited, saleId, first, firstPlace, from)).statusCode).toBe(200);
    const flood = await poll(limited, saleId, first, firstPlace, from);
    expect(refusal(flood)).toEqual([429, 'RATE_LIMITED']);
    expect(Number(flood.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // The address has 1 of its 5 left: one more poll of another shopper, then the address is refused.
    expect((await poll(limited, saleId, second, secondPlace, from)).statusCode).toBe(200);
    const byAddress = await poll(limited, saleId, second, secondPlace, from);
    expect(refusal(byAddress)).toEqual([429, 'RATE_LIMITED']);
    expect(Number(byAddress.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // From another address, the second shopper still has budget.
    expect((await poll(limited, saleId, second, secondPlace, '10.9.9.10')).statusCode).toBe(200);
  });
});

describe('joins turned away from the view once the units are gone', () => {
  it('are limited per shopper and per address in the process: 429 with Retry-After', async () => {
    const saleId = await createSale(limited, { stock: 1 });
    expect((await purchase(limited, saleId, shopper(`${saleId}-buyer`))).statusCode).toBe(202);
    const from = '10.9.8.7';
    // The first join is the script's (it spends a token of the shopper's in Redis, not here) and has the view read.
    const [first, second] = [shopper(`${saleId}-first`), shopper(`${saleId}-second`)];
    expect(refusal(await join(limited, saleId, first, '10.0.0.1'))).toEqual([409, 'SALE_SOLD_OUT']);
    await limited.context.redis.ping(); // replies come in order: the view is kept by now
    // The shopper's budget of 3 in this process, then refused (that join spends the address's fourth token).
    for (let i = 0; i < 3; i++) expect(refusal(await join(limited, saleId, first, from))).toEqual([409, 'SALE_SOLD_OUT']);
    const flood = await join(limited, saleId, first, from);
    expect(refusal(flood)).toEqual([429, 'RATE_LIMITED']);
    expect(Number(flood.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Another shopper from that address: its fifth token, then the address is refused.
    expect(refusal(await join(limited, saleId, second, from))).toEqual([409, 'SALE_SOLD_OUT']);
    expect(refusal(await join(limited, saleId, second, from))).toEqual([429, 'RATE_LIMITED']);
  });
});

describe('"sold out" while a unit is held', () => {
  it('tells the shoppers turned away different moments to come back, none before the first window closes', async () => {
    // One unit, reserved and not paid: its payment window (a minute) closes in about 60 s.
    const saleId = await createSale(core, { stock: 1, windowMinutes: 1 });
    const buyer = shopper(`${saleId}-buyer`);
    const admitted = await join(core, saleId, buyer);
    expect(admitted.json().status).toBe('admitted');
    expect((await purchase(core, saleId, buyer, { ticket: admitted.json().ticket })).statusCode).toBe(202);
    const turnedAway = [];
    for (let i = 0; i < 20; i++) turnedAway.push(await join(core, saleId, shopper(`${saleId}-late-${i}`)));
    const seconds = turnedAway.map((res) => {
      expect(refusal(res)).toEqual([409, 'SALE_SOLD_OUT']);
      expect(res.json().error.message).toMatch(/closes in about (59|60) s/);
      return Number(res.headers['retry-after']);
    });
    for (const s of seconds) {
      expect(s).toBeGreaterThanOrEqual(59);
      expect(s).toBeLessThanOrEqual(90);
    }
    // Spread: 20 shoppers, 31 possible seconds; all alike would be a crowd sent back in step.
    expect(new Set(seconds).size).toBeGreaterThan(3);
  });

  it('spreads a short wait over ten seconds at least', async () => {
    // One unit, reserved and not paid, with a payment window of 1.8 s: the shoppers turned away hear "about 2 s".
    const saleId = await createSale(core, { stock: 1, windowMinutes: 0.03 });
    expect((await purchase(core, saleId, shopper(`${saleId}-buyer`))).statusCode).toBe(202);
    const seconds: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await join(core, saleId, shopper(`${saleId}-late-${i}`));
      if (res.statusCode === 200) break; // the window closed and the unit came back: enough answers
      expect(refusal(res)).toEqual([409, 'SALE_SOLD_OUT']);
      seconds.push(Number(res.headers['retry-after']));
    }
    expect(seconds.length).toBeGreaterThanOrEqual(10);
    for (const s of seconds) {
      expect(s).toBeGreaterThanOrEqual(1);
      expect(s).toBeLessThanOrEqual(Math.ceil((1_800 + RETURN_SPREAD_MIN_MS) / 1000));
    }
    // Without the floor all of them would be told 2 or 3 s; over ten seconds, most are told something later.
    expect(seconds.filter((s) => s > 3).length).toBeGreaterThan(seconds.length / 3);
  });
});

describe('SaleViews.peek', () => {
  it('has nothing before the first read, then the view a poll answers with at once', async () => {
    const saleId = await createSale(core, { stock: 7, startsInMs: 60_000 });
    const views = new SaleViews(core.context.redis);
    expect(views.peek(saleId)).toBeUndefined();
    const view = await views.get(saleId);
    expect(view).toMatchObject({ status: 'scheduled', unitsLeft: 7 });
    expect(views.peek(saleId)).toBe(view);
    // Older than the refresh interval but not stale: still answered at once, while a refresh runs.
    expect(views.peek(saleId, view.fetchedAt + 1000)).toBe(view);
    // Stale: nothing at hand, the caller waits for Redis.
    expect(views.peek(saleId, view.fetchedAt + 5000)).toBeUndefined();
  });
});
