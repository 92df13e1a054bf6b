// Offer rules and the offer job against a synthetic history, the warehouse endpoint and the real Redis:
// rules pick exactly the shoppers they should, the hold-out is the share it should be and never gets an
// offer, bots never get one, budgets hold, a rerun doubles nothing and a run killed midway completes.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decideOffer, OfferBudget } from '../../analytics/offers/assign.js';
import { runOfferJob } from '../../analytics/offers/job.js';
import { loadOfferRules, type OfferRules, OfferRulesError, parseOfferRules } from '../../analytics/offers/rules.js';
import { upliftOf } from '../../analytics/offers/uplift.js';
import { followUpSaleOf, readOffer } from '../../common/offers.js';
import { createRedis } from '../../common/redis.js';
import { buildHistory, clickRowsForInsert, orderRowsForInsert, type Persona, SALES } from './insights-history.js';
import { openWarehouseEndpoint, type TestWarehouseEndpoint } from './insights-warehouse.js';
import { createTargetSale, dropSales, TEST_ACTIVE_SALES, uniqueSale } from './offers-support.js';

const history = buildHistory(5);
let wh: TestWarehouseEndpoint;
let redis: Redis;
const sales: string[] = [];

const RULES: OfferRules = parseOfferRules({
  holdout_share: 0.25,
  rules: [
    {
      id: 'missed-out-early',
      when: { segments: ['missed_out'], events: ['refused_for_stock'] },
      offer: { kind: 'early_access', minutes: 10 },
      budget: { max_offers: 1000 },
      expires_after_sale_end_minutes: 30,
    },
    { id: 'champions-priority', when: { segments: ['champions'] }, offer: { kind: 'priority' }, budget: { max_offers: 2 } },
    {
      id: 'win-back-price',
      when: { segments: ['at_risk', 'bargain_hunters'] },
      offer: { kind: 'price', percent_off: 15 },
      // B is the dearest SKU: 15% of 120.00 is 18.00 a unit, limit 1 a shopper; room for two offers.
      budget: { max_offers: 100, max_discount_cents: 3600 },
    },
  ],
});

const SEGMENT_OF: Partial<Record<Persona, string>> = {
  champion: 'champions',
  at_risk: 'at_risk',
  bargain: 'bargain_hunters',
  missed: 'missed_out',
};

/** The test's own hold-out draw: sha256 of "<run>:<shopper>", first four bytes, over 2^32. */
const heldOut = (runId: string, shopper: string, share: number) =>
  createHash('sha256').update(`${runId}:${shopper}`).digest().readUInt32BE(0) / 2 ** 32 < share;

const eligible = (...segments: string[]) =>
  history.shoppers
    .filter((s) => segments.includes(SEGMENT_OF[s.persona] ?? ''))
    .map((s) => s.userId)
    .sort();

interface OfferRow {
  shopper_id: string;
  rule_id: string;
  offer_id: string | null;
  holdout: boolean;
  discount_cents: string;
  kind: string;
  sku: string | null;
  price_cents: string | null;
}

async function offersOf(saleId: string, runId: string): Promise<OfferRow[]> {
  const result = await wh.reader.query({
    query: `SELECT shopper_id, rule_id, offer_id, holdout, discount_cents, kind, sku, price_cents FROM offers
            WHERE sale_id = {sale:String} AND run_id = {run:String} ORDER BY shopper_id`,
    query_params: { sale: saleId, run: runId },
    format: 'JSONEachRow',
  });
  return result.json<OfferRow>();
}

async function countRows(table: string, runId: string): Promise<number> {
  const result = await wh.reader.query({
    query: `SELECT count() AS n FROM ${table} WHERE run_id = {run:String}`,
    query_params: { run: runId },
    format: 'JSONEachRow',
  });
  return Number((await result.json<{ n: string }>())[0]!.n);
}

