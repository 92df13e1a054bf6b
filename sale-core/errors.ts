// The sale-core error catalogue: a stable code for programs, an HTTP status, and a message a shopper
// (or the marketer's tooling) can act on. Every rejection the shop makes goes through here.
import { AppError } from '../common/http.js';

export const SALE_ERRORS = {
  SALE_NOT_FOUND: [404, 'There is no sale with this id.'],
  SKU_NOT_FOUND: [404, 'This sale has no product with that SKU.'],
  SALE_NOT_LIVE: [409, 'This sale is not open right now: check its start and end times.'],
  // Final as it stands; the answers that are not (units held by unpaid orders, or a queue that may move)
  // add a sentence and Retry-After (soldOut, probablySoldOut).
  SALE_SOLD_OUT: [409, 'Sold out: every unit is taken.'],
  SALE_FEWER_LEFT: [409, 'Fewer units are left than you asked for: ask for fewer (see the stock).'],
  SALE_LIMIT_REACHED: [409, 'You already hold the most units of this product one shopper may buy.'],
  SALE_EXISTS: [409, 'A sale with this id already exists; sales cannot be changed once created, except ended.'],
  SALE_INVALID: [400, 'The sale definition is not valid.'],
  TICKET_INVALID: [403, 'The admission ticket is not valid for this sale and shopper: join the queue to get one.'],
  TICKET_EXPIRED: [403, 'The admission ticket has expired: join the queue again to get a new one.'],
  TICKET_REUSED: [409, 'This admission ticket was already used for a purchase: get a new one from the queue.'],
  QUEUE_NOT_JOINED: [
    404,
    'You are not in the queue of this sale: POST to the queue to join it, then poll with the position_token it returns in the X-Position-Token header.',
  ],
  QUEUE_TOKEN_INVALID: [
    403,
    'The position token is not valid for this sale and shopper: POST to the queue to get yours again (your place is kept).',
  ],
  QUEUE_ADDRESS_FULL: [403, "Too many shopper accounts joined this sale's queue from your network address: join from your own connection."],
  IDEMPOTENCY_KEY_REQUIRED: [400, 'Send an Idempotency-Key header (8 to 128 letters, digits, "-" or "_") so a retry cannot buy twice.'],
  IDEMPOTENCY_KEY_CONFLICT: [422, 'This Idempotency-Key was already used for a different purchase: use a new key for a new purchase.'],
  RATE_LIMITED: [429, 'Too many requests: wait for the time in Retry-After, then try again.'],
  SESSION_REQUIRED: [401, 'Send "Authorization: Bearer <session token>"; get one from POST /session.'],
  SESSION_INVALID: [401, 'The session token is not valid or has expired: get a new one from POST /session.'],
  LOGIN_REQUIRED: [401, 'Log in first (POST /session/login): buying and queueing need a shopper account.'],
  ADMIN_REQUIRED: [401, 'This route is for marketers: send "Authorization: Bearer <admin token>".'],
  ORDER_NOT_FOUND: [404, 'There is no order with this id for you.'],
  ORDER_EXPIRED: [
    409,
    'The payment window of this order closed before it was paid and its unit could not be taken back; nothing was charged.',
  ],
  PAYMENT_DECLINED: [402, 'The payment was declined; the reservation stays until its window closes, so you may try again.'],
  STORE_UNAVAILABLE: [503, 'The sale is briefly unavailable; retry with the same Idempotency-Key in a moment.'],
} as const satisfies Record<string, readonly [number, string]>;

export type SaleErrorCode = keyof typeof SALE_ERRORS;

export function isSaleErrorCode(code: string): code is SaleErrorCode {
  return Object.hasOwn(SALE_ERRORS, code);
}

/**
 * SALE_SOLD_OUT while units are held by unpaid reservations: when the first of them may come back. The
 * shopper gets Retry-After and a sentence saying so, instead of a "sold out" that reads final.
 * Retry-After is spread after that moment (never earlier than a unit may return) over half the wait, and over
 * at least RETURN_SPREAD_MIN_MS: everyone turned away meanwhile would otherwise hear the same moment and come
 * back in step. Half the wait alone was not enough: the shoppers turned away in the last seconds before a
 * window closes got a spread of a second or two, and all landed in the second it closed (in the spike bench,
 * ~3,600 answers a second at +61 s, every one over 50 ms).
 */
