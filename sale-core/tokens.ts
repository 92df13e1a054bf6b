// Signed tokens: shopper sessions and admission tickets. HMAC-SHA256 over a base64url JSON payload;
// stateless to verify, so any sale-core process can check a token another one issued.
import { createHash, createHmac, createSecretKey, hash, type KeyObject, randomUUID } from 'node:crypto';

// A KeyObject per secret: createHmac with a string key prepares the key on every call, and the purchase
// path signs or verifies on every request.
const keys = new Map<string, KeyObject>();
function sign(body: string, secret: string): string {
  let key = keys.get(secret);
  if (key === undefined) {
    key = createSecretKey(Buffer.from(secret, 'utf8'));
    keys.set(secret, key);
  }
  return createHmac('sha256', key).update(body).digest('base64url');
}

function signToken(payload: object, secret: string): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${sign(body, secret)}`;
}

// base64url without padding, as Buffer#toString('base64url') writes it. Node's decoder is lenient (it skips
// characters outside the alphabet, "=" padding, and ignores the unused low bits of the last character), so
// one token would have many spellings that all verify; only the one canonical spelling is accepted.
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Compares two strings in time that depends only on their length, not on where they first differ. Both are
 * base64url (one byte per character), so the character codes are the bytes timingSafeEqual would compare,
 * without the two buffers it needs allocated on every purchase.
 */
function sameText(given: string, expected: string): boolean {
  if (given.length !== expected.length) return false;
  let difference = 0;
  for (let i = 0; i < expected.length; i++) difference |= given.charCodeAt(i) ^ expected.charCodeAt(i);
  return difference === 0;
}

/** The payload, or null when the token is malformed, not in its canonical form, or its signature does not match. */
function readToken(token: string, secret: string): Record<string, unknown> | null {
  const dot = token.indexOf('.');
  if (dot <= 0 || token.length > 2048) return null;
  const body = token.slice(0, dot);
  const given = token.slice(dot + 1);
  if (!BASE64URL.test(body) || !BASE64URL.test(given)) return null;
  // The signature as issued, character for character: comparing its text (not its decoded bytes) refuses
  // "==", "!!" or changed padding bits after it. The body needs no such check: the HMAC covers its text as
  // sent, so only the spelling that was signed verifies.
  if (!sameText(given, sign(body, secret))) return null;
  try {
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
    return typeof payload === 'object' && payload !== null ? payload : null;
  } catch {
    return null;
  }
}

export interface ShopperSession {
  sessionId: string;
  anonId: string;
  userId: string | null;
  expiresAt: number;
}

export function issueSession(session: ShopperSession, secret: string): string {
  return signToken({ k: 's', sid: session.sessionId, anon: session.anonId, uid: session.userId, exp: session.expiresAt }, secret);
}

export function newAnonymousSession(ttlSeconds: number, now = Date.now()): ShopperSession {
  return { sessionId: randomUUID(), anonId: `anon-${randomUUID()}`, userId: null, expiresAt: now + ttlSeconds * 1000 };
}

export function readSession(token: string, secret: string, now = Date.now()): ShopperSession | null {
  const p = readToken(token, secret);
  if (p?.k !== 's' || typeof p.sid !== 'string' || typeof p.anon !== 'string' || typeof p.exp !== 'number') return null;
  if (p.exp <= now) return null;
  return { sessionId: p.sid, anonId: p.anon, userId: typeof p.uid === 'string' ? p.uid : null, expiresAt: p.exp };
}

/**
 * What an admission ticket records of the session token it was issued to: a SHA-256 of the whole token.
 * Not a secret in itself, and it reveals nothing of the token, so a ticket alone (leaked, logged, shared)
 * cannot be turned into that shopper's bearer token; comparing it costs one plain hash, not an HMAC.
 */
export function sessionTokenDigest(token: string): string {
  // One-shot: no Hash object to build per purchase (half the cost of createHash().update().digest()).
  return hash('sha256', token, 'base64url');
}

export interface AdmissionTicket {
  ticketId: string;
  saleId: string;
  userId: string;
  position: number;
  expiresAt: number;
  /**
   * The session the waiting room admitted: its ids, its expiry and the digest of its token
   * (sessionTokenDigest). A purchase whose bearer token has that digest takes the shopper's identity from
   * the (verified) ticket and skips verifying the session, one HMAC fewer on the hottest path. Absent on
   * tickets issued without a session.
   */
  session?: { sessionId: string; anonId: string; expiresAt: number; tokenDigest: string };
}

export function issueTicket(ticket: Omit<AdmissionTicket, 'ticketId'> & { ticketId?: string }, secret: string): string {
  const { session } = ticket;
  return signToken(
    {
      k: 't',
      tid: ticket.ticketId ?? randomUUID(),
      sale: ticket.saleId,
      uid: ticket.userId,
      pos: ticket.position,
      exp: ticket.expiresAt,
      ...(session ? { sid: session.sessionId, anon: session.anonId, sexp: session.expiresAt, sdig: session.tokenDigest } : {}),
    },
    secret,
  );
}

export type TicketCheck = { ok: true; ticket: AdmissionTicket } | { ok: false; code: 'TICKET_INVALID' | 'TICKET_EXPIRED' };

/**
 * Checks signature, sale and shopper (`userId` null: any shopper, the caller takes it from the ticket);
 * single use is enforced atomically by the purchase script.
 */
export function checkTicket(token: string, saleId: string, userId: string | null, secret: string, now = Date.now()): TicketCheck {
  const p = readToken(token, secret);
  if (p?.k !== 't' || typeof p.tid !== 'string' || typeof p.exp !== 'number' || typeof p.pos !== 'number' || typeof p.uid !== 'string') {
    return { ok: false, code: 'TICKET_INVALID' };
  }
  if (p.sale !== saleId || (userId !== null && p.uid !== userId)) return { ok: false, code: 'TICKET_INVALID' };
  if (p.exp <= now) return { ok: false, code: 'TICKET_EXPIRED' };
  const session =
    typeof p.sid === 'string' && typeof p.anon === 'string' && typeof p.sexp === 'number' && typeof p.sdig === 'string'
      ? { sessionId: p.sid, anonId: p.anon, expiresAt: p.sexp, tokenDigest: p.sdig }
      : undefined;
  return { ok: true, ticket: { ticketId: p.tid, saleId, userId: p.uid, position: p.pos, expiresAt: p.exp, session } };
}

/** A stable, salted hash of the client IP: events never carry a raw IP. */
export function hashIp(ip: string, secret: string): string {
  return createHash('sha256').update(secret).update('|').update(ip).digest('hex').slice(0, 32);
}

/**
 * A place in a sale's waiting room, signed at the join: a poll verifies it and decides in-process, so
 * waiting costs Redis nothing. The shopper's offer (priority and early access change admission) is looked up
 * once, at the join, and travels in the token.
 */
export interface PositionToken {
  saleId: string;
  userId: string;
  position: number;
  issuedAt: number;
  /** The shopper's offer for the sale: its id goes on the admission event; priority and early access change admission. */
  offer?: { offerId: string; kind: 'price' | 'priority' | 'early_access'; earlyAccessMs: number };
}

export function issuePositionToken(p: PositionToken, secret: string): string {
  const offer = p.offer ? { oid: p.offer.offerId, ok: p.offer.kind, oea: p.offer.earlyAccessMs } : {};
  return signToken({ k: 'p', sale: p.saleId, uid: p.userId, pos: p.position, iat: p.issuedAt, ...offer }, secret);
}

/** The verified place of `userId` in sale `saleId`'s queue; null when forged, altered, or another sale's or shopper's. */
export function checkPositionToken(token: string, saleId: string, userId: string, secret: string): PositionToken | null {
  const p = readToken(token, secret);
  if (p?.k !== 'p' || p.sale !== saleId || p.uid !== userId || typeof p.iat !== 'number') return null;
  if (typeof p.pos !== 'number' || !Number.isSafeInteger(p.pos) || p.pos < 1) return null;
  const kind = p.ok;
  const offer: PositionToken['offer'] =
    typeof p.oid === 'string' && (kind === 'price' || kind === 'priority' || kind === 'early_access') && typeof p.oea === 'number'
      ? { offerId: p.oid, kind, earlyAccessMs: p.oea }
      : undefined;
  return { saleId, userId, position: p.pos, issuedAt: p.iat, ...(offer ? { offer } : {}) };
}