/** Checks a finished run's decisions against the rules, shopper by shopper, and its offers in Redis. */
async function expectRunFollowsRules(saleId: string, runId: string, endsAt: number) {
  const rows = await offersOf(saleId, runId);
  const byRule = (rule: string, holdout: boolean) =>
    rows.filter((r) => r.rule_id === rule && r.holdout === holdout).map((r) => r.shopper_id);
  // One row per shopper, and only the shoppers some rule names.
  expect(new Set(rows.map((r) => r.shopper_id)).size).toBe(rows.length);
  const bots = history.shoppers.filter((s) => s.persona === 'bot').map((s) => s.userId);
  expect(rows.filter((r) => bots.includes(r.shopper_id))).toEqual([]);

  // Unlimited rule: exactly its segment, split by the hold-out draw.
  const missed = eligible('missed_out');
  expect(byRule('missed-out-early', false)).toEqual(missed.filter((s) => !heldOut(runId, s, 0.25)));
  expect(byRule('missed-out-early', true)).toEqual(missed.filter((s) => heldOut(runId, s, 0.25)));

  // Two offers at most for champions. A held-out champion is recorded only while the budget had room (once
  // it is spent, nobody else would have got the offer either).
  const champions = eligible('champions');
  const championOffers = byRule('champions-priority', false);
  expect(championOffers.length).toBe(Math.min(2, champions.filter((s) => !heldOut(runId, s, 0.25)).length));
  expect(championOffers.every((s) => champions.includes(s) && !heldOut(runId, s, 0.25))).toBe(true);
  expect(byRule('champions-priority', true).every((s) => champions.includes(s) && heldOut(runId, s, 0.25))).toBe(true);

  // The price rule stops at its discount budget (18.00 each, 36.00 in all).
  const winBack = eligible('at_risk', 'bargain_hunters');
  const priceOffers = rows.filter((r) => r.rule_id === 'win-back-price' && !r.holdout);
  expect(priceOffers.length).toBe(Math.min(2, winBack.filter((s) => !heldOut(runId, s, 0.25)).length));
  expect(priceOffers.every((r) => winBack.includes(r.shopper_id) && r.sku === 'B' && r.price_cents === '10200')).toBe(true);
  expect(priceOffers.reduce((n, r) => n + Number(r.discount_cents), 0)).toBeLessThanOrEqual(3600);

  // Redis: every offer readable as recorded, expiring after the sale; hold-outs and everyone else have none.
  for (const shopper of history.shoppers) {
    const row = rows.find((r) => r.shopper_id === shopper.userId && !r.holdout);
    const offer = await readOffer(redis, saleId, shopper.userId);
    if (!row) {
      expect(offer, shopper.userId).toBeNull();
      continue;
    }
    expect(offer).toEqual({
      offer_id: row.offer_id,
      kind: row.kind,
      sku: row.sku,
      price: row.price_cents === null ? null : Number(row.price_cents),
      early_access_ms: row.kind === 'early_access' ? 600_000 : null,
    });
    const expiresAt = Date.now() + (await redis.pttl(`sale:{${saleId}}:offer:${shopper.userId}`));
    const minutesAfterEnd = row.rule_id === 'missed-out-early' ? 30 : 60;
    expect(Math.abs(expiresAt - (endsAt + minutesAfterEnd * 60_000))).toBeLessThan(5_000);
  }
  return rows;
}

beforeAll(async () => {
  wh = await openWarehouseEndpoint('offers');
  await wh.warehouse.insert('clickstream_events', clickRowsForInsert(history.clicks));
  await wh.warehouse.insert('order_facts', orderRowsForInsert(history.orders));
  redis = createRedis();
}, 120_000);

afterAll(async () => {
  if (redis) {
    await dropSales(redis, sales);
    redis.disconnect();
  }
  await wh?.close();
});

describe('offer rules', () => {
  it('the shipped rules file is valid', () => {
    expect(loadOfferRules().rules.length).toBeGreaterThan(0);
  });

  it('refuses a bad file whole, naming every problem and where it is', () => {
    const bad = {
      rules: [
        { id: 'a', when: { segments: ['whales'] }, offer: { kind: 'priority' }, budget: { max_offers: 1 } },
        { id: 'b', when: { segments: ['loyal'] }, offer: { kind: 'price', percent_off: 120 }, budget: { max_offers: 1 }, colour: 'red' },
      ],
    };
    let error: unknown;
    try {
      parseOfferRules(bad, 'rules.json');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OfferRulesError);
    const text = (error as Error).message;
    expect(text).toContain('rules.json');
    expect(text).toContain('/rules/0/when/segments/0');
    expect(text).toContain('/rules/1');

    const semantic = () =>
      parseOfferRules({
        rules: [
          { id: 'x', when: { segments: ['bots'] }, offer: { kind: 'priority' }, budget: { max_offers: 1 } },
          { id: 'x', when: {}, offer: { kind: 'price', percent_off: 10 }, budget: { max_offers: 1 } },
        ],
      });
    expect(semantic).toThrow(/bots never get offers/);
    expect(semantic).toThrow(/another rule has the id "x"/);
    expect(semantic).toThrow(/names no condition/);
    expect(semantic).toThrow(/max_discount_cents/);
  });
});

