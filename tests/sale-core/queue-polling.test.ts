// Stateless polling (issue 11): a join is the only Redis step of a waiting shopper; a poll verifies the
// signed place and decides in-process. Forged, altered or borrowed places are refused, a poll without a
// join says so, admission follows the positions, polls send nothing to Redis but the per-sale view refresh,
// and an early "sold out" from the cached view never oversells when lapsed reservations bring units back. Once
// the units are gone, joins are turned away from that view too, without Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saleKeys } from '../../sale-core/keys.js';
import { writeOffer } from '../../sale-core/offers.js';
import { readStockLedger } from '../../sale-core/sales.js';
import { issuePositionToken } from '../../sale-core/tokens.js';
import {
  createSale,
  OPEN_LIMITS,
  purchase,
  SECRET,
  type Shopper,
  shopper,
  startTestSaleCore,
  type TestSaleCore,
  ticketFor,
  until,
} from './support.js';

let core: TestSaleCore;
beforeAll(async () => {
  core = await startTestSaleCore({ settings: OPEN_LIMITS });
});
afterAll(async () => {
  await core?.close();
});

const join = (saleId: string, who: Shopper, on: TestSaleCore = core) =>
  on.app.inject({ method: 'POST', url: `/sales/${saleId}/queue`, headers: { authorization: `Bearer ${who.token}` } });
const poll = (saleId: string, who: Shopper, place?: string, on: TestSaleCore = core) =>
  on.app.inject({
    method: 'GET',
    url: `/sales/${saleId}/queue`,
    headers: { authorization: `Bearer ${who.token}`, ...(place === undefined ? {} : { 'x-position-token': place }) },
  });

