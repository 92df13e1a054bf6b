// What every sale-core route shares: the Redis connection with the sale scripts, settings, the
// clickstream emitter, the outbox relay (to nudge), and the in-process catalog snapshots.
import type { FastifyRequest } from 'fastify';
import type { ClickstreamEvent } from '../common/events.js';
import type { ClickstreamEmitter } from './clickstream.js';
import { addressGroup } from './client-address.js';
import { saleError } from './errors.js';
import { GenerationalMap } from './generational-map.js';
import type { OutboxRelay } from './outbox-relay.js';
import type { PurchaseBatches } from './purchase-batches.js';
import type { CatalogSnapshots } from './sales.js';
import type { SaleRedis } from './scripts.js';
import { type AdmissionTicket, hashIp, readSession, type ShopperSession, sessionTokenDigest } from './tokens.js';

export interface SaleSettings {
  tokenSecret: string;
  adminToken: string;
  sessionTtlSeconds: number;
  ticketTtlSeconds: number;
  ipRatePerSecond: number;
  ipBurst: number;
  shopperRatePerSecond: number;
  shopperBurst: number;
  /** Light shopper routes (session, login, events, order reads, catalog, stock), per process. */
  addressRequestsPerMinute: number;
  shopperRequestsPerMinute: number;
  /** Distinct accounts one address may bring into one sale's queue. */
  queueAccountsPerAddress: number;
  /**
   * Load balancers whose X-Forwarded-For names the client (fastify trustProxy). Every per-address limit and
   * the accounts-per-address cap count the client address, so behind a balancer this must name it.
   */
  trustedProxies: string[];
  admissionRatePerSecond: number;
  expirySweepMs: number;
  relayIntervalMs: number;
  clickstreamBuffer: number;
  /** How long the clickstream waits to fill a batch (each send to Kafka is a request of its own). */
  clickstreamLingerMs: number;
  /** The Redis set of sale ids this deployment's relay and sweeper watch. */
  activeSalesKey: string;
}

export interface SaleContext {
  redis: SaleRedis;
  settings: SaleSettings;
  clickstream: ClickstreamEmitter;
  relay: OutboxRelay;
  catalog: CatalogSnapshots;
  /** Where purchases wait for the rest of their event-loop turn, to go to Redis together. */
  purchases: PurchaseBatches;
}

/** The envelope fields of an event, from the request and the session. */
export interface ShopperContext {
  session: ShopperSession;
  ipHash: string;
  channel: 'web' | 'app' | 'api';
  device: string;
}

// A spike brings the same addresses again and again: remember their hashes (bounded). Hashed, and remembered, by
// the client's address group (an IPv6 /64 as one), so every per-address limit keyed by it, in Redis or in this
// process, counts a block cycled through as the one client it is.
const ipHashes = new Map<string, string>();
function ipHashOf(ip: string, secret: string): string {
  const client = addressGroup(ip);
  let hash = ipHashes.get(client);
  if (hash === undefined) {
    if (ipHashes.size > 100_000) ipHashes.clear();
    hash = hashIp(client, secret);
    ipHashes.set(client, hash);
  }
  return hash;
}

// A shopper sends the same session token with every poll and purchase: verify its signature once
// (bounded cache per secret; the expiry is still checked on every use). Two generations of 50,000
// (GenerationalMap), so a crowd of more than 50,000 shoppers polling does not empty the whole cache at once and
// verify every session again (a spike has two tokens per shopper: anonymous, logged in).
const SESSIONS_PER_GENERATION = 50_000;
const sessionsBySecret = new Map<string, GenerationalMap<ShopperSession>>();
function verifiedSession(token: string, secret: string): ShopperSession | null {
  let sessions = sessionsBySecret.get(secret);
  if (sessions === undefined) {
    sessions = new GenerationalMap(SESSIONS_PER_GENERATION);
    sessionsBySecret.set(secret, sessions);
  }
  let session = sessions.get(token);
  if (session === undefined) {
    session = readSession(token, secret) ?? undefined;
    if (session === undefined) return null;
    sessions.set(token, session);
  }
  return session.expiresAt > Date.now() ? session : null;
}

/** The bearer token of the request, unverified ('' when absent or not a bearer). */
function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  return header.startsWith('Bearer ') ? header.slice(7) : '';
}

function fromRequest(request: FastifyRequest, session: ShopperSession, settings: SaleSettings): ShopperContext {
  const channelHeader = request.headers['x-channel'];
  const channel = channelHeader === 'app' || channelHeader === 'api' ? channelHeader : 'web';
  const device = String(request.headers['user-agent'] ?? 'unknown').slice(0, 64);
  return { session, ipHash: ipHashOf(request.ip, settings.tokenSecret), channel, device };
}

/** The verified session of the request's bearer token; null when there is none or it is not valid. */
export function sessionOfRequest(request: FastifyRequest, settings: SaleSettings): ShopperSession | null {
  const token = bearerToken(request);
  return token ? verifiedSession(token, settings.tokenSecret) : null;
}

export function shopperContext(request: FastifyRequest, settings: SaleSettings, required = true): ShopperContext | null {
  const token = bearerToken(request);
  if (token === undefined) {
    if (required) throw saleError('SESSION_REQUIRED');
    return null;
  }
  const session = verifiedSession(token, settings.tokenSecret);
  if (!session) throw saleError('SESSION_INVALID');
  return fromRequest(request, session, settings);
}

/**
 * The shopper of a purchase whose verified admission ticket names the very session token the request
 * carries (see AdmissionTicket.session: the SHA-256 of the whole token); null when it does not, and the
 * caller verifies the session. Holding the ticket is not enough: only the token itself has that digest, and
 * the ticket does not reveal the token. Identity and the session's expiry come from the ticket, and an
 * expired session goes the usual way (and is refused there).
 */
export function shopperOfTicket(request: FastifyRequest, ticket: AdmissionTicket, settings: SaleSettings): ShopperContext | null {
  const token = bearerToken(request);
  const session = ticket.session;
  if (!token || !session || session.expiresAt <= Date.now() || sessionTokenDigest(token) !== session.tokenDigest) return null;
  const { sessionId, anonId, expiresAt } = session;
  return fromRequest(request, { sessionId, anonId, userId: ticket.userId, expiresAt }, settings);
}

/** What an admission ticket records of the session it was issued to (see shopperOfTicket). */
export function ticketSession(request: FastifyRequest, ctx: ShopperContext): AdmissionTicket['session'] {
  const token = bearerToken(request);
  const { sessionId, anonId, expiresAt } = ctx.session;
  return token ? { sessionId, anonId, expiresAt, tokenDigest: sessionTokenDigest(token) } : undefined;
}

export function requireShopper(ctx: ShopperContext): string {
  if (!ctx.session.userId) throw saleError('LOGIN_REQUIRED');
  return ctx.session.userId;
}

/** The envelope minus event_id/type/ts, as the Lua scripts and clickstream need it. */
export function envelope(ctx: ShopperContext, saleId: string, sku: string | null) {
  return {
    sale_id: saleId,
    user_id: ctx.session.userId,
    anon_id: ctx.session.anonId,
    session_id: ctx.session.sessionId,
    sku,
    channel: ctx.channel,
    device: ctx.device,
    ip_hash: ctx.ipHash,
  };
}

type Distribute<T> = T extends unknown ? Omit<T, 'event_id' | 'ts' | keyof ReturnType<typeof envelope>> : never;
export type ClickstreamDetail = Distribute<ClickstreamEvent>;