export function soldOut(unitMayReturnInMs: number): AppError {
  if (unitMayReturnInMs <= 0) return saleError('SALE_SOLD_OUT');
  const spreadMs = Math.max(unitMayReturnInMs / 2, RETURN_SPREAD_MIN_MS);
  return saleError(
    'SALE_SOLD_OUT',
    `Some units are held by orders not paid yet; the first payment window closes in about ${Math.ceil(unitMayReturnInMs / 1000)} s (Retry-After).`,
    unitMayReturnInMs + Math.random() * spreadMs,
  );
}

/**
 * The least time over which shoppers turned away while units are held are sent back. Units come back one
 * payment window at a time (the windows of a sale's first seconds close over about as many seconds), and a
 * crowd spread over ten seconds arrives at a tenth of the rate of one sent back within a second.
 */
export const RETURN_SPREAD_MIN_MS = 10_000;

/**
 * The early "sold out" of the waiting room: more shoppers wait ahead than units are left, so this one will
 * probably not get a unit. Not final: some of those ahead may never buy (a crowd of accounts made for the
 * purpose, or shoppers who give up), so the shopper keeps the place and is admitted when the queue reaches
 * it if units are still left then; Retry-After says when that is.
 */
export function probablySoldOut(admittedInMs: number, ahead: number): AppError {
  return saleError(
    'SALE_SOLD_OUT',
    `${ahead} shoppers wait ahead of you for fewer units, but your place is kept: if some of them do not buy, you are admitted in about ${Math.max(1, Math.ceil(admittedInMs / 1000))} s (Retry-After).`,
    Math.max(1, admittedInMs),
  );
}

/** The AppError for a catalogue code; 429 and 503 carry Retry-After (seconds, at least 1). */
export function saleError(code: SaleErrorCode, detail?: string, retryAfterMs?: number): AppError {
  const [status, message] = SALE_ERRORS[code];
  const headers: Record<string, string> = {};
  if (status === 429 || status === 503 || retryAfterMs !== undefined) {
    headers['retry-after'] = String(Math.max(1, Math.ceil((retryAfterMs ?? 1000) / 1000)));
  }
  return new AppError(code, status, detail ? `${message} ${detail}` : message, headers);
}

/** Every code a purchase can be refused with once the shopper is known (each one a `purchase_rejected`). */
export const PURCHASE_REFUSALS = [
  'RATE_LIMITED',
  'IDEMPOTENCY_KEY_CONFLICT',
  'SALE_NOT_FOUND',
  'SKU_NOT_FOUND',
  'TICKET_INVALID',
  'TICKET_EXPIRED',
  'TICKET_REUSED',
  'SALE_NOT_LIVE',
  'SALE_LIMIT_REACHED',
  'SALE_FEWER_LEFT',
  'SALE_SOLD_OUT',
  'STORE_UNAVAILABLE',
] as const satisfies readonly SaleErrorCode[];

/** Every code the waiting room can refuse a logged-in shopper with (a join refused as sold out is a `queue_refused`). */
export const QUEUE_REFUSALS = [
  'RATE_LIMITED',
  'SALE_NOT_FOUND',
  'SALE_NOT_LIVE',
  'SALE_SOLD_OUT',
  'QUEUE_ADDRESS_FULL',
  'QUEUE_NOT_JOINED',
  'QUEUE_TOKEN_INVALID',
  'STORE_UNAVAILABLE',
] as const satisfies readonly SaleErrorCode[];

/**
 * The `reason` of a rejection event (`purchase_rejected`, `queue_refused`): the code in lower snake case
 * without the `SALE_` prefix (`SALE_SOLD_OUT` → `sold_out`). One vocabulary for the warehouse, listed in
 * analytics/SCHEMA.md; the HTTP answer keeps the code.
 */
export function rejectReason(code: SaleErrorCode): string {
  return (code.startsWith('SALE_') ? code.slice(5) : code).toLowerCase();
}