describe('position tokens', () => {
  it('refuses a forged, altered, or another sale’s or shopper’s place, and a poll without a join', async () => {
    const saleId = await createSale(core, { stock: 5, startsInMs: 60_000 });
    const other = await createSale(core, { stock: 5, startsInMs: 60_000 });
    const [who, someone] = [shopper(`${saleId}-who`), shopper(`${saleId}-someone`)];
    const joined = await join(saleId, who);
    expect(joined.json()).toMatchObject({ status: 'waiting', position: 1 });
    const place: string = joined.json().position_token;
    expect(joined.headers['x-position-token']).toBe(place);
    expect((await poll(saleId, who, place)).json()).toMatchObject({ status: 'waiting', position: 1 });

    const refused = async (res: Awaited<ReturnType<typeof poll>>) => [res.statusCode, res.json().error.code];
    expect(await refused(await poll(saleId, who))).toEqual([404, 'QUEUE_NOT_JOINED']);
    // Signed with another secret: a place made up by the client.
    const forged = issuePositionToken({ saleId, userId: who.userId, position: 1, issuedAt: Date.now() }, 'not-the-secret');
    expect(await refused(await poll(saleId, who, forged))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    // The payload altered (a better place), the signature kept.
    const [body, signature] = place.split('.') as [string, string];
    const better = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(body, 'base64url').toString('utf8')), pos: 0, oid: 'x', ok: 'priority', oea: 0 }),
    ).toString('base64url');
    expect(await refused(await poll(saleId, who, `${better}.${signature}`))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    expect(await refused(await poll(saleId, who, `${body}.${signature}x`))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    // A real place, but of another sale, or of another shopper.
    expect(await refused(await poll(other, who, place))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    expect(await refused(await poll(saleId, someone, place))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    // A session token is not a place either.
    expect(await refused(await poll(saleId, who, who.token))).toEqual([403, 'QUEUE_TOKEN_INVALID']);
    // Genuine tokens of the right secret, for the right sale and shopper, are what admission trusts.
    const genuine = issuePositionToken({ saleId, userId: who.userId, position: 1, issuedAt: Date.now() }, SECRET);
    expect((await poll(saleId, who, genuine)).json().status).toBe('waiting');
  });
});

describe('polls', () => {
  it('send nothing to Redis but one view refresh per sale every few hundred ms', async () => {
    // A process without the relay and the sweeper, whose timers would otherwise send their own commands on the
    // same connection whenever the polls let the event loop turn: what is counted here is the polls' alone.
    const quiet = await startTestSaleCore({ settings: OPEN_LIMITS, background: false, topics: core.topics });
    try {
      const saleId = await createSale(quiet, { stock: 5, startsInMs: 60_000 });
      const who = shopper(`${saleId}-poller`);
      const place: string = (await join(saleId, who, quiet)).json().position_token;
      expect((await poll(saleId, who, place, quiet)).statusCode).toBe(200); // the view is warm
      const redis = quiet.context.redis;
      const sent: string[] = [];
      const original = redis.sendCommand.bind(redis);
      redis.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
        sent.push(command.name);
        return (original as (...args: unknown[]) => unknown)(command, ...rest);
      }) as typeof redis.sendCommand;
      const started = Date.now();
      let polls = 0;
      try {
        for (; polls < 300; polls++) expect((await poll(saleId, who, place, quiet)).json().status).toBe('waiting');
      } finally {
        redis.sendCommand = original;
      }
      const refreshes = Math.ceil((Date.now() - started) / 250) + 1;
      // Only the sale's view refresh reaches Redis (one script call each), however many polls.
      expect(sent.length).toBeLessThanOrEqual(refreshes);
      expect(sent.every((name) => name === 'evalsha' || name === 'eval')).toBe(true);
      expect(sent.length).toBeLessThan(polls / 10);
    } finally {
      await quiet.close();
    }
  });

  it('admit in position order; a priority offer skips the queue', async () => {
    // One admission every 250 ms after a burst of one.
    const saleId = await createSale(core, { stock: 100, admissionRate: 4, admissionBurst: 1, startsInMs: -10 });
    const crowd = Array.from({ length: 8 }, (_, i) => shopper(`${saleId}-s${i}`));
    const places: string[] = [];
    const admitted = new Set<number>();
    for (const [i, who] of crowd.entries()) {
      const joined = await join(saleId, who);
      expect(joined.json().position).toBe(i + 1);
      if (joined.json().status === 'admitted') admitted.add(i + 1);
      places.push(String(joined.headers['x-position-token']));
    }
    expect(admitted.has(1)).toBe(true);
    const prio = shopper(`${saleId}-prio`);
    await writeOffer(core.context.redis, saleId, prio.userId, {
      offer_id: 'prio-9',
      kind: 'priority',
      sku: null,
      price: null,
      early_access_ms: null,
    });
    expect((await join(saleId, prio)).json()).toMatchObject({ status: 'admitted', position: 9 });

    // Rounds from the back of the queue to the front: a poll later in a round is later in time, so once a
    // place is admitted every lower place polled after it must be too.
    const deadline = Date.now() + 30_000;
    while (admitted.size < crowd.length && Date.now() < deadline) {
      let seenAdmitted = false;
      for (let i = crowd.length - 1; i >= 0; i--) {
        if (admitted.has(i + 1)) {
          seenAdmitted = true;
          continue;
        }
        const answer = (await poll(saleId, crowd[i]!, places[i])).json();
        if (answer.status === 'admitted') {
          admitted.add(i + 1);
          seenAdmitted = true;
        } else {
          expect([i + 1, answer.status, seenAdmitted]).toEqual([i + 1, 'waiting', false]);
          expect(answer.ahead).toBeGreaterThanOrEqual(0);
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(admitted.size).toBe(crowd.length);
  });

  it('early access admits before the start from the place alone', async () => {
    const saleId = await createSale(core, { stock: 5, startsInMs: 60_000, admissionRate: 1, admissionBurst: 0 });
    const [vip, regular] = [shopper(`${saleId}-vip`), shopper(`${saleId}-regular`)];
    await writeOffer(core.context.redis, saleId, vip.userId, {
      offer_id: 'ea-1',
      kind: 'early_access',
      sku: null,
      price: null,
      early_access_ms: 120_000,
    });
    const regularPlace = (await join(saleId, regular)).json().position_token;
    expect((await poll(saleId, regular, regularPlace)).json().status).toBe('waiting');
    const vipJoin = (await join(saleId, vip)).json();
    expect(vipJoin.status).toBe('admitted');
  });
});

describe('sold out from the cached view', () => {
  it('says "sold out" early while units are held, admits when lapsed reservations bring them back, and never oversells', async () => {
    const saleId = await createSale(core, { stock: 2, windowMinutes: 0.02 }); // 1.2 s payment window
    const waiter = shopper(`${saleId}-waiter`);
    const joined = await join(saleId, waiter);
    expect(joined.json().status).toBe('admitted'); // units left at the join; the waiter keeps the place and polls on
    const place = String(joined.headers['x-position-token']);
    // Two shoppers take both units and never pay.
    for (const u of ['a', 'b']) expect((await purchase(core, saleId, shopper(`${saleId}-${u}`))).statusCode).toBe(202);
    // The poll hears "sold out, not final" from its view once it refreshes, without asking Redis per poll.
    const held = await until(
      () => poll(saleId, waiter, place),
      (res) => res.statusCode === 409,
      10_000,
    );
    expect([held.json().error.code, Number(held.headers['retry-after']) >= 1]).toEqual(['SALE_SOLD_OUT', true]);
    // The windows close, the sweeper returns the units, the view refreshes: admitted again.
    const back = await until(
      () => poll(saleId, waiter, place),
      (res) => res.statusCode === 200 && res.json().status === 'admitted',
      15_000,
    );
    expect(back.json().status).toBe('admitted');
    // A crowd with tickets races the waiter for the two units that came back: two reservations, no more.
    const racers = Array.from({ length: 6 }, (_, i) => shopper(`${saleId}-racer-${i}`));
    const answers = await Promise.all([
      purchase(core, saleId, waiter, { ticket: back.json().ticket }),
      ...racers.map((r) => purchase(core, saleId, r, { ticket: ticketFor(saleId, r.userId) })),
    ]);
    expect(answers.filter((a) => a.statusCode === 202)).toHaveLength(2);
    for (const a of answers.filter((x) => x.statusCode !== 202)) expect(a.json().error.code).toBe('SALE_SOLD_OUT');
    const ledger = await readStockLedger(core.context.redis, saleId);
    expect(ledger.available['SKU-1']).toBe(0);
    expect((ledger.reserved['SKU-1'] ?? 0) + (ledger.sold['SKU-1'] ?? 0)).toBe(2);
  });
});

describe('joins once the units are gone', () => {
  it('are turned away from the cached view without Redis, and get places again when lapsed reservations bring units back', async () => {
    const saleId = await createSale(core, { stock: 1, windowMinutes: 0.05 }); // 3 s payment window
    expect((await purchase(core, saleId, shopper(`${saleId}-buyer`))).statusCode).toBe(202); // held, never paid
    // The first join after the sellout is the script's; it also has the process read the sale for the joins to come.
    const first = await join(saleId, shopper(`${saleId}-first`));
    expect([first.statusCode, first.json().error.code]).toEqual([409, 'SALE_SOLD_OUT']);
    await core.context.redis.ping(); // replies come in order: that read is answered, and the view kept, by now
    const redis = core.context.redis;
    // The commands this process sends meanwhile that name the sale's queue: the join script's.
    const joinScripts: string[] = [];
    const original = redis.sendCommand.bind(redis);
    redis.sendCommand = ((command: { name: string; args: unknown[] }, ...rest: unknown[]) => {
      if (command.args.some((arg) => String(arg) === saleKeys(saleId).queue)) joinScripts.push(command.name);
      return (original as (...args: unknown[]) => unknown)(command, ...rest);
    }) as typeof redis.sendCommand;
    const crowd = Array.from({ length: 50 }, (_, i) => shopper(`${saleId}-late-${i}`));
    const answers: Awaited<ReturnType<typeof join>>[] = [];
    try {
      for (const late of crowd) answers.push(await join(saleId, late));
    } finally {
      redis.sendCommand = original;
    }
    for (const a of answers) {
      expect([a.statusCode, a.json().error.code]).toEqual([409, 'SALE_SOLD_OUT']);
      expect(Number(a.headers['retry-after'])).toBeGreaterThanOrEqual(1); // not final: a unit is held
    }
    // No join script ran (what else reached Redis meanwhile is the view's refresh every 250 ms and the relay's and
    // sweeper's background work), so no shopper of the crowd has a rate bucket in Redis either.
    expect(joinScripts).toEqual([]);
    expect(await redis.exists(...crowd.map((late) => saleKeys(saleId).rateByShopper(late.userId)))).toBe(0);
    // The buyer's window closes, the sweeper returns the unit, the view refreshes: a join gets a place again.
    const placed = await until(
      () => join(saleId, crowd[0]!),
      (res) => res.statusCode === 200,
      15_000,
    );
    expect(placed.json()).toMatchObject({ status: 'admitted', position: 1 });
  });
});
