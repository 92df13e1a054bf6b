// The sale's atomic steps, each one Lua script over one sale's hash slot, loaded with ioredis
// defineCommand (EVALSHA, falling back to EVAL after a Redis restart empties the script cache).
//
// Why Lua: "sale is live, shopper under limit, stock > 0 → decrement, reserve, count, outbox" must be
// one step, or two shoppers can both see the last unit. Each script is also safe to run twice (ioredis
// re-sends unanswered commands after a reconnect): purchases replay through the idempotency key,
// payments and expiries through the order status.
import type { Redis } from 'ioredis';

// Redis time, not the caller's clock: every sale-core process then agrees on "live" and "expired".
const NOW = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

// Token bucket, one string per bucket: "<millitokens>:<last ms>". Integer arithmetic and a GET/SET pair:
// the earlier hash (HMGET, HSET, PEXPIRE) with float tokens cost three calls, and every Lua number
// handed to Redis is printed with %.14g, which showed up in Redis's own profile of a purchase.
// Returns 0 when a token was taken, else the ms until one is available; and the ms since this bucket's
// previous admitted request (for the "inhuman rate" bot signal; -1 when unknown). A refused request
// writes nothing: the refill is a function of time, so the bucket ends up the same.
const TAKE_TOKEN = `
local function take_token(key, rate, burst, now)
  local full = burst * 1000
  local tokens, since = full, -1
  local v = redis.call('GET', key)
  if v then
    local sep = string.find(v, ':', 1, true)
    tokens = tonumber(string.sub(v, 1, sep - 1))
    since = now - tonumber(string.sub(v, sep + 1))
    if since > 0 then tokens = math.min(full, tokens + since * rate) end
  end
  if tokens < 1000 then return math.ceil((1000 - tokens) / rate), since end
  redis.call('SET', key, string.format('%d:%d', tokens - 1000, now), 'PX', string.format('%d', math.ceil(full / rate) + 1000))
  return 0, since
end
`;

// "Sold out" is not always final: units held by unpaid reservations come back when their window closes.
// Returns the ms until the earliest of those windows closes (at least 1), or 0 when none is pending, so
// a sold-out answer can carry a Retry-After worth waiting for. The expiry set spans the sale's SKUs: for
// a sale of several, the unit that returns first may be another SKU's (a hint, not a promise).
const NEXT_RETURN = `
local function next_return_ms(expiry, now)
  local first = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
  if not first[2] then return 0 end
  return math.max(1, tonumber(first[2]) - now)
end
`;

// An order event from the shopper context stored with the order ('ctx'): the same envelope the
// reservation carried, so order_expired and order_paid stay joined to the shopper's session.
const ORDER_EVENT = `
local function order_event(ctx_json, event_id, status, now, order_id, price, qty, offer_id)
  local ev = cjson.decode(ctx_json)
  ev.event_id = event_id
  ev.type = 'order_' .. status
  ev.ts = now
  ev.order_id = order_id
  ev.price = tonumber(price)
  ev.qty = qty
  ev.status = status
  if offer_id and offer_id ~= '' then ev.offer_id = offer_id end
  return ev
end
`;

const EXPIRE_ORDER = `${ORDER_EVENT}
local function expire_order(order_key, stock, reserved, bought, expiry, outbox, order_id, event_id, now)
  local o = redis.call('HMGET', order_key, 'status', 'sku', 'qty', 'user', 'ctx', 'price', 'offer_id')
  local sku, qty, user = o[2], tonumber(o[3]), o[4]
  redis.call('HINCRBY', stock, sku, qty)
  redis.call('HINCRBY', reserved, sku, -qty)
  redis.call('HINCRBY', bought, user .. '|' .. sku, -qty)
  redis.call('HSET', order_key, 'status', 'expired', 'expired_at', now)
  redis.call('ZREM', expiry, order_id)
  local ev = order_event(o[5], event_id, 'expired', now, order_id, o[6], qty, o[7])
  redis.call('XADD', outbox, '*', 'k', user, 'e', cjson.encode(ev))
end
`;

