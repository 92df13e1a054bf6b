// sale-core: the shopper API. Stateless: every bit of sale state lives in Redis, so any number of
// these processes can sit behind a load balancer. main.ts starts it with `--role sale`.
import type { FastifyInstance } from 'fastify';
import { config } from '../common/config.js';
import { createEventProducer } from '../common/event-producer.js';
import { closeOnSignals, createServiceApp } from '../common/http.js';
import { createLogger } from '../common/logger.js';
import { createRedis } from '../common/redis.js';
import { TOPICS } from '../common/topics.js';
import { browsingRoutes } from './browsing.js';
import { ClickstreamEmitter } from './clickstream.js';
import type { SaleContext, SaleSettings } from './context.js';
import { ACTIVE_SALES } from './keys.js';
import { OutboxRelay } from './outbox-relay.js';
import { orderRoutes, startExpirySweeper } from './payment.js';
import { purchaseRoutes } from './purchase.js';
import { PurchaseBatches } from './purchase-batches.js';
import { CatalogSnapshots, saleRoutes } from './sales.js';
import { withSaleScripts } from './scripts.js';
import { sessionRoutes } from './shopper-session.js';
import { waitingRoomRoutes } from './waiting-room.js';

export interface SaleCoreOptions {
  port?: number;
  host?: string;
  redisUrl?: string;
  kafkaBrokers?: string[];
  topics?: { orders: string; clickstream: string };
  /** Overrides of the `sale` config section (tests: rate limits, a private active-sales set …). */
  settings?: Partial<SaleSettings>;
  /** Run the outbox relay and expiry sweeper in this process (default true). */
  background?: boolean;
  /** Install SIGTERM/SIGINT handlers (default false; main.ts may pass true). */
  handleSignals?: boolean;
}

export interface SaleCore {
  app: FastifyInstance;
  url: string;
  context: SaleContext;
  close(): Promise<void>;
}

function saleSettings(overrides: Partial<SaleSettings> = {}): SaleSettings {
  const c = config().sale;
  return {
    tokenSecret: c.tokenSecret,
    adminToken: c.adminToken,
    sessionTtlSeconds: c.sessionTtlSeconds,
    ticketTtlSeconds: c.ticketTtlSeconds,
    ipRatePerSecond: c.ipRatePerSecond,
    ipBurst: c.ipBurst,
    shopperRatePerSecond: c.shopperRatePerSecond,
    shopperBurst: c.shopperBurst,
    addressRequestsPerMinute: c.addressRequestsPerMinute,
    shopperRequestsPerMinute: c.shopperRequestsPerMinute,
    queueAccountsPerAddress: c.queueAccountsPerAddress,
    trustedProxies: c.trustedProxies,
    admissionRatePerSecond: c.admissionRatePerSecond,
    expirySweepMs: c.expirySweepMs,
    relayIntervalMs: c.relayIntervalMs,
    clickstreamBuffer: c.clickstreamBuffer,
    clickstreamLingerMs: c.clickstreamLingerMs,
    activeSalesKey: ACTIVE_SALES,
    ...overrides,
  };
}

