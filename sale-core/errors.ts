// The sale-core error catalogue: a stable code for programs, an HTTP status, and a message a shopper
// (or the marketer's tooling) can act on. Every rejection the shop makes goes through here.
import { AppError } from '../common/http.js';

export const SALE_ERRORS = {
  SALE_NOT_FOUND: [404, 'There is no sale with this id.'],
  SKU_NOT_FOUND: [404, 'This sale has no product with that SKU.'],
  SALE_NOT_LIVE: [409, 'This sale is not open right now: check its start and end times.'],
  SALE_SOLD_OUT: [409, 'Sold out: every unit is taken. Units of unpaid orders may return; check the stock later.'],
  SALE_LIMIT_REACHED: [409, 'You already hold the most units of this product one shopper may buy.'],
  SALE_EXISTS: [409, 'A sale with this id already exists; sales cannot be changed once created, except ended.'],
  SALE_INVALID: [400, 'The sale definition is not valid.'],
  TICKET_INVALID: [403, 'The admission ticket is not valid for this sale and shopper: join the queue to get one.'],
  TICKET_EXPIRED: [403, 'The admission ticket has expired: join the queue again to get a new one.'],
  TICKET_REUSED: [409, 'This admission ticket was already used for a purchase: get a new one from the queue.'],
  QUEUE_NOT_JOINED: [404, 'You are not in the queue of this sale: POST to the queue to join it.'],
  IDEMPOTENCY_KEY_REQUIRED: [400, 'Send an Idempotency-Key header (8 to 128 letters, digits, "-" or "_") so a retry cannot buy twice.'],
  IDEMPOTENCY_KEY_CONFLICT: [422, 'This Idempotency-Key was already used for a different purchase: use a new key for a new purchase.'],
  RATE_LIMITED: [429, 'Too many requests: wait for the time in Retry-After, then try again.'],
  SESSION_REQUIRED: [401, 'Send "Authorization: Bearer <session token>"; get one from POST /session.'],
  SESSION_INVALID: [401, 'The session token is not valid or has expired: get a new one from POST /session.'],
  LOGIN_REQUIRED: [401, 'Log in first (POST /session/login): buying and queueing need a shopper account.'],
  ADMIN_REQUIRED: [401, 'This route is for marketers: send "Authorization: Bearer <admin token>".'],
  ORDER_NOT_FOUND: [404, 'There is no order with this id for you.'],
  ORDER_EXPIRED: [409, 'The payment window of this order closed and its unit went to another shopper; nothing was charged.'],
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
 */
export function soldOut(unitMayReturnInMs: number): AppError {
  if (unitMayReturnInMs <= 0) return saleError('SALE_SOLD_OUT');
  return saleError(
    'SALE_SOLD_OUT',
    `Some units are held by orders not paid yet; the first payment window closes in about ${Math.ceil(unitMayReturnInMs / 1000)} s (Retry-After).`,
    unitMayReturnInMs,
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