/**
 * reserveUnit — KEYS: meta stock reserved bought idem ticketUsed order expiry outbox rateIp rateShopper
 * offer viewed. ARGV: user sku qty orderId ticketExpiresAt ctxJson limits sessionId, where `limits` is
 * "<ipRate> <ipBurst> <shopperRate> <shopperBurst> <idemTtlMs>" (one argument: each argument costs the
 * client ~0.5 µs to write, and these are the same for every purchase). The event id is the order id's
 * UUID, the ticket id is in the ticket key: neither is sent twice.
 * Returns {'ok', answerJson, signalsCsv} | {'replay', answerJson} | {'err', code, retryMs}.
 */
const RESERVE_UNIT = `${NOW}${TAKE_TOKEN}${NEXT_RETURN}
local meta, stock, reserved, bought, idem, ticket_used, order_key, expiry, outbox, rl_ip, rl_user, offer_key, viewed =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local user, sku, qty_s, order_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local qty, ticket_exp = tonumber(qty_s), tonumber(ARGV[5])
local event_id = string.sub(order_id, string.find(order_id, '.', 1, true) + 1)
local ip_rate, ip_burst, user_rate, user_burst, idem_ttl = string.match(ARGV[7], '^(%d+) (%d+) (%d+) (%d+) (%d+)$')
local fingerprint = sku .. '|' .. qty_s
local now = now_ms()

local wait = take_token(rl_ip, tonumber(ip_rate), tonumber(ip_burst), now)
if wait > 0 then return {'err', 'RATE_LIMITED', wait} end
local wait_u, since = take_token(rl_user, tonumber(user_rate), tonumber(user_burst), now)
if wait_u > 0 then return {'err', 'RATE_LIMITED', wait_u} end

local prior = redis.call('GET', idem)
if prior then
  local nl = string.find(prior, '\\n', 1, true)
  if string.sub(prior, 1, nl - 1) ~= fingerprint then return {'err', 'IDEMPOTENCY_KEY_CONFLICT', 0} end
  return {'replay', string.sub(prior, nl + 1)}
end

local m = redis.call('HMGET', meta, 'status', 'starts_at', 'ends_at', 'window_ms', 'price:' .. sku, 'limit:' .. sku)
if not m[1] then return {'err', 'SALE_NOT_FOUND', 0} end
local price_s = m[5]
if not price_s then return {'err', 'SKU_NOT_FOUND', 0} end
if redis.call('EXISTS', ticket_used) == 1 then return {'err', 'TICKET_REUSED', 0} end

local offer_id = false
local early_ms = 0
local of = redis.call('HMGET', offer_key, 'offer_id', 'kind', 'sku', 'price', 'early_access_ms')
if of[1] and (not of[3] or of[3] == '' or of[3] == sku) then
  offer_id = of[1]
  if of[2] == 'price' and tonumber(of[4]) then price_s = string.format('%d', tonumber(of[4])) end
  if of[2] == 'early_access' then early_ms = tonumber(of[5]) or 0 end
end

local starts_at, ends_at = tonumber(m[2]), tonumber(m[3])
if m[1] == 'ended' or now >= ends_at or now < starts_at - early_ms then return {'err', 'SALE_NOT_LIVE', 0} end

local held_field = user .. '|' .. sku
local held = tonumber(redis.call('HGET', bought, held_field)) or 0
if held + qty > (tonumber(m[6]) or 1) then return {'err', 'SALE_LIMIT_REACHED', 0} end
local available = tonumber(redis.call('HGET', stock, sku)) or 0
if available < qty then return {'err', 'SALE_SOLD_OUT', next_return_ms(expiry, now)} end

local signals = {}
if redis.call('SISMEMBER', viewed, ARGV[8]) == 0 then table.insert(signals, 'no_prior_view') end
if since >= 0 and since < 100 then table.insert(signals, 'inhuman_rate') end

-- Numbers go to Redis and into JSON as strings made once: qty_s is the caller's validated integer.
local now_s = string.format('%d', now)
local expires_s = string.format('%d', now + tonumber(m[4]))
redis.call('HINCRBY', stock, sku, '-' .. qty_s)
redis.call('HINCRBY', reserved, sku, qty_s)
redis.call('HINCRBY', bought, held_field, qty_s)
redis.call('SET', ticket_used, '1', 'PX', string.format('%d', math.max(1000, ticket_exp - now + 60000)))

-- JSON by concatenation (cjson costs more than the rest of the script): ARGV[6] is the envelope's JSON
-- without its closing brace; every value added here is an id or SKU already validated against a
-- pattern without quotes or backslashes, an integer string, or an offer id that goes through cjson.
local signals_json = ''
if #signals > 0 then signals_json = ',"bot_signals":["' .. table.concat(signals, '","') .. '"]' end
local ctx = ARGV[6] .. signals_json .. '}'
local offer_json = 'null'
if offer_id then offer_json = cjson.encode(offer_id) end
local order_fields = ',"order_id":"' .. order_id .. '","price":' .. price_s .. ',"qty":' .. qty_s
  .. ',"status":"reserved","expires_at":' .. expires_s
local event = ARGV[6] .. signals_json .. ',"event_id":"' .. event_id .. '","type":"order_reserved","ts":' .. now_s
  .. order_fields
if offer_id then event = event .. ',"offer_id":' .. offer_json end
event = event .. '}'
redis.call('HSET', order_key, 'user', user, 'sku', sku, 'qty', qty_s, 'price', price_s, 'status', 'reserved',
  'reserved_at', now_s, 'expires_at', expires_s, 'offer_id', offer_id or '', 'ctx', ctx)
redis.call('ZADD', expiry, expires_s, order_id)
redis.call('XADD', outbox, '*', 'k', user, 'e', event)

local answer = '{"order_id":"' .. order_id .. '","status":"reserved","sku":"' .. sku .. '","qty":' .. qty_s
  .. ',"price":' .. price_s .. ',"expires_at":' .. expires_s .. ',"offer_id":' .. offer_json .. '}'
redis.call('SET', idem, fingerprint .. '\\n' .. answer, 'PX', idem_ttl)
return {'ok', answer, table.concat(signals, ',')}
`;

