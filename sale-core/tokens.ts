// Signed tokens: shopper sessions and admission tickets. HMAC-SHA256 over a base64url JSON payload;
// stateless to verify, so any sale-core process can check a token another one issued.
import { createHash, createHmac, createSecretKey, type KeyObject, randomUUID, timingSafeEqual } from 'node:crypto';

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

export function signToken(payload: object, secret: string): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${sign(body, secret)}`;
}

/** The payload, or null when the token is malformed or its signature does not match. */
export function readToken(token: string, secret: string): Record<string, unknown> | null {
  const dot = token.indexOf('.');
  if (dot <= 0 || token.length > 2048) return null;
  const body = token.slice(0, dot);
  const given = Buffer.from(token.slice(dot + 1), 'base64url');
  const expected = Buffer.from(sign(body, secret), 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
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

/** The signature part of a signed token: unique to the exact token (it is an HMAC of the rest). */
export function tokenSignature(token: string): string {
  return token.slice(token.indexOf('.') + 1);
}

export interface AdmissionTicket {
  ticketId: string;
  saleId: string;
  userId: string;
  position: number;
  expiresAt: number;
  /**
   * The session the waiting room admitted: its ids, its expiry and its token's signature. A purchase that
   * presents that same session token takes the shopper's identity from the (verified) ticket and skips
   * verifying the session, one HMAC fewer on the hottest path. Absent on tickets issued without a session.
   */
  session?: { sessionId: string; anonId: string; expiresAt: number; signature: string };
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
      ...(session ? { sid: session.sessionId, anon: session.anonId, sexp: session.expiresAt, ssig: session.signature } : {}),
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
    typeof p.sid === 'string' && typeof p.anon === 'string' && typeof p.sexp === 'number' && typeof p.ssig === 'string'
      ? { sessionId: p.sid, anonId: p.anon, expiresAt: p.sexp, signature: p.ssig }
      : undefined;
  return { ok: true, ticket: { ticketId: p.tid, saleId, userId: p.uid, position: p.pos, expiresAt: p.exp, session } };
}

/** A stable, salted hash of the client IP: events never carry a raw IP. */
export function hashIp(ip: string, secret: string): string {
  return createHash('sha256').update(secret).update('|').update(ip).digest('hex').slice(0, 32);
}
