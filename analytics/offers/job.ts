// The offer job: segment the shoppers of past sales, decide each one's offer for the target sale by the
// rules, record every decision (offers and hold-outs) in the warehouse `offers` table, and write the offers
// to Redis for the sale core to apply.
//
// Reruns: a run id names one run. Every step is recorded in `offer_runs`; a run already `done` writes nothing
// again. A run that died midway continues: the segments it wrote are read back rather than recomputed, the
// decisions it recorded stand (and count against the budget), only the shoppers without one are decided, and
// Redis gets every offer of the run again (writing an offer is idempotent). Decisions are recorded before their
// offers go to Redis, so a shopper never holds an offer the warehouse does not know of.
import type { Redis } from 'ioredis';
import { claimShoppers, readSaleFacts, type SaleFacts, writeOffers } from '../../common/offers.js';
import { requireSale, selectRows, type WarehouseReader } from '../insights/query.js';
import { type SegmentationTimings, segmentShoppers } from '../segments/index.js';
import type { Segment } from '../segments/score.js';
import { decideOffer, OfferBudget, type OfferCandidate, type OfferDecision } from './assign.js';
import type { OfferRules } from './rules.js';

export class OfferJobError extends Error {
  constructor(
    readonly code: 'OFFER_SALE_NOT_FOUND' | 'OFFER_SALE_OVER' | 'OFFER_BAD_RUN',
    message: string,
  ) {
    super(message);
    this.name = 'OfferJobError';
  }
}

export type OfferJobStep = 'segments' | 'decide' | 'record' | 'redis';

export interface OfferJobOptions {
  reader: WarehouseReader;
  redis: Redis;
  runId: string;
  fromSales: readonly string[];
  forSale: string;
  rules: OfferRules;
  /** Rows per warehouse insert and per Redis transaction. */
  batchSize?: number;
  /** Progress, per step: done of total. Throwing here stops the run (the tests use it to kill one midway). */
  onProgress?: (step: OfferJobStep, done: number, total: number) => void;
  now?: number;
}

export interface OfferJobResult {
  runId: string;
  alreadyDone: boolean;
  shoppers: number;
  offers: number;
  holdouts: number;
  byRule: { rule_id: string; offers: number; holdouts: number; discount_cents: number }[];
  segments: { segment: string; shoppers: number }[];
  timings: Partial<SegmentationTimings> & { decideMs?: number; recordMs?: number; redisWriteMs?: number; totalMs: number };
}

interface RecordedDecision {
  run_id: string;
  shopper_id: string;
  rule_id: string;
  offer_id: string | null;
  kind: string;
  sku: string | null;
  price_cents: number | null;
  discount_cents: number;
  early_access_ms: number | null;
  holdout: boolean;
  expires_at_ms: number;
}

const OFFER_COLUMNS: [string, ...string[]] = [
  'run_id',
  'sale_id',
  'shopper_id',
  'rule_id',
  'offer_id',
  'kind',
  'sku',
  'price_cents',
  'discount_cents',
  'early_access_ms',
  'holdout',
  'source',
  'segment',
  'why',
  'expires_at',
];