/**
 * payOrder — KEYS: order stock reserved sold bought expiry outbox meta (which holds limit:<sku>).
 * ARGV: user orderId paidEventId expiredEventId.
 * Returns {'paid', reacquired(0/1), alreadyPaid(0/1)} | {'err', code}.
 */
const PAY_ORDER = `${NOW}${EXPIRE_ORDER}
local order_key, stock, reserved, sold, bought, expiry, outbox, meta =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local user, order_id = ARGV[1], ARGV[2]
local now = now_ms()
local o = redis.call('HMGET', order_key, 'status', 'user', 'sku', 'qty', 'expires_at', 'ctx', 'price', 'offer_id')
if not o[1] or o[2] ~= user then return {'err', 'ORDER_NOT_FOUND'} end
if o[1] == 'paid' then return {'paid', 0, 1} end
local sku, qty = o[3], tonumber(o[4])

local function paid_event(reacquired)
  local ev = order_event(o[6], ARGV[3], 'paid', now, order_id, o[7], qty, o[8])
  redis.call('HSET', order_key, 'status', 'paid', 'paid_at', now, 'reacquired', reacquired)
  redis.call('XADD', outbox, '*', 'k', user, 'e', cjson.encode(ev))
end

if o[1] == 'reserved' and now < tonumber(o[5]) then
  redis.call('HINCRBY', reserved, sku, -qty)
  redis.call('HINCRBY', sold, sku, qty)
  redis.call('ZREM', expiry, order_id)
  paid_event(0)
  return {'paid', 0, 0}
end
if o[1] == 'reserved' then
  -- The window closed but the sweeper has not run yet: expire it now, exactly as the sweeper would.
  expire_order(order_key, stock, reserved, bought, expiry, outbox, order_id, ARGV[4], now)
end

-- A late payment: take a unit back only if one is free, the sale still runs and the shopper's limit allows.
local m = redis.call('HMGET', meta, 'status', 'ends_at', 'limit:' .. sku)
if m[1] == 'ended' or now >= tonumber(m[2]) then return {'err', 'ORDER_EXPIRED'} end
local held_field = user .. '|' .. sku
local held = tonumber(redis.call('HGET', bought, held_field)) or 0
local limit = tonumber(m[3]) or 1
local available = tonumber(redis.call('HGET', stock, sku)) or 0
if available < qty or held + qty > limit then return {'err', 'ORDER_EXPIRED'} end
redis.call('HINCRBY', stock, sku, -qty)
redis.call('HINCRBY', sold, sku, qty)
redis.call('HINCRBY', bought, held_field, qty)
paid_event(1)
return {'paid', 1, 0}
`;