export async function startSaleCore(options: SaleCoreOptions = {}): Promise<SaleCore> {
  const settings = saleSettings(options.settings);
  const log = createLogger('sale-core');
  // No auto-pipelining: it holds each command until the event loop's check phase to send several in one write,
  // and on this path that wait cost more than the writes it saved (bench:sale, interleaved runs: 7,490–7,510
  // purchases/s without it, 6,088–6,587 with it, the same CPU per purchase; bench/README.md).
  const redis = withSaleScripts(createRedis({}, options.redisUrl ?? config().redis.url));
  // Connection errors surface as 503s on requests; log them at most once a second instead of crashing.
  let lastRedisError = 0;
  redis.on('error', (error) => {
    if (Date.now() - lastRedisError < 1000) return;
    lastRedisError = Date.now();
    log.warn({ err: error }, 'redis connection error');
  });
  const brokers = options.kafkaBrokers;
  const topics = options.topics ?? { orders: TOPICS.orders.name, clickstream: TOPICS.clickstream.name };

  const clickstream = new ClickstreamEmitter({
    // Few retries: the clickstream is best-effort (see ClickstreamEmitter).
    producer: () => createEventProducer('sale-core-clickstream', { brokers, retries: 2, retryDelayMs: 100 }),
    topic: topics.clickstream,
    log,
    capacity: settings.clickstreamBuffer,
    lingerMs: settings.clickstreamLingerMs,
  });
  const relay = new OutboxRelay({
    redis,
    producer: () => createEventProducer('sale-core-relay', { brokers }),
    topic: topics.orders,
    activeSalesKey: settings.activeSalesKey,
    log,
    intervalMs: settings.relayIntervalMs,
  });
  const context: SaleContext = {
    redis,
    settings,
    clickstream,
    relay,
    catalog: new CatalogSnapshots(redis),
    purchases: new PurchaseBatches(redis),
  };

  const app = await createServiceApp({
    name: 'sale-core',
    description: 'Flash-sale shopper API: catalog, waiting room, purchase, payment window, orders.',
    ready: async () => (await redis.ping()) === 'PONG',
    fastify: settings.trustedProxies.length > 0 ? { trustProxy: settings.trustedProxies } : {},
  });
  const routes = { sc: context };
  await app.register(saleRoutes, routes);
  await app.register(sessionRoutes, routes);
  await app.register(browsingRoutes, routes);
  await app.register(waitingRoomRoutes, routes);
  await app.register(purchaseRoutes, routes);
  await app.register(orderRoutes, routes);

  const background = options.background ?? true;
  let stopSweeper: () => Promise<void> = async () => {};
  if (background) {
    relay.start();
    stopSweeper = startExpirySweeper(redis, settings.activeSalesKey, settings.expirySweepMs, log);
  }

  // Shutdown belongs to the app: fastify runs onClose once the requests in flight have finished, however
  // close was asked for (a signal, a test, the lead process).
  app.addHook('onClose', async () => {
    await stopSweeper();
    // Give the relay a moment to publish what is already in the outbox; anything left stays there
    // for the next process's relay.
    if (background) await relay.drained(2000).catch(() => false);
    await relay.stop();
    await clickstream.close();
    redis.disconnect();
  });

  const port = options.port ?? config().sale.port;
  const host = options.host ?? config().sale.host;
  const url = await app.listen({ port, host });
  if (options.handleSignals) closeOnSignals(app);
  return { app, url, context, close: () => app.close() };
}

export interface SaleBackground {
  relay: OutboxRelay;
  close(): Promise<void>;
}

/**
 * The outbox relay and the expiry sweeper without the HTTP API, for a process of their own next to
 * sale-core processes started with `background: false`: the HTTP processes then only write Redis, and
 * Kafka's producer work runs elsewhere. Safe to run several (the relay holds a per-sale lease; the
 * sweeper's expiries act only on orders still reserved).
 */
export async function startSaleBackground(
  options: Pick<SaleCoreOptions, 'redisUrl' | 'kafkaBrokers' | 'topics' | 'settings'> = {},
): Promise<SaleBackground> {
  const settings = saleSettings(options.settings);
  const log = createLogger('sale-background');
  const redis = withSaleScripts(createRedis({}, options.redisUrl ?? config().redis.url));
  let lastRedisError = 0;
  redis.on('error', (error) => {
    if (Date.now() - lastRedisError < 1000) return;
    lastRedisError = Date.now();
    log.warn({ err: error }, 'redis connection error');
  });
  const relay = new OutboxRelay({
    redis,
    producer: () => createEventProducer('sale-background-relay', { brokers: options.kafkaBrokers }),
    topic: options.topics?.orders ?? TOPICS.orders.name,
    activeSalesKey: settings.activeSalesKey,
    log,
    intervalMs: settings.relayIntervalMs,
  });
  relay.start();
  const stopSweeper = startExpirySweeper(redis, settings.activeSalesKey, settings.expirySweepMs, log);
  return {
    relay,
    async close() {
      await stopSweeper();
      await relay.drained(2000).catch(() => false);
      await relay.stop();
      redis.disconnect();
    },
  };
}

export type { SaleSettings } from './context.js';