describe('hold-out and precedence', () => {
  const sale = {
    saleId: 'x',
    status: 'scheduled',
    startsAt: 0,
    endsAt: 1,
    followUpSaleId: null,
    prices: { A: 1000 },
    limits: { A: 1 },
    initialStock: { A: 1 },
  };
  const rules = parseOfferRules({
    rules: [
      { id: 'first', when: { segments: ['loyal'] }, offer: { kind: 'priority' }, budget: { max_offers: 1_000_000 } },
      {
        id: 'second',
        when: { segments: ['loyal', 'champions'] },
        offer: { kind: 'early_access', minutes: 5 },
        budget: { max_offers: 1_000_000 },
      },
    ],
  });

  it('holds out the configured share (10% by default), deterministically, and never gives them an offer', () => {
    const decide = (i: number, runId: string) =>
      decideOffer(
        { shopperId: `u${i}`, segment: 'loyal', salesBought: 1, spentCents: 1, missedOut: 0 },
        { runId, rules, sale, budget: new OfferBudget() },
      )!;
    const decisions = Array.from({ length: 20_000 }, (_, i) => decide(i, 'run-h'));
    const held = decisions.filter((d) => d.holdout);
    expect(held.length / decisions.length).toBeGreaterThan(0.09);
    expect(held.length / decisions.length).toBeLessThan(0.11);
    expect(held.every((d) => d.offer === null && d.discountCents === 0)).toBe(true);
    expect(decisions.filter((d) => !d.holdout).every((d) => d.offer !== null)).toBe(true);
    // The same run holds out the same shoppers; another run draws others.
    expect(Array.from({ length: 2000 }, (_, i) => decide(i, 'run-h').holdout)).toEqual(decisions.slice(0, 2000).map((d) => d.holdout));
    expect(Array.from({ length: 2000 }, (_, i) => decide(i, 'run-other').holdout)).not.toEqual(
      decisions.slice(0, 2000).map((d) => d.holdout),
    );
  });

  it('gives the first matching rule in file order; bots get nothing', () => {
    const budget = new OfferBudget();
    const find = (segment: 'loyal' | 'champions' | 'bots') =>
      Array.from({ length: 50 }, (_, i) =>
        decideOffer({ shopperId: `p${i}`, segment, salesBought: 1, spentCents: 1, missedOut: 0 }, { runId: 'run-p', rules, sale, budget }),
      ).find((d) => d && !d.holdout);
    expect(find('loyal')!.rule.id).toBe('first');
    expect(find('champions')!.rule.id).toBe('second');
    expect(find('bots')).toBeUndefined();
  });
});

describe('the offer job', () => {
  it('selects exactly the shoppers the rules name, within budget, writes Redis, and a rerun doubles nothing', async () => {
    const saleId = uniqueSale('offers-next');
    sales.push(saleId);
    const { endsAt } = await createTargetSale(redis, saleId);
    const result = await runOfferJob({
      reader: wh.reader,
      redis,
      runId: 'job-run-1',
      fromSales: [...SALES],
      forSale: saleId,
      rules: RULES,
    });
    expect(result.alreadyDone).toBe(false);
    const rows = await expectRunFollowsRules(saleId, 'job-run-1', endsAt);
    expect(result.offers + result.holdouts).toBe(rows.length);
    expect(result.offers).toBeGreaterThan(3);

    const before = {
      offers: await countRows('offers', 'job-run-1'),
      segments: await countRows('shopper_segments', 'job-run-1'),
      runs: await countRows('offer_runs', 'job-run-1'),
    };
    const again = await runOfferJob({ reader: wh.reader, redis, runId: 'job-run-1', fromSales: [...SALES], forSale: saleId, rules: RULES });
    expect(again.alreadyDone).toBe(true);
    expect(again.offers).toBe(result.offers);
    expect({
      offers: await countRows('offers', 'job-run-1'),
      segments: await countRows('shopper_segments', 'job-run-1'),
      runs: await countRows('offer_runs', 'job-run-1'),
    }).toEqual(before);

    // Another run for the same sale: one offer per shopper per sale, so nobody decided already gets another.
    const second = await runOfferJob({
      reader: wh.reader,
      redis,
      runId: 'job-run-2',
      fromSales: [...SALES],
      forSale: saleId,
      rules: RULES,
    });
    expect(second.offers + second.holdouts).toBe(0);
  });

  it('a run killed midway completes when run again, with nothing written twice', async () => {
    const saleId = uniqueSale('offers-crash');
    sales.push(saleId);
    const { endsAt } = await createTargetSale(redis, saleId);
    let batches = 0;
    await expect(
      runOfferJob({
        reader: wh.reader,
        redis,
        runId: 'job-crash',
        fromSales: [...SALES],
        forSale: saleId,
        rules: RULES,
        batchSize: 2,
        onProgress: (step) => {
          if (step === 'record' && ++batches === 2) throw new Error('killed');
        },
      }),
    ).rejects.toThrow('killed');
    const partial = await countRows('offers', 'job-crash');
    expect(partial).toBe(4);
    expect(await readOffer(redis, saleId, eligible('missed_out')[0]!)).toBeNull();

    const done = await runOfferJob({
      reader: wh.reader,
      redis,
      runId: 'job-crash',
      fromSales: [...SALES],
      forSale: saleId,
      rules: RULES,
      batchSize: 2,
    });
    expect(done.alreadyDone).toBe(false);
    const rows = await expectRunFollowsRules(saleId, 'job-crash', endsAt);
    expect(await countRows('offers', 'job-crash')).toBe(rows.length);
    expect(rows.length).toBeGreaterThan(partial);
    const segmented = await countRows('shopper_segments', 'job-crash');
    expect(segmented).toBe(history.shoppers.filter((s) => s.persona !== 'browser').length);
  });
});

