// Real-time offers, while a sale runs: a consumer group on clickstream.v1 and orders.v1 gives each shopper
// refused for stock (a purchase or a queue join refused as sold out) or whose reservation lapsed an offer for
// the follow-up sale (the sale's `follow_up_sale_id`, else the next scheduled sale), by the same rules, budget
// and hold-out as the batch job. The offer goes to Redis first (the shopper may look any second) and the
// decision is recorded in the warehouse `offers` table a moment later, in small batches.
//
// Run id of the real-time path: `rt-<target sale>`, so its hold-out is fixed per target sale and its rows are
// told apart from the batch job's (source = 'realtime').
//
// Bots get nothing: a shopper the latest segmentation called a bot, one with a flagged event in the sale, and
// one refused for stock who never viewed a product in the sale (see SaleBehaviour) are passed over. A shopper
// who already holds an offer for the target sale (a batch run's) keeps it: one offer per shopper per sale.
import type { Redis } from 'ioredis';
import type { Consumer, Kafka } from 'kafkajs';
import { createKafka } from '../../common/kafka.js';
import { createLogger } from '../../common/logger.js';
import { claimShoppers, followUpSaleOf, offerKey, readSaleFacts, type SaleFacts, writeOffers } from '../../common/offers.js';
import { TOPICS } from '../../common/topics.js';
import { selectRows, type WarehouseReader } from '../insights/query.js';
import { decideOffer, OfferBudget } from './assign.js';
import { loadOfferRules, type OfferRules, type OfferTrigger } from './rules.js';

/** Rejection reasons that mean "no stock": the documented one, and the error code sale-core published before. */
const SOLD_OUT_REASONS = new Set(['sold_out', 'SALE_SOLD_OUT']);

export interface RealtimeOffersOptions {
  reader: WarehouseReader;
  redis: Redis;
  kafka?: Kafka;
  rules?: OfferRules;
  groupId?: string;
  topics?: { clickstream: string; orders: string };
  /** Read the topics from the start (tests with their own topics); production reads from where the group is. */
  fromBeginning?: boolean;
  /** How long decisions wait to be recorded together in the warehouse. */
  recordLingerMs?: number;
  /** How long the follow-up sale and its facts are cached per sale. */
  saleCacheMs?: number;
  /** sale-core's set of unfinished sales, where the next scheduled sale is looked for (a test's own set). */
  activeSalesKey?: string;
  /** How long a refusal whose shopper has no product view seen yet waits for one before it counts as a bot's. */
  viewGraceMs?: number;
  /** How long start waits for the consumer to join its group (default 30 s; it keeps trying after). */
  joinTimeoutMs?: number;
}

export interface RealtimeOffers {
  /** Milliseconds from each refusal event's time to its offer being readable in Redis. */
  latencies(): number[];
  offersMade(): number;
  stop(): Promise<void>;
}

interface Trigger {
  trigger: OfferTrigger;
  saleId: string;
  userId: string;
  anonId: string | null;
  ts: number;
}

/**
 * Who looked at a product in which sale, and who was flagged, as far as the consumer has read: sale-core flags
 * only the purchase attempts that reserved, so a bot refused for stock arrives unflagged. It is known by never
 * having viewed a product in the sale (what sale-core's `no_prior_view` means), or by a flagged event of its
 * own earlier in the sale (a bot whose reservation lapsed had its attempt flagged). Bounded: the oldest sales
 * are forgotten first.
 */
export class SaleBehaviour {
  private readonly viewed = new Map<string, Set<string>>();
  private readonly flagged = new Map<string, Set<string>>();
  constructor(private readonly maxSales = 64) {}

  private setOf(map: Map<string, Set<string>>, saleId: string): Set<string> {
    let set = map.get(saleId);
    if (!set) {
      set = new Set();
      map.set(saleId, set);
      if (map.size > this.maxSales) map.delete(map.keys().next().value!);
    }
    return set;
  }

  private static has(map: Map<string, Set<string>>, saleId: string, userId: string, anonId: string | null): boolean {
    const set = map.get(saleId);
    return set !== undefined && (set.has(userId) || (anonId !== null && set.has(anonId)));
  }