/** A time as the warehouse reads DateTime64(3) text: 'YYYY-MM-DD hh:mm:ss.sss' (UTC). */
function warehouseTime(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

async function runSteps(reader: WarehouseReader, runId: string): Promise<Set<string>> {
  const rows = await selectRows<{ step: string }>(reader, 'SELECT DISTINCT step FROM offer_runs WHERE run_id = {runId:String}', { runId });
  return new Set(rows.map((r) => r.step));
}

async function recordStep(
  reader: WarehouseReader,
  o: OfferJobOptions,
  step: 'started' | 'segmented' | 'done',
  shoppers: number,
  digest: string,
): Promise<void> {
  await reader.insert({
    table: 'offer_runs',
    values: [
      {
        run_id: o.runId,
        step,
        from_sales: [...o.fromSales],
        for_sale: o.forSale,
        holdout_share: o.rules.holdout_share,
        rules_digest: digest,
        shoppers,
      },
    ],
    format: 'JSONEachRow',
    clickhouse_settings: { insert_deduplicate: 1, insert_deduplication_token: `${o.runId}:run:${step}` },
  });
}

function digestOf(rules: OfferRules): string {
  return Buffer.from(JSON.stringify(rules)).toString('base64url').slice(0, 64);
}

/** Candidates from the run's recorded segments (the source of truth once segmentation finished). */
async function candidatesOfRun(reader: WarehouseReader, runId: string): Promise<OfferCandidate[]> {
  const rows = await selectRows<{ shopper_id: string; segment: Segment; sales_bought: number; spent_cents: number; missed_out: number }>(
    reader,
    `SELECT shopper_id, segment, sales_bought, spent_cents, missed_out FROM shopper_segments FINAL
     WHERE run_id = {runId:String} ORDER BY shopper_id`,
    { runId },
    ['sales_bought', 'spent_cents', 'missed_out'],
  );
  return rows.map((r) => ({
    shopperId: r.shopper_id,
    segment: r.segment,
    salesBought: r.sales_bought,
    spentCents: r.spent_cents,
    missedOut: r.missed_out,
  }));
}

/** The order shoppers are offered in when a budget runs out: fixed by the run, the same on every rerun. */
function fairOrder(candidates: OfferCandidate[], runId: string): OfferCandidate[] {
  const key = (id: string) => fnv32(`${runId}|order|${id}`);
  return candidates
    .map((c) => ({ c, k: key(c.shopperId) }))
    .sort((a, b) => a.k - b.k || (a.c.shopperId < b.c.shopperId ? -1 : 1))
    .map(({ c }) => c);
}

/** FNV-1a, 32 bits: a cheap, stable shuffle key (the hold-out draw itself uses sha256). */
function fnv32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function toRecorded(d: OfferDecision, runId: string): RecordedDecision {
  const o = d.rule.offer;
  return {
    run_id: runId,
    shopper_id: d.shopperId,
    rule_id: d.rule.id,
    offer_id: d.offer?.offer_id ?? null,
    kind: o.kind,
    sku: d.offer?.sku ?? null,
    price_cents: d.offer?.price ?? null,
    discount_cents: d.discountCents,
    early_access_ms: d.offer?.early_access_ms ?? null,
    holdout: d.holdout,
    expires_at_ms: d.expiresAtMs,
  };
}

export async function runOfferJob(o: OfferJobOptions): Promise<OfferJobResult> {
  const started = performance.now();
  if (!RUN_ID.test(o.runId))
    throw new OfferJobError('OFFER_BAD_RUN', `a run id is 1-64 letters, digits, ".", "_", ":" or "-", got ${JSON.stringify(o.runId)}`);
  requireSale(o.forSale);
  o.fromSales.forEach(requireSale);
  const batchSize = o.batchSize ?? 20_000;
  const now = o.now ?? Date.now();
  const sale: SaleFacts | null = await readSaleFacts(o.redis, o.forSale);
  if (!sale) throw new OfferJobError('OFFER_SALE_NOT_FOUND', `there is no sale ${o.forSale} in Redis to make offers for: create it first`);
  if (sale.status === 'ended' || sale.endsAt <= now)
    throw new OfferJobError('OFFER_SALE_OVER', `sale ${o.forSale} is over: offers for it would never be used`);
  const digest = digestOf(o.rules);
  const steps = await runSteps(o.reader, o.runId);
  const result: OfferJobResult = {
    runId: o.runId,
    alreadyDone: false,
    shoppers: 0,
    offers: 0,
    holdouts: 0,
    byRule: [],
    segments: [],
    timings: { totalMs: 0 },
  };

  if (steps.has('done')) {
    const recorded = await recordedDecisions(o.reader, o.forSale, o.runId);
    Object.assign(result, summarise(recorded), { alreadyDone: true });
    result.timings.totalMs = performance.now() - started;
    return result;
  }
  if (!steps.has('started')) await recordStep(o.reader, o, 'started', 0, digest);

  // 1. Segments: computed once per run; a rerun reads back what the first attempt wrote.
  let candidates: OfferCandidate[];
  if (!steps.has('segmented')) {
    const segmented = await segmentShoppers(o.reader, {
      runId: o.runId,
      fromSales: o.fromSales,
      onProgress: (step, done) => {
        if (step === 'write') o.onProgress?.('segments', done, done);
      },
    });
    Object.assign(result.timings, segmented.timings);
    await recordStep(o.reader, o, 'segmented', segmented.scored.features.shopper_id.length, digest);
    // What was just written, without reading it back (shopper ids ascending, as a read-back would give).
    const f = segmented.scored.features;
    candidates = f.shopper_id.map((shopperId, i) => ({
      shopperId,
      segment: segmented.scored.segment[i]!,
      salesBought: f.sales_bought[i]!,
      spentCents: f.spent_cents[i]!,
      missedOut: f.missed_out[i]!,
    }));
  } else {
    candidates = await candidatesOfRun(o.reader, o.runId);
  }
  result.shoppers = candidates.length;
  result.segments = summariseSegments(candidates);

  // 2. Decide, for the shoppers this run has not decided yet, against the budget every earlier decision used.
  const decideStarted = performance.now();
  const recordedBefore = await recordedDecisions(o.reader, o.forSale);
  const mineBefore = recordedBefore.filter((r) => r.run_id === o.runId);
  const budget = new OfferBudget();
  const taken = new Set<string>();
  for (const r of recordedBefore) {
    taken.add(r.shopper_id);
    if (!r.holdout) budget.spend(r.rule_id, r.discount_cents);
  }
  const decided: OfferDecision[] = [];
  for (const c of fairOrder(candidates, o.runId)) {
    if (taken.has(c.shopperId)) continue;
    const decision = decideOffer(c, { runId: o.runId, rules: o.rules, sale, budget });
    if (decision) decided.push(decision);
  }
  // The real-time consumer may decide for some of these shoppers while this run works (a refusal in a sale
  // still running): only the shoppers this run claims in Redis are its own. One lost to it keeps the budget it
  // took here, which errs on the side of spending less.
  const held = await claimShoppers(
    o.redis,
    o.forSale,
    o.runId,
    decided.map((d) => d.shopperId),
    { resume: true, expiresAtMs: decided[0]?.expiresAtMs },
  );
  const fresh = decided.filter((d) => held.has(d.shopperId));
  fresh.sort((a, b) => (a.shopperId < b.shopperId ? -1 : a.shopperId > b.shopperId ? 1 : 0));
  result.timings.decideMs = performance.now() - decideStarted;

  // 3. Record the decisions (the warehouse is the record of who got what, hold-outs included).
  const recordStarted = performance.now();
  const segmentByShopper = new Map(candidates.map((c) => [c.shopperId, c.segment ?? '']));
  const expiresText = new Map(fresh.map((d) => [d.expiresAtMs, warehouseTime(d.expiresAtMs)]));
  for (let i = 0; i < fresh.length; i += batchSize) {
    const batch = fresh.slice(i, i + batchSize);
    await o.reader.insert({
      table: 'offers',
      // Arrays in OFFER_COLUMNS order (JSONCompactEachRow): half the bytes of keyed objects at a million rows.
      values: batch.map((d) => [
        o.runId,
        o.forSale,
        d.shopperId,
        d.rule.id,
        d.offer?.offer_id ?? null,
        d.rule.offer.kind,
        d.offer?.sku ?? null,
        d.offer?.price ?? null,
        d.discountCents,
        d.offer?.early_access_ms ?? null,
        d.holdout,
        'batch',
        segmentByShopper.get(d.shopperId) ?? '',
        d.why,
        expiresText.get(d.expiresAtMs) ?? warehouseTime(d.expiresAtMs),
      ]),
      format: 'JSONCompactEachRow',
      columns: OFFER_COLUMNS,
      clickhouse_settings: {
        insert_deduplicate: 1,
        insert_deduplication_token: `${o.runId}:offers:${batch[0]!.shopperId}:${batch.at(-1)!.shopperId}:${batch.length}`,
      },
    });
    o.onProgress?.('record', Math.min(fresh.length, i + batchSize), fresh.length);
  }
  result.timings.recordMs = performance.now() - recordStarted;

  // 4. Redis: every offer of this run (the ones an earlier attempt recorded too), grouped by expiry.
  const all = [...mineBefore, ...fresh.map((d) => toRecorded(d, o.runId))];
  const mine = all.filter((r) => !r.holdout && r.offer_id);
  const redisStarted = performance.now();
  const byExpiry = new Map<number, RecordedDecision[]>();
  for (const r of mine) {
    if (!byExpiry.has(r.expires_at_ms)) byExpiry.set(r.expires_at_ms, []);
    byExpiry.get(r.expires_at_ms)!.push(r);
  }
  let written = 0;
  for (const [expiresAt, rows] of byExpiry) {
    for (let i = 0; i < rows.length; i += batchSize) {
      const batch = rows.slice(i, i + batchSize);
      await writeOffers(
        o.redis,
        o.forSale,
        batch.map((r) => ({
          userId: r.shopper_id,
          offer: {
            offer_id: r.offer_id!,
            kind: r.kind as 'price' | 'early_access' | 'priority',
            sku: r.sku,
            price: r.price_cents,
            early_access_ms: r.early_access_ms,
          },
        })),
        expiresAt,
      );
      written += batch.length;
      o.onProgress?.('redis', written, mine.length);
    }
  }
  result.timings.redisWriteMs = performance.now() - redisStarted;

  Object.assign(result, summarise(all));
  await recordStep(o.reader, o, 'done', result.shoppers, digest);
  result.timings.totalMs = performance.now() - started;
  return result;
}

/** Decisions recorded for a sale (every run, or one run). */
async function recordedDecisions(reader: WarehouseReader, saleId: string, runId?: string): Promise<RecordedDecision[]> {
  return selectRows<RecordedDecision>(
    reader,
    `SELECT run_id, shopper_id, rule_id, offer_id, kind, sku, price_cents, discount_cents, early_access_ms, holdout,
            toUnixTimestamp64Milli(expires_at) AS expires_at_ms
     FROM offers FINAL
     WHERE sale_id = {saleId:String} AND ({runId:String} = '' OR run_id = {runId:String})
     ORDER BY shopper_id`,
    { saleId, runId: runId ?? '' },
    ['price_cents', 'discount_cents', 'early_access_ms', 'expires_at_ms'],
  );
}

function summarise(rows: RecordedDecision[]): Pick<OfferJobResult, 'offers' | 'holdouts' | 'byRule'> {
  const byRule = new Map<string, { rule_id: string; offers: number; holdouts: number; discount_cents: number }>();
  for (const r of rows) {
    const s = byRule.get(r.rule_id) ?? { rule_id: r.rule_id, offers: 0, holdouts: 0, discount_cents: 0 };
    if (r.holdout) s.holdouts += 1;
    else {
      s.offers += 1;
      s.discount_cents += r.discount_cents;
    }
    byRule.set(r.rule_id, s);
  }
  const list = [...byRule.values()].sort((a, b) => a.rule_id.localeCompare(b.rule_id));
  return { offers: list.reduce((n, r) => n + r.offers, 0), holdouts: list.reduce((n, r) => n + r.holdouts, 0), byRule: list };
}

function summariseSegments(candidates: OfferCandidate[]): { segment: string; shoppers: number }[] {
  const counts = new Map<string, number>();
  for (const c of candidates) counts.set(c.segment ?? '', (counts.get(c.segment ?? '') ?? 0) + 1);
  return [...counts.entries()].map(([segment, shoppers]) => ({ segment, shoppers })).sort((a, b) => a.segment.localeCompare(b.segment));
}
