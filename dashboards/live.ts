// The live sale page's feed. One poller per watched sale, shared by every open page on it: each second
// it asks the insight queries (through the warehouse endpoint) for the sale's state and pushes the
// snapshot over server-sent events. A second is the budget: ingest lands events within a few hundred
// milliseconds, so the page moves within two seconds of the purchases.
import type { ClickHouseClient } from '@clickhouse/client';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import {
  botFlaggedAttempts,
  pipelineFreshness,
  rejectionsByReason,
  salesVelocity,
  unitsLeftPerSku,
  waitingRoom,
} from '../analytics/insights/index.js';
import { selectRows } from '../analytics/insights/query.js';
import { requireRole } from './auth.js';
import { SALE_ID } from './insight-routes.js';
import type { SaleCoreClient } from './sale-core-client.js';
import { type EventStream, openEventStream } from './sse.js';

export const LIVE_INTERVAL_MS = 1000;
const WINDOW_MS = 120_000;

export interface LiveSnapshot {
  sale_id: string;
  at: number;
  status: string | null;
  totals: {
    orders_reserved: number;
    orders_paid: number;
    units_reserved: number;
    units_paid: number;
    revenue_cents: number;
    orders_expired: number;
  };
  per_second: { second: string; reserved: number; paid: number }[];
  stock: { sku: string; available: number; reserved: number; sold: number; initial: number }[];
  waiting_room: { joined: number; admitted: number; refused: number; waiting: number };
  rejections: { reason: string; rejections: number }[];
  bots: { attempts: number; shoppers: number };
  freshness: { last_event_at: number | null; last_ingested_at: number | null; pipeline_ms: number | null };
}

export async function liveSnapshot(
  reader: ClickHouseClient,
  saleCore: SaleCoreClient,
  saleId: string,
  initialStock: Record<string, number>,
): Promise<LiveSnapshot> {
  const now = Date.now();
  const [sale, velocity, totals, stock, room, rejections, bots, freshness] = await Promise.all([
    saleCore.readSale(saleId).catch(() => null),
    salesVelocity(reader, { saleId, sinceMs: now - WINDOW_MS }),
    selectRows<LiveSnapshot['totals']>(
      reader,
      `SELECT sum(orders_reserved) AS orders_reserved, sum(orders_paid) AS orders_paid, sum(units_reserved) AS units_reserved,
              sum(units_paid) AS units_paid, sum(revenue_cents) AS revenue_cents, sum(orders_expired) AS orders_expired
       FROM sales_velocity_per_second WHERE sale_id = {sale:String}`,
      { sale: saleId },
      ['orders_reserved', 'orders_paid', 'units_reserved', 'units_paid', 'revenue_cents', 'orders_expired'],
    ),
    Object.keys(initialStock).length ? unitsLeftPerSku(reader, { saleId, initialStock }) : Promise.resolve([]),
    waitingRoom(reader, { saleId }),
    rejectionsByReason(reader, { saleId }),
    botFlaggedAttempts(reader, { saleId }),
    pipelineFreshness(reader, { saleId, windowSeconds: 30 }),
  ]);
  // Seconds with no orders are absent from the rollup; fill them so the line shows the lulls.
  const bySecond = new Map(velocity.map((v) => [v.second_ms, v]));
  const first = Math.floor((now - WINDOW_MS) / 1000) * 1000;
  const perSecond: LiveSnapshot['per_second'] = [];
  for (let t = first; t <= now; t += 1000) {
    const v = bySecond.get(t);
    perSecond.push({ second: new Date(t).toISOString().slice(11, 19), reserved: v?.orders_reserved ?? 0, paid: v?.orders_paid ?? 0 });
  }
  const last = room.at(-1);
  const sum = (key: 'joined' | 'admitted' | 'refused') => room.reduce((n, m) => n + Number(m[key]), 0);
  return {
    sale_id: saleId,
    at: now,
    status: sale?.status ?? null,
    totals: totals[0] ?? { orders_reserved: 0, orders_paid: 0, units_reserved: 0, units_paid: 0, revenue_cents: 0, orders_expired: 0 },
    per_second: perSecond,
    stock: stock.map((s) => ({
      sku: s.sku,
      available: Math.max(0, s.units_left),
      reserved: Math.max(0, s.units_reserved - s.units_released - s.units_paid),
      sold: s.units_paid,
      initial: s.initial_units,
    })),
    waiting_room: {
      joined: sum('joined'),
      admitted: sum('admitted'),
      refused: sum('refused'),
      waiting: Math.max(0, Number(last?.waiting ?? 0)),
    },
    rejections: rejections.map((r) => ({
      reason: r.stage === 'queue' ? `${r.reason} (at the queue)` : r.reason,
      rejections: r.rejections,
    })),
    bots: { attempts: bots.flagged_attempts, shoppers: bots.flagged_shoppers },
    freshness: { last_event_at: freshness.last_event_ms, last_ingested_at: freshness.last_ingested_ms, pipeline_ms: freshness.lag_p50_ms },
  };
}