  /** Remembers what an event says about its shopper. */
  see(event: unknown): void {
    if (typeof event !== 'object' || event === null) return;
    const e = event as Record<string, unknown>;
    if (typeof e.sale_id !== 'string') return;
    const ids = [e.user_id, e.anon_id].filter((id): id is string => typeof id === 'string' && id !== '');
    if (e.type === 'product_view') for (const id of ids) this.setOf(this.viewed, e.sale_id).add(id);
    if (Array.isArray(e.bot_signals) && e.bot_signals.length > 0) for (const id of ids) this.setOf(this.flagged, e.sale_id).add(id);
  }

  hasViewed(saleId: string, userId: string, anonId: string | null): boolean {
    return SaleBehaviour.has(this.viewed, saleId, userId, anonId);
  }

  isFlagged(saleId: string, userId: string, anonId: string | null): boolean {
    return SaleBehaviour.has(this.flagged, saleId, userId, anonId);
  }
}

/** The trigger an event is, or null. Events are read loosely: only the fields used here are checked. */
export function triggerOf(event: unknown): Trigger | null {
  if (typeof event !== 'object' || event === null) return null;
  const e = event as Record<string, unknown>;
  if (typeof e.sale_id !== 'string' || typeof e.user_id !== 'string' || typeof e.ts !== 'number') return null;
  // A flagged event is no shopper of ours to win back.
  if (Array.isArray(e.bot_signals) && e.bot_signals.length > 0) return null;
  const reason = typeof e.reason === 'string' ? e.reason : null;
  let trigger: OfferTrigger | null = null;
  if ((e.type === 'purchase_rejected' || e.type === 'queue_refused') && reason !== null && SOLD_OUT_REASONS.has(reason))
    trigger = 'refused_for_stock';
  else if (e.type === 'order_expired') trigger = 'reservation_lapsed';
  const anonId = typeof e.anon_id === 'string' && e.anon_id !== '' ? e.anon_id : null;
  return trigger ? { trigger, saleId: e.sale_id, userId: e.user_id, anonId, ts: e.ts } : null;
}

interface TargetState {
  sale: SaleFacts;
  budget: OfferBudget;
  taken: Set<string>;
}

