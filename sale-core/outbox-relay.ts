// The outbox relay: moves order events from each sale's Redis outbox stream to Kafka, in order, and
// deletes from the stream only what Kafka acknowledged. The purchase script writes the reservation and
// its outbox entry in one step, so an order event is never lost: a Kafka outage only delays it.
// A crash between Kafka's ack and the trim re-sends entries with the same event_id; consumers dedup on it.
//
// Many sale-core processes may run a relay: a per-sale lease (SET NX PX) lets one of them move a
// sale's outbox at a time, which keeps the order of one sale's events. The lease is renewed by a
// heartbeat, not by the pass, so a slow Kafka send does not hand the same entries to a second relay;
// only a relay that is gone (or stalled for a whole lease) loses its sales.
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { EventMessage, EventProducer } from '../common/event-producer.js';
import { decodeEvent } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { counter, gauge } from '../common/metrics.js';
import { saleKeys } from './keys.js';

const relayed = counter({ name: 'flashsale_outbox_relayed_total', help: 'Order events the relay published and Kafka acknowledged.' });
const relayFailures = counter({
  name: 'flashsale_outbox_relay_failures_total',
  help: 'Relay batches Kafka did not acknowledge (retried).',
});
const unpublishable = counter({
  name: 'flashsale_outbox_unpublishable_total',
  help: 'Outbox entries that broke the event contract, moved to sale:{id}:outbox:set-aside instead of published (a bug: investigate).',
});
const backlog = gauge({ name: 'flashsale_outbox_backlog', help: 'Order events waiting in outboxes at the last relay pass.' });

const RENEW_LEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;

export interface OutboxRelayOptions {
  redis: Redis;
  /** A new idempotent producer: one at the start, and a fresh one after a failed pass. */
  producer: () => EventProducer;
  topic: string;
  /** The set of sale ids to relay (ACTIVE_SALES in production; a test's own set in tests). */
  activeSalesKey: string;
  log: Logger;
  intervalMs: number;
  batchSize?: number;
  leaseMs?: number;
}

export class OutboxRelay {
  private producer: EventProducer | null = null;
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly owner = randomUUID();
  private wake: (() => void) | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private readonly held = new Set<string>();
  private backlogMeasuredAt = 0;
  private active: { ids: string[]; at: number } = { ids: [], at: 0 };
  published = 0;

  constructor(private readonly options: OutboxRelayOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
    const lease = this.options.leaseMs ?? 10_000;
    this.heartbeat = setInterval(() => void this.renewLeases(lease), Math.floor(lease / 3));
  }

  private async renewLeases(lease: number): Promise<void> {
    for (const saleId of this.held) {
      const renewed = await this.options.redis.eval(RENEW_LEASE, 1, saleKeys(saleId).relayLease, this.owner, lease).catch(() => 1); // Redis away: keep it; the next pass re-checks
      if (Number(renewed) !== 1) this.held.delete(saleId);
    }
  }

  /** Asks for a pass now (after a purchase) instead of waiting out the interval. */
  nudge(): void {
    this.wake?.();
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (this.running) {
      let moved = 0;
      try {
        // Idempotent producer: Kafka drops its own retries of a batch, so a retried send is not a duplicate.
        this.producer ??= this.options.producer();
        moved = await this.passOverSales(this.producer);
        failures = 0;
      } catch (error) {
        failures++;
        relayFailures.inc();
        this.options.log.warn({ err: error, failures }, 'outbox relay pass failed; will retry');
        // A broken producer (broker gone, fenced sequence) is replaced; the entries are still in Redis.
        const broken = this.producer;
        this.producer = null;
        await broken?.close().catch(() => {});
      }
      if (!this.running) break;
      // A full batch means more is waiting: go again at once. Otherwise linger, so the next pass
      // carries a batch instead of one event per round trip.
      if (moved < (this.options.batchSize ?? 500) || failures > 0) {
        const delay = failures > 0 ? Math.min(2000, 100 * 2 ** Math.min(failures, 5)) : this.options.intervalMs;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = null;
      }
    }
  }

  /** The active sale ids, re-read at most every 500 ms (a new sale waits that long for its first relay). */
  private async activeSales(): Promise<string[]> {
    if (Date.now() - this.active.at > 500)
      this.active = { ids: await this.options.redis.smembers(this.options.activeSalesKey), at: Date.now() };
    return this.active.ids;
  }

  /** One pass: for each active sale whose lease we hold, publish one batch. Returns events moved. */
  async passOverSales(producer: EventProducer): Promise<number> {
    const { redis } = this.options;
    const saleIds = await this.activeSales();
    let moved = 0;
    let waiting = 0;
    const measure = Date.now() - this.backlogMeasuredAt > 1000;
    for (const saleId of saleIds) {
      const keys = saleKeys(saleId);
      const lease = this.options.leaseMs ?? 10_000;
      const taken = await redis.set(keys.relayLease, this.owner, 'PX', lease, 'NX');
      if (taken !== 'OK') {
        const renewed = await redis.eval(RENEW_LEASE, 1, keys.relayLease, this.owner, lease);
        if (Number(renewed) !== 1) {
          this.held.delete(saleId);
          continue;
        }
      }
      this.held.add(saleId);
      moved += await this.relaySale(producer, keys.outbox);
      if (measure) waiting += await redis.xlen(keys.outbox);
    }
    if (measure) {
      backlog.set(waiting);
      this.backlogMeasuredAt = Date.now();
    }
    return moved;
  }

  private async relaySale(producer: EventProducer, outbox: string): Promise<number> {
    const { redis } = this.options;
    const entries = await redis.xrange(outbox, '-', '+', 'COUNT', this.options.batchSize ?? 500);
    if (entries.length === 0) return 0;
    const messages: EventMessage[] = [];
    for (const [id, fields] of entries) {
      const key = fields[fields.indexOf('k') + 1];
      const value = fields[fields.indexOf('e') + 1];
      if (key === undefined || value === undefined) continue;
      try {
        decodeEvent(value); // an entry that breaks the contract would poison every consumer: keep it out
      } catch (error) {
        this.options.log.error({ err: error, id, value }, 'outbox entry breaks the event contract; set aside, not published');
        unpublishable.inc();
        await redis.xadd(`${outbox}:set-aside`, '*', 'k', key, 'e', value); // kept for a person to look at
        continue;
      }
      messages.push({ key, value });
    }
    if (messages.length > 0) {
      await producer.send(this.options.topic, messages);
    }
    // Only after Kafka acknowledged every message of the batch. The batch is the stream's head (read from '-'),
    // and stream ids only grow, so trimming below the next id removes exactly these entries, and costs Redis
    // (and its append-only file) one short command instead of an XDEL naming every id.
    const last = entries[entries.length - 1]![0];
    const dash = last.indexOf('-');
    await redis.xtrim(outbox, 'MINID', `${last.slice(0, dash)}-${BigInt(last.slice(dash + 1)) + 1n}`);
    this.published += messages.length;
    relayed.inc(messages.length);
    return entries.length;
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.wake?.();
    await this.loop;
    await this.producer?.close().catch(() => {});
    this.producer = null;
  }

  /** Waits until every active sale's outbox is empty (used by tests and graceful shutdown). */
  async drained(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const saleIds = await this.options.redis.smembers(this.options.activeSalesKey);
      let waiting = 0;
      for (const saleId of saleIds) waiting += await this.options.redis.xlen(saleKeys(saleId).outbox);
      if (waiting === 0) return true;
      this.nudge();
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  }
}