describe('the follow-up sale', () => {
  it('is the one the sale names, else the next scheduled sale', async () => {
    const [current, soon, later, named] = ['fu-now', 'fu-soon', 'fu-later', 'fu-named'].map(uniqueSale) as [string, string, string, string];
    sales.push(current, soon, later, named);
    await createTargetSale(redis, current, { startsInMs: -60_000 });
    await createTargetSale(redis, later, { startsInMs: 7_200_000 });
    await createTargetSale(redis, soon, { startsInMs: 600_000 });
    expect(await followUpSaleOf(redis, current, Date.now(), TEST_ACTIVE_SALES)).toBe(soon);
    await createTargetSale(redis, named, { startsInMs: 9_000_000 });
    await redis.hset(`sale:{${current}}:meta`, 'follow_up_sale_id', named);
    expect(await followUpSaleOf(redis, current, Date.now(), TEST_ACTIVE_SALES)).toBe(named);
  });
});

describe('the offers command', () => {
  const cli = (...args: string[]) =>
    promisify(execFile)(process.execPath, ['--import', 'tsx', 'analytics/offers/cli.ts', ...args], {
      env: { ...process.env, WAREHOUSE_HTTP_URL: wh.url, WAREHOUSE_OFFERS_PASSWORD: wh.password },
    });

  it('runs a job with a readable table, reruns it as a no-op, and reports uplift', async () => {
    const saleId = uniqueSale('offers-cli');
    sales.push(saleId);
    await createTargetSale(redis, saleId);
    const first = await cli('run', '--from', SALES.join(','), '--for', saleId);
    expect(first.stdout).toMatch(/missed-out-early/);
    expect(first.stdout).toMatch(/┌|\+-/);
    const offered = Number(/(\d+) offers, (\d+) held out/.exec(first.stdout)![1]);
    expect(offered).toBeGreaterThan(3);
    const again = await cli('run', '--from', SALES.join(','), '--for', saleId);
    expect(again.stdout).toMatch(/already done: nothing written again/);
    const report = await cli('report', '--sale', saleId);
    expect(report.stdout).toMatch(/uplift of the offers for sale/);
    expect(report.stdout).toMatch(/Too few shoppers/);
    await expect(cli('run', '--for', saleId)).rejects.toMatchObject({ code: 2 });
  }, 180_000);
});

describe('uplift', () => {
  it('compares offered with hold-out conversion, with a 95% interval and a warning for small samples', () => {
    const outcome = {
      rule_id: 'r',
      offered: 900,
      holdout: 100,
      shown: 800,
      redeemed: 200,
      offered_buyers: 270,
      holdout_buyers: 20,
      offered_revenue_cents: 900 * 1000,
      holdout_revenue_cents: 100 * 500,
      offered_conversion: 0.3,
      holdout_conversion: 0.2,
    };
    const big = upliftOf(outcome);
    const se = Math.sqrt((0.3 * 0.7) / 900 + (0.2 * 0.8) / 100);
    expect(big.difference).toBeCloseTo(0.1, 12);
    expect(big.ci95_low).toBeCloseTo(0.1 - 1.96 * se, 12);
    expect(big.ci95_high).toBeCloseTo(0.1 + 1.96 * se, 12);
    expect(big.offered_revenue_per_shopper_cents).toBe(1000);
    expect(big.holdout_revenue_per_shopper_cents).toBe(500);
    expect(big.warning).toBeNull();
    const small = upliftOf({ ...outcome, offered: 12, holdout: 2, offered_buyers: 3, holdout_buyers: 0 });
    expect(small.warning).toMatch(/Too few shoppers/);
  });
});