export async function startRealtimeOffers(o: RealtimeOffersOptions): Promise<RealtimeOffers> {
  const log = createLogger('realtime-offers');
  const rules = o.rules ?? loadOfferRules();
  const kafka = o.kafka ?? createKafka('realtime-offers');
  const topics = o.topics ?? { clickstream: TOPICS.clickstream.name, orders: TOPICS.orders.name };
  const cacheMs = o.saleCacheMs ?? 5000;
  const latencies: number[] = [];
  let made = 0;

  // Shoppers the latest segmentation called bots: they never get an offer, even unflagged this time.
  const bots = new Set(
    (
      await selectRows<{ shopper_id: string }>(
        o.reader,
        `SELECT shopper_id FROM shopper_segments GROUP BY shopper_id HAVING argMax(segment, computed_at) = 'bots'`,
        {},
      )
    ).map((r) => r.shopper_id),
  );

  const behaviour = new SaleBehaviour();
  const viewGraceMs = o.viewGraceMs ?? 1000;
  const deferred = new Set<NodeJS.Timeout>();
  const followUps = new Map<string, { id: string | null; at: number }>();
  const targets = new Map<string, Promise<TargetState | null>>();
  const targetLoadedAt = new Map<string, number>();

  async function followUpOf(saleId: string): Promise<string | null> {
    const cached = followUps.get(saleId);
    if (cached && Date.now() - cached.at < cacheMs) return cached.id;
    const id = await followUpSaleOf(o.redis, saleId, Date.now(), o.activeSalesKey);
    followUps.set(saleId, { id, at: Date.now() });
    return id;
  }

  /** Decisions recorded for the sale by anyone (a batch run too) that this process has not counted yet. */
  async function catchUp(saleId: string, state: TargetState): Promise<void> {
    const rows = await selectRows<{ shopper_id: string; rule_id: string; holdout: boolean; discount_cents: number }>(
      o.reader,
      'SELECT shopper_id, rule_id, holdout, discount_cents FROM offers FINAL WHERE sale_id = {saleId:String}',
      { saleId },
      ['discount_cents'],
    );
    for (const r of rows) {
      if (state.taken.has(r.shopper_id)) continue;
      state.taken.add(r.shopper_id);
      if (!r.holdout) state.budget.spend(r.rule_id, r.discount_cents);
    }
  }

  async function loadTarget(saleId: string): Promise<TargetState | null> {
    const sale = await readSaleFacts(o.redis, saleId);
    if (!sale) return null;
    const state: TargetState = { sale, budget: new OfferBudget(), taken: new Set<string>() };
    await catchUp(saleId, state);
    return state;
  }

  function targetOf(saleId: string): Promise<TargetState | null> {
    let state = targets.get(saleId);
    // The budget and who-has-what stay in memory (this process decides for the sale from now on); the sale's
    // facts are refreshed now and then so a sale ended early stops getting offers.
    if (!state) {
      state = loadTarget(saleId);
      targets.set(saleId, state);
      targetLoadedAt.set(saleId, Date.now());
      state.catch(() => targets.delete(saleId));
    } else if (Date.now() - (targetLoadedAt.get(saleId) ?? 0) > cacheMs) {
      targetLoadedAt.set(saleId, Date.now());
      // A batch run for the same sale may have decided shoppers since: its decisions count here too.
      state
        .then(async (s) => {
          const fresh = s && (await readSaleFacts(o.redis, saleId));
          if (s && fresh) s.sale = fresh;
          if (s) await catchUp(saleId, s);
        })
        .catch((error) => log.warn({ err: error, saleId }, 'refreshing the follow-up sale failed; will retry'));
    }
    return state;
  }

  const pending: Record<string, unknown>[] = [];
  let flushing: Promise<void> = Promise.resolve();
  const flush = () => {
    if (pending.length === 0) return flushing;
    const rows = pending.splice(0, pending.length);
    flushing = flushing
      .then(() =>
        o.reader.insert({
          table: 'offers',
          values: rows,
          format: 'JSONEachRow',
          clickhouse_settings: {
            insert_deduplicate: 1,
            insert_deduplication_token: `rt:${rows[0]!.sale_id}:${rows[0]!.shopper_id}:${rows.at(-1)!.shopper_id}:${rows.length}`,
          },
        }),
      )
      .then(
        () => undefined,
        (error) => {
          // Redis already holds these offers; the record is retried on the next flush.
          pending.unshift(...rows);
          log.warn({ err: error }, 'recording real-time offers failed; will retry');
        },
      );
    return flushing;
  };
  const timer = setInterval(flush, o.recordLingerMs ?? 200);

  async function handle(trigger: Trigger): Promise<void> {
    if (bots.has(trigger.userId) || behaviour.isFlagged(trigger.saleId, trigger.userId, trigger.anonId)) return;
    const targetId = await followUpOf(trigger.saleId);
    if (!targetId || targetId === trigger.saleId) return;
    const target = await targetOf(targetId);
    if (!target || target.sale.status === 'ended' || target.sale.endsAt <= Date.now()) return;
    if (target.taken.has(trigger.userId)) return;
    // Claimed before anything is awaited: two triggers of one shopper (a refusal and a lapse on another
    // partition) handled at once must not both decide.
    target.taken.add(trigger.userId);
    // One offer per shopper per sale: an offer already in Redis (a batch run's, not yet caught up) stands.
    if ((await o.redis.exists(offerKey(targetId, trigger.userId))) === 1) return;
    const runId = `rt-${targetId}`;
    const decision = decideOffer(
      { shopperId: trigger.userId, segment: null, salesBought: 0, spentCents: 0, missedOut: 1, trigger: trigger.trigger },
      { runId, rules, sale: target.sale, budget: target.budget },
    );
    if (!decision) {
      target.taken.delete(trigger.userId); // no rule for this trigger: another one may still have one
      return;
    }
    // A batch run deciding for the same sale right now (its records not read here yet) may hold this shopper.
    const claimed = await claimShoppers(o.redis, targetId, runId, [trigger.userId], {
      resume: false,
      expiresAtMs: decision.expiresAtMs,
    });
    if (!claimed.has(trigger.userId)) return;
    if (decision.offer) {
      try {
        await writeOffers(o.redis, targetId, [{ userId: trigger.userId, offer: decision.offer }], decision.expiresAtMs);
      } catch (error) {
        target.taken.delete(trigger.userId);
        throw error;
      }
      latencies.push(Date.now() - trigger.ts);
      made += 1;
    }
    pending.push({
      run_id: runId,
      sale_id: targetId,
      shopper_id: trigger.userId,
      rule_id: decision.rule.id,
      offer_id: decision.offer?.offer_id ?? null,
      kind: decision.rule.offer.kind,
      sku: decision.offer?.sku ?? null,
      price_cents: decision.offer?.price ?? null,
      discount_cents: decision.discountCents,
      early_access_ms: decision.offer?.early_access_ms ?? null,
      holdout: decision.holdout,
      source: 'realtime',
      segment: '',
      why: `${decision.why} in sale ${trigger.saleId}`,
      expires_at: new Date(decision.expiresAtMs).toISOString().replace('T', ' ').replace('Z', ''),
    });
  }

  const consumer: Consumer = kafka.consumer({ groupId: o.groupId ?? 'offers-realtime', maxWaitTimeInMs: 50 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topics.clickstream, topics.orders], fromBeginning: o.fromBeginning ?? false });
  // Started means reading: the group join takes a second or more, and a refusal in that second would wait
  // for it (and count against the latency target) though nothing was wrong.
  let joined!: () => void;
  const hasJoined = new Promise<void>((resolve) => {
    joined = resolve;
  });
  const stopListening = consumer.on(consumer.events.GROUP_JOIN, () => joined());
  await consumer.run({
    partitionsConsumedConcurrently: 4,
    eachMessage: async ({ message }) => {
      let event: unknown;
      try {
        event = JSON.parse(message.value?.toString('utf8') ?? 'null');
      } catch {
        return; // ingest parks malformed events in the dead-letter topic; nothing to offer here
      }
      const trigger = triggerOf(event);
      behaviour.see(event);
      if (!trigger) return;
      if (trigger.trigger === 'refused_for_stock' && !behaviour.hasViewed(trigger.saleId, trigger.userId, trigger.anonId)) {
        // No product view seen: a bot, or a shopper whose anonymous view (keyed by the anon id) sits on another
        // partition not read this far. Looked at again after a grace, without holding up this partition; a
        // refusal still without a view then is a bot's and gets nothing.
        const timer = setTimeout(() => {
          deferred.delete(timer);
          if (!behaviour.hasViewed(trigger.saleId, trigger.userId, trigger.anonId)) return;
          handle(trigger).catch((error) => log.warn({ err: error, userId: trigger.userId }, 'a deferred real-time offer failed'));
        }, viewGraceMs);
        deferred.add(timer);
        return;
      }
      await handle(trigger);
    },
  });

  const joinTimeoutMs = o.joinTimeoutMs ?? 30_000;
  let giveUp: NodeJS.Timeout | undefined;
  const joinedInTime = await Promise.race([
    hasJoined.then(() => true),
    new Promise<boolean>((resolve) => {
      giveUp = setTimeout(() => resolve(false), joinTimeoutMs);
    }),
  ]);
  clearTimeout(giveUp);
  stopListening();
  // Not fatal: the consumer keeps trying to join and reads from where the group is once it has.
  if (!joinedInTime) log.warn({ joinTimeoutMs }, 'the real-time offers consumer has not joined its group yet');

  return {
    latencies: () => [...latencies],
    offersMade: () => made,
    async stop() {
      clearInterval(timer);
      for (const t of deferred) clearTimeout(t);
      deferred.clear();
      await consumer.disconnect();
      await flush();
      await flushing;
    },
  };
}