/** One poller per sale; it runs while at least one page watches and stops with the last one. */
class LiveFeeds {
  private feeds = new Map<string, { streams: Set<EventStream>; timer?: NodeJS.Timeout; initialStock: Record<string, number> | null }>();

  constructor(
    private readonly reader: ClickHouseClient,
    private readonly saleCore: SaleCoreClient,
  ) {}

  watch(saleId: string, stream: EventStream): void {
    let feed = this.feeds.get(saleId);
    if (!feed) {
      feed = { streams: new Set(), initialStock: null };
      this.feeds.set(saleId, feed);
      this.tick(saleId);
    }
    feed.streams.add(stream);
    stream.onClose(() => {
      feed.streams.delete(stream);
      if (feed.streams.size === 0) {
        clearTimeout(feed.timer);
        this.feeds.delete(saleId);
      }
    });
  }

  private async tick(saleId: string): Promise<void> {
    const feed = this.feeds.get(saleId);
    if (!feed) return;
    const started = Date.now();
    try {
      // Starting stock is fixed at creation: read once from the sale core's ledger.
      if (!feed.initialStock) feed.initialStock = (await this.saleCore.readSale(saleId).catch(() => null))?.ledger.initial ?? null;
      const snapshot = await liveSnapshot(this.reader, this.saleCore, saleId, feed.initialStock ?? {});
      for (const stream of feed.streams) stream.send('snapshot', snapshot);
    } catch (error) {
      for (const stream of feed.streams) stream.send('problem', { message: `The warehouse did not answer: ${(error as Error).message}` });
    }
    if (this.feeds.get(saleId) === feed)
      feed.timer = setTimeout(() => this.tick(saleId), Math.max(0, LIVE_INTERVAL_MS - (Date.now() - started)));
  }

  stopAll(): void {
    for (const feed of this.feeds.values()) clearTimeout(feed.timer);
    this.feeds.clear();
  }
}

export function registerLiveRoutes(root: FastifyInstance, reader: ClickHouseClient, saleCore: SaleCoreClient): void {
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const feeds = new LiveFeeds(reader, saleCore);
  const open = new Set<{ end(): void }>();
  app.get(
    '/api/live/:sale/stream',
    { preHandler: requireRole('marketer', 'analyst'), schema: { params: Type.Object({ sale: Type.String({ pattern: SALE_ID }) }) } },
    async (request, reply) => {
      const stream = openEventStream(request, reply);
      const raw = { end: () => reply.raw.end() };
      open.add(raw);
      stream.onClose(() => open.delete(raw));
      feeds.watch(request.params.sale, stream);
    },
  );
  // Open streams never end by themselves: end them so the server can close.
  app.addHook('preClose', async () => {
    feeds.stopAll();
    for (const stream of open) stream.end();
  });
}