/** expireOrder — KEYS: order stock reserved bought expiry outbox. ARGV: orderId eventId. Returns 1 if it expired the order. */
const EXPIRE_ONE = `${NOW}${EXPIRE_ORDER}
local now = now_ms()
local o = redis.call('HMGET', KEYS[1], 'status', 'expires_at')
if o[1] ~= 'reserved' then redis.call('ZREM', KEYS[5], ARGV[1]) return 0 end
if tonumber(o[2]) > now then return 0 end
expire_order(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[1], ARGV[2], now)
return 1
`;

/**
 * admitShopper — KEYS: meta queue queueCounter stock offer rateIp rateShopper expiry.
 * ARGV: user join(0/1) ipRate ipBurst shopperRate shopperBurst.
 * SALE_SOLD_OUT carries the ms until a held unit may come back (0: none will).
 * Returns {'admitted', position, joinedNow} | {'waiting', position, ahead, etaMs, joinedNow} | {'err', code, retryMs}.
 */
const ADMIT_SHOPPER = `${NOW}${TAKE_TOKEN}${NEXT_RETURN}
local meta, queue, counter, stock, offer_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local user = ARGV[1]
local now = now_ms()
local wait = take_token(KEYS[6], tonumber(ARGV[3]), tonumber(ARGV[4]), now)
if wait > 0 then return {'err', 'RATE_LIMITED', wait} end
wait = take_token(KEYS[7], tonumber(ARGV[5]), tonumber(ARGV[6]), now)
if wait > 0 then return {'err', 'RATE_LIMITED', wait} end

local m = redis.call('HMGET', meta, 'status', 'starts_at', 'ends_at', 'admission_rate', 'admission_burst')
if not m[1] then return {'err', 'SALE_NOT_FOUND', 0} end
if m[1] == 'ended' or now >= tonumber(m[3]) then return {'err', 'SALE_NOT_LIVE', 0} end
local remaining = 0
for _, v in ipairs(redis.call('HVALS', stock)) do remaining = remaining + tonumber(v) end
if remaining <= 0 then return {'err', 'SALE_SOLD_OUT', next_return_ms(KEYS[8], now)} end

local joined = 0
local position = tonumber(redis.call('HGET', queue, user))
if not position then
  if ARGV[2] ~= '1' then return {'err', 'QUEUE_NOT_JOINED', 0} end
  position = redis.call('INCR', counter)
  redis.call('HSET', queue, user, position)
  joined = 1
end

local starts_at, rate, burst = tonumber(m[2]), tonumber(m[4]), tonumber(m[5])
local of = redis.call('HMGET', offer_key, 'kind', 'early_access_ms')
if of[1] == 'priority' and now >= starts_at then return {'admitted', position, joined} end
if of[1] == 'early_access' and now >= starts_at - (tonumber(of[2]) or 0) then return {'admitted', position, joined} end

local admitted_upto = 0
if now >= starts_at then admitted_upto = burst + math.floor((now - starts_at) * rate / 1000) end
if position <= admitted_upto then return {'admitted', position, joined} end
-- Shoppers still waiting ahead already outnumber the units left: say so now rather than let them wait.
local ahead = position - admitted_upto - 1
if ahead >= remaining then return {'err', 'SALE_SOLD_OUT', next_return_ms(KEYS[8], now)} end
local eta = math.ceil((position - admitted_upto) * 1000 / rate) + math.max(0, starts_at - now)
return {'waiting', position, ahead, eta, joined}
`;

/** takeTokens — KEYS: rateIp rateShopper. ARGV: ipRate ipBurst shopperRate shopperBurst. Returns ms to wait (0 = go). */
const TAKE_TOKENS = `${NOW}${TAKE_TOKEN}
local now = now_ms()
local wait = take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if wait > 0 then return wait end
wait = take_token(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now)
return wait
`;

/**
 * createSale — KEYS: meta catalog stock reserved sold initial.
 * ARGV: metaJson catalogJson skusJson. Returns 1, or 0 when the sale exists.
 * Each SKU's price and per-shopper limit go into meta as price:<sku> and limit:<sku>, so the purchase
 * reads the sale's state, price and limit in one HMGET.
 */
const CREATE_SALE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local meta = cjson.decode(ARGV[1])
for k, v in pairs(meta) do redis.call('HSET', KEYS[1], k, tostring(v)) end
redis.call('SET', KEYS[2], ARGV[2])
for _, s in ipairs(cjson.decode(ARGV[3])) do
  redis.call('HSET', KEYS[3], s.sku, s.stock)
  redis.call('HSET', KEYS[4], s.sku, 0)
  redis.call('HSET', KEYS[5], s.sku, 0)
  redis.call('HSET', KEYS[6], s.sku, s.stock)
  redis.call('HSET', KEYS[1], 'limit:' .. s.sku, string.format('%d', s.limit_per_shopper), 'price:' .. s.sku, string.format('%d', s.price))
end
return 1
`;

/** stockLedger — KEYS: stock reserved sold initial. One consistent read of the four counters. */
const STOCK_LEDGER = `
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
`;

type Reply = (string | number | null)[];

export interface SaleScripts {
  reserveUnit(...args: (string | number)[]): Promise<Reply>;
  payOrder(...args: (string | number)[]): Promise<Reply>;
  expireOrder(...args: (string | number)[]): Promise<number>;
  admitShopper(...args: (string | number)[]): Promise<Reply>;
  takeTokens(...args: (string | number)[]): Promise<number>;
  createSale(...args: (string | number)[]): Promise<number>;
  stockLedger(...args: string[]): Promise<string[][]>;
}

export type SaleRedis = Redis & SaleScripts;

/** Adds the sale scripts to a connection (idempotent per connection). */
export function withSaleScripts(redis: Redis): SaleRedis {
  const r = redis as SaleRedis & { __saleScripts?: boolean };
  if (r.__saleScripts) return r;
  redis.defineCommand('reserveUnit', { numberOfKeys: 13, lua: RESERVE_UNIT });
  redis.defineCommand('payOrder', { numberOfKeys: 8, lua: PAY_ORDER });
  redis.defineCommand('expireOrder', { numberOfKeys: 6, lua: EXPIRE_ONE });
  redis.defineCommand('admitShopper', { numberOfKeys: 8, lua: ADMIT_SHOPPER });
  redis.defineCommand('takeTokens', { numberOfKeys: 2, lua: TAKE_TOKENS });
  redis.defineCommand('createSale', { numberOfKeys: 6, lua: CREATE_SALE });
  redis.defineCommand('stockLedger', { numberOfKeys: 4, lua: STOCK_LEDGER });
  r.__saleScripts = true;
  return r;
}
