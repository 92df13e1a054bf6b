// The sale's atomic steps, each one Lua script over one sale's hash slot, loaded with ioredis
// defineCommand (EVALSHA, falling back to EVAL after a Redis restart empties the script cache).
//
// Why Lua: "sale is live, shopper under limit, stock > 0 → decrement, reserve, count, outbox" must be
// one step, or two shoppers can both see the last unit. Each script is also safe to run twice (ioredis
// re-sends unanswered commands after a reconnect): purchases replay through the idempotency key,
// payments and expiries through the order status.
import type { ChainableCommander, Redis } from 'ioredis';
import { saleKeys } from './keys.js';

// Redis time, not the caller's clock: every sale-core process then agrees on "live" and "expired".
const NOW = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

// Token bucket, one string per bucket: "<millitokens>:<last ms>". Integer arithmetic and a GET/SET pair:
// the earlier hash (HMGET, HSET, PEXPIRE) with float tokens cost three calls, and every Lua number
// handed to Redis is printed with %.14g, which showed up in Redis's own profile. The join and the payment take
// tokens here, shared by every process; the purchase and the poll count in the process (purchase.ts,
// waiting-room.ts). Returns 0 when a token was taken, else the ms until one is available. A refused request
// writes nothing: the refill is a function of time, so the bucket ends up the same.
const TAKE_TOKEN = `
local function take_token(key, rate, burst, now)
  local full = burst * 1000
  local tokens = full
  local v = redis.call('GET', key)
  if v then
    local sep = string.find(v, ':', 1, true)
    tokens = math.min(full, tonumber(string.sub(v, 1, sep - 1)) + math.max(0, now - tonumber(string.sub(v, sep + 1))) * rate)
  end
  if tokens < 1000 then return math.ceil((1000 - tokens) / rate) end
  redis.call('SET', key, string.format('%d:%d', tokens - 1000, now), 'PX', string.format('%d', math.ceil(full / rate) + 1000))
  return 0
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
 * reserveUnits — the purchases of one sale that reached this process together (purchase-batches.ts), each
 * checked and recorded in turn as if it ran alone: a later purchase in the batch sees what an earlier one wrote.
 * KEYS: meta stock reserved bought expiry outbox viewed, then per purchase: order offer.
 * ARGV per purchase, 9 each: user sku qty orderId ctxJson sessionId ticketId idempotencyKey rapid, where `rapid` is
 * '1' when this process saw the shopper's previous purchase attempt less than 100 ms ago (the "inhuman rate"
 * signal; the rate limits themselves are in the process, see purchase.ts). The event id is the order id's UUID:
 * not sent twice. `bought` holds, per shopper, the units held (`<user>|<sku>`), the spent tickets (`ticket:<id>`)
 * and the answered purchases (`idem:<user>:<key>` → "<sku>|<qty>\n<answer JSON>"), so everything the batch
 * checks about its shoppers is one HMGET and everything it records about them one HSET. Creating a key per purchase
 * for the idempotency answer, and two for the rate buckets, was most of the script's cost in Redis (bench/README.md).
 * Likewise the stock, reserved and expiry writes are made once per batch: what a purchase costs Redis is then its
 * order hash, its outbox entry and its offer read, plus its share of the batch's calls.
 * Returns one reply per purchase, in order: {'ok', answerJson, signalsCsv, offerId} | {'replay', answerJson, '',
 * offerId} | {'err', code, retryMs, offerId, signalsCsv} | {'failed', redisError}, offerId '' when the shopper has no
 * offer for this SKU. A refusal carries the bot signals too: a bot turned away for stock must still look like one.
 */
const RESERVE_UNITS = `${NOW}${NEXT_RETURN}
local meta, stock, reserved, bought, expiry, outbox, viewed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local n = (#KEYS - 7) / 2
-- One clock reading for the batch: its purchases happen in the same instant, as far as Redis can tell.
local now = now_ms()
local now_s = string.format('%d', now)

-- What the batch needs to know about its shoppers, read once: whether each session viewed a product, and each
-- shopper's units held, ticket and answer under the idempotency key.
local sessions, fields = {}, {}
for i = 0, n - 1 do
  local a = i * 9
  local user = ARGV[a + 1]
  sessions[i + 1] = ARGV[a + 6]
  fields[3 * i + 1] = user .. '|' .. ARGV[a + 2]
  fields[3 * i + 2] = 'ticket:' .. ARGV[a + 7]
  fields[3 * i + 3] = 'idem:' .. user .. ':' .. ARGV[a + 8]
end
local viewed_by = redis.call('SMISMEMBER', viewed, unpack(sessions))
local shoppers = redis.call('HMGET', bought, unpack(fields))

-- What the batch's purchases wrote to the sale's shared keys so far, written there once at the end. A later
-- purchase reads through these, so it sees an earlier one's unit taken, count raised, ticket spent and answer.
local written = {}      -- bought field -> value
local taken = {}        -- sku -> units reserved by the batch
local available_by = {} -- sku -> units available, as the batch left them
local expiring = {}     -- ZADD arguments: expires_at, order id (the first one expires first: one clock, one window)
-- The sale's state, price and limit of a SKU: no purchase changes them, so one read per SKU per batch.
local sku_meta = {}

local function shopper_field(j)
  local v = written[fields[j]]
  if v ~= nil then return v end
  return shoppers[j]
end

local function sold_out_wait()
  local wait = next_return_ms(expiry, now)
  if expiring[1] then
    local mine = math.max(1, tonumber(expiring[1]) - now)
    if wait == 0 or mine < wait then wait = mine end
  end
  return wait
end

local function reserve(i)
  local a = i * 9
  local user, sku, qty_s, order_id, envelope, rapid = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 9]
  local order_key, offer_key = KEYS[8 + 2 * i], KEYS[9 + 2 * i]
  local qty = tonumber(qty_s)
  local held_field, ticket_field, idem_field = fields[3 * i + 1], fields[3 * i + 2], fields[3 * i + 3]
  local event_id = string.sub(order_id, string.find(order_id, '.', 1, true) + 1)
  local fingerprint = sku .. '|' .. qty_s

  -- The bot signals and the offer first, so every answer from here on carries them (the clickstream's attempt
  -- and rejection do): a purchase without a product view in this session, or within 100 ms of the shopper's last.
  local signals = {}
  if viewed_by[i + 1] == 0 then table.insert(signals, 'no_prior_view') end
  if rapid == '1' then table.insert(signals, 'inhuman_rate') end
  local signals_csv = table.concat(signals, ',')
  local offer_id = false
  local of = redis.call('HMGET', offer_key, 'offer_id', 'kind', 'sku', 'price', 'early_access_ms')
  if of[1] and (not of[3] or of[3] == '' or of[3] == sku) then offer_id = of[1] end
  local offer_s = offer_id or ''

  local prior = shopper_field(3 * i + 3)
  if prior then
    local nl = string.find(prior, '\\n', 1, true)
    if string.sub(prior, 1, nl - 1) ~= fingerprint then return {'err', 'IDEMPOTENCY_KEY_CONFLICT', 0, offer_s, signals_csv} end
    return {'replay', string.sub(prior, nl + 1), '', offer_s}
  end

  local m = sku_meta[sku]
  if not m then
    m = redis.call('HMGET', meta, 'status', 'starts_at', 'ends_at', 'window_ms', 'price:' .. sku, 'limit:' .. sku)
    sku_meta[sku] = m
  end
  if not m[1] then return {'err', 'SALE_NOT_FOUND', 0, offer_s, signals_csv} end
  local price_s = m[5]
  if not price_s then return {'err', 'SKU_NOT_FOUND', 0, offer_s, signals_csv} end
  if shopper_field(3 * i + 2) then return {'err', 'TICKET_REUSED', 0, offer_s, signals_csv} end

  local early_ms = 0
  if offer_id then
    if of[2] == 'price' and tonumber(of[4]) then price_s = string.format('%d', tonumber(of[4])) end
    if of[2] == 'early_access' then early_ms = tonumber(of[5]) or 0 end
  end

  local starts_at, ends_at = tonumber(m[2]), tonumber(m[3])
  if m[1] == 'ended' or now >= ends_at or now < starts_at - early_ms then return {'err', 'SALE_NOT_LIVE', 0, offer_s, signals_csv} end

  local held = tonumber(shopper_field(3 * i + 1)) or 0
  if held + qty > (tonumber(m[6]) or 1) then return {'err', 'SALE_LIMIT_REACHED', 0, offer_s, signals_csv} end
  local available = available_by[sku]
  if available == nil then
    available = tonumber(redis.call('HGET', stock, sku)) or 0
    available_by[sku] = available
  end
  if available < qty then
    if available > 0 then return {'err', 'SALE_FEWER_LEFT', 0, offer_s, signals_csv} end
    return {'err', 'SALE_SOLD_OUT', sold_out_wait(), offer_s, signals_csv}
  end

  -- Numbers go to Redis and into JSON as strings made once: qty_s is the caller's validated integer.
  local expires_s = string.format('%d', now + tonumber(m[4]))

  -- JSON by concatenation (cjson costs more than the rest of the script): the envelope is the event's JSON
  -- without its closing brace; every value added here is an id or SKU already validated against a
  -- pattern without quotes or backslashes, an integer string, or an offer id that goes through cjson.
  local signals_json = ''
  if #signals > 0 then signals_json = ',"bot_signals":["' .. table.concat(signals, '","') .. '"]' end
  local ctx = envelope .. signals_json .. '}'
  local offer_json = 'null'
  if offer_id then offer_json = cjson.encode(offer_id) end
  local order_fields = ',"order_id":"' .. order_id .. '","price":' .. price_s .. ',"qty":' .. qty_s
    .. ',"status":"reserved","expires_at":' .. expires_s
  local event = envelope .. signals_json .. ',"event_id":"' .. event_id .. '","type":"order_reserved","ts":' .. now_s
    .. order_fields
  if offer_id then event = event .. ',"offer_id":' .. offer_json end
  event = event .. '}'
  redis.call('HSET', order_key, 'user', user, 'sku', sku, 'qty', qty_s, 'price', price_s, 'status', 'reserved',
    'reserved_at', now_s, 'expires_at', expires_s, 'offer_id', offer_id or '', 'ctx', ctx)
  redis.call('XADD', outbox, '*', 'k', user, 'e', event)

  local answer = '{"order_id":"' .. order_id .. '","status":"reserved","sku":"' .. sku .. '","qty":' .. qty_s
    .. ',"price":' .. price_s .. ',"expires_at":' .. expires_s .. ',"offer_id":' .. offer_json .. '}'
  -- Recorded only once the order and its event are written: a purchase that Redis refuses on its offer or its order
  -- (a key of the wrong type) leaves no count, ticket, answer, stock or expiry change behind.
  available_by[sku] = available - qty
  taken[sku] = (taken[sku] or 0) + qty
  table.insert(expiring, expires_s)
  table.insert(expiring, order_id)
  written[held_field] = string.format('%d', held + qty)
  written[ticket_field] = '1'
  written[idem_field] = fingerprint .. '\\n' .. answer
  return {'ok', answer, signals_csv, offer_s}
end

-- A purchase that raises an error (a key of the wrong type, say an offer some job wrote as a string) fails
-- alone, as it did before purchases were batched: the others in the batch go on.
local replies = {}
for i = 0, n - 1 do
  local ok, reply = pcall(reserve, i)
  if not ok then
    if type(reply) == 'table' and reply.err then reply = reply.err end
    reply = {'failed', tostring(reply)}
  end
  replies[i + 1] = reply
end

-- The batch's writes to the shared keys, once each: per purchase they were most of the script's calls.
for sku, units in pairs(taken) do
  local units_s = string.format('%d', units)
  redis.call('HINCRBY', stock, sku, '-' .. units_s)
  redis.call('HINCRBY', reserved, sku, units_s)
end
if #expiring > 0 then redis.call('ZADD', expiry, unpack(expiring)) end
local shopper_writes = {}
for field, value in pairs(written) do
  table.insert(shopper_writes, field)
  table.insert(shopper_writes, value)
end
if #shopper_writes > 0 then redis.call('HSET', bought, unpack(shopper_writes)) end
return replies
`;

/**
 * payOrder — KEYS: order stock reserved sold bought expiry outbox meta (which holds limit:<sku>).
 * ARGV: user orderId paidEventId expiredEventId.
 * Returns {'paid', reacquired(0/1), alreadyPaid(0/1)} | {'err', code, reason} (ORDER_EXPIRED: why the unit could
 * not be taken back, 'sale_ended' | 'unit_taken' | 'limit_reached').
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
if m[1] == 'ended' or now >= tonumber(m[2]) then return {'err', 'ORDER_EXPIRED', 'sale_ended'} end
local held_field = user .. '|' .. sku
local held = tonumber(redis.call('HGET', bought, held_field)) or 0
local limit = tonumber(m[3]) or 1
local available = tonumber(redis.call('HGET', stock, sku)) or 0
if available < qty then return {'err', 'ORDER_EXPIRED', 'unit_taken'} end
if held + qty > limit then return {'err', 'ORDER_EXPIRED', 'limit_reached'} end
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
 * joinQueue — KEYS: meta queue queueCounter stock offer rateIp rateShopper expiry queueAddresses.
 * ARGV: user ipRate ipBurst shopperRate shopperBurst ipHash accountsPerAddress.
 * The one Redis step of a waiting shopper: the place is assigned once (a second join answers the same
 * place and writes nothing but the rate buckets), and the offer that changes admission is read here, once.
 * Admission itself is decided in-process from the signed place (waiting-room.ts), so polls cost Redis nothing.
 * Returns {'joined', position, joinedNow, unitsLeft, offerId, offerKind, earlyAccessMs} | {'err', code, retryMs[, position]}
 * (SALE_SOLD_OUT: the ms until a held unit may come back, 0 = final, and the place the shopper had, '' when none).
 */
const JOIN_QUEUE = `${NOW}${TAKE_TOKEN}${NEXT_RETURN}
local meta, queue, counter, stock, offer_key, addresses = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[9]
local user = ARGV[1]
local now = now_ms()
local wait = take_token(KEYS[6], tonumber(ARGV[2]), tonumber(ARGV[3]), now)
if wait > 0 then return {'err', 'RATE_LIMITED', wait} end
wait = take_token(KEYS[7], tonumber(ARGV[4]), tonumber(ARGV[5]), now)
if wait > 0 then return {'err', 'RATE_LIMITED', wait} end

local m = redis.call('HMGET', meta, 'status', 'ends_at')
if not m[1] then return {'err', 'SALE_NOT_FOUND', 0} end
if m[1] == 'ended' or now >= tonumber(m[2]) then return {'err', 'SALE_NOT_LIVE', 0} end
local position = tonumber(redis.call('HGET', queue, user))
local remaining = 0
for _, v in ipairs(redis.call('HVALS', stock)) do remaining = remaining + tonumber(v) end
-- The place the shopper had, if any: the refusal event says how close they came.
if remaining <= 0 then return {'err', 'SALE_SOLD_OUT', next_return_ms(KEYS[8], now), position or ''} end

local joined = 0
if not position then
  -- A crowd of made-up accounts from one address cannot fill the queue: each address brings at most
  -- ARGV[7] accounts into this sale's queue (see sale-core/README.md, "Waiting room").
  if (tonumber(redis.call('HGET', addresses, ARGV[6])) or 0) >= tonumber(ARGV[7]) then
    return {'err', 'QUEUE_ADDRESS_FULL', 0}
  end
  redis.call('HINCRBY', addresses, ARGV[6], 1)
  position = redis.call('INCR', counter)
  redis.call('HSET', queue, user, position)
  joined = 1
end
local of = redis.call('HMGET', offer_key, 'offer_id', 'kind', 'early_access_ms')
return {'joined', position, joined, remaining, of[1] or '', of[2] or '', tonumber(of[3]) or 0}
`;

/**
 * saleState — KEYS: meta stock expiry. What a poll needs to know of a sale, read by each process once every
 * few hundred ms (waiting-room.ts SaleViews), never per request. Read-only.
 * Returns {status, startsAt, endsAt, admissionRate, admissionBurst, unitsLeft, msUntilAHeldUnitMayReturn (0: none)},
 * status '' when the sale does not exist.
 */
const SALE_STATE = `${NOW}${NEXT_RETURN}
local m = redis.call('HMGET', KEYS[1], 'status', 'starts_at', 'ends_at', 'admission_rate', 'admission_burst')
if not m[1] then return {'', 0, 0, 0, 0, 0, 0} end
local remaining = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do remaining = remaining + tonumber(v) end
local back = 0
if remaining <= 0 then back = next_return_ms(KEYS[3], now_ms()) end
return {m[1], m[2], m[3], m[4], m[5], remaining, back}
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
-- Both decoded before the first write: a script that fails half-way keeps what it wrote (Redis has no
-- rollback), and a value cjson refuses (a lone UTF-16 surrogate) must leave no half-made sale behind.
local meta = cjson.decode(ARGV[1])
local skus = cjson.decode(ARGV[3])
for k, v in pairs(meta) do redis.call('HSET', KEYS[1], k, tostring(v)) end
redis.call('SET', KEYS[2], ARGV[2])
for _, s in ipairs(skus) do
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

export type Reply = (string | number | null)[];

// The raw commands ioredis defines: positional KEYS then ARGV. Only this module calls them, through the
// typed wrappers below, which build every key from the sale id: a call site cannot swap two keys.
interface RawScripts {
  reserveUnits(...args: (string | number)[]): Promise<Reply[]>;
  payOrder(...args: (string | number)[]): Promise<Reply>;
  expireOrder(...args: (string | number)[]): Promise<number>;
  joinQueue(...args: (string | number)[]): Promise<Reply>;
  saleState(...args: string[]): Promise<(string | number)[]>;
  takeTokens(...args: (string | number)[]): Promise<number>;
  createSale(...args: (string | number)[]): Promise<number>;
  stockLedger(...args: string[]): Promise<string[][]>;
}

declare const saleScripts: unique symbol;
/** A connection with the sale scripts loaded (withSaleScripts); call them through the wrappers below. */
export type SaleRedis = Redis & { readonly [saleScripts]: true };

const raw = (redis: SaleRedis | ChainableCommander) => redis as unknown as RawScripts;

/** Adds the sale scripts to a connection (idempotent per connection). */
export function withSaleScripts(redis: Redis): SaleRedis {
  const r = redis as Redis & { __saleScripts?: boolean };
  if (r.__saleScripts) return r as SaleRedis;
  // No fixed number of keys: a batch brings two per purchase, and the count goes first (see reserveUnitsScript).
  redis.defineCommand('reserveUnits', { lua: RESERVE_UNITS });
  redis.defineCommand('payOrder', { numberOfKeys: 8, lua: PAY_ORDER });
  redis.defineCommand('expireOrder', { numberOfKeys: 6, lua: EXPIRE_ONE });
  redis.defineCommand('joinQueue', { numberOfKeys: 9, lua: JOIN_QUEUE });
  redis.defineCommand('saleState', { numberOfKeys: 3, lua: SALE_STATE });
  redis.defineCommand('takeTokens', { numberOfKeys: 2, lua: TAKE_TOKENS });
  redis.defineCommand('createSale', { numberOfKeys: 6, lua: CREATE_SALE });
  redis.defineCommand('stockLedger', { numberOfKeys: 4, lua: STOCK_LEDGER });
  r.__saleScripts = true;
  return r as SaleRedis;
}

/** The shared token buckets a request takes from (see TAKE_TOKEN). */
export interface BucketLimits {
  ipRatePerSecond: number;
  ipBurst: number;
  shopperRatePerSecond: number;
  shopperBurst: number;
}

export interface ReserveUnitCall {
  saleId: string;
  userId: string;
  sku: string;
  qty: number;
  /** "<saleId>.<uuidv7>": the script reads the order_reserved event id back out of it. */
  orderId: string;
  ticketId: string;
  idempotencyKey: string;
  sessionId: string;
  /** The event envelope's JSON without its closing brace (the script appends the order's fields). */
  envelopeJson: string;
  /** The shopper's previous attempt came less than 100 ms before this one (the inhuman_rate bot signal). */
  rapid: boolean;
}

/**
 * Purchases of one sale in one script call (RESERVE_UNITS): one reply per purchase, in order. Every call must
 * name `saleId`: the keys are that sale's, and a purchase of another sale in the batch is refused here.
 */
export function reserveUnitsScript(redis: SaleRedis, saleId: string, calls: readonly ReserveUnitCall[]): Promise<Reply[]> {
  const k = saleKeys(saleId);
  const keys: string[] = [k.meta, k.stock, k.reserved, k.bought, k.expiry, k.outbox, k.viewed];
  const args: (string | number)[] = [];
  for (const c of calls) {
    if (c.saleId !== saleId) throw new Error(`a purchase of sale ${c.saleId} in a batch of sale ${saleId}`);
    keys.push(k.order(c.orderId), k.offer(c.userId));
    args.push(c.userId, c.sku, c.qty, c.orderId, c.envelopeJson, c.sessionId, c.ticketId, c.idempotencyKey, c.rapid ? '1' : '0');
  }
  return raw(redis).reserveUnits(keys.length, ...keys, ...args);
}

/** An answered purchase, as the purchase script kept it: "<sku>|<qty>\n<answer JSON>", or null. */
export function answeredPurchase(redis: SaleRedis, c: { saleId: string; userId: string; idempotencyKey: string }): Promise<string | null> {
  return redis.hget(saleKeys(c.saleId).bought, answeredPurchaseField(c.userId, c.idempotencyKey));
}

/** The field of `bought` that keeps a purchase's answer under its idempotency key (see RESERVE_UNITS). */
export const answeredPurchaseField = (userId: string, idempotencyKey: string) => `idem:${userId}:${idempotencyKey}`;

/** A payment (PAY_ORDER); the sale id is the order id's prefix. */
export function payOrderScript(
  redis: SaleRedis,
  c: { saleId: string; orderId: string; userId: string; paidEventId: string; expiredEventId: string },
): Promise<Reply> {
  const k = saleKeys(c.saleId);
  return raw(redis).payOrder(
    k.order(c.orderId),
    k.stock,
    k.reserved,
    k.sold,
    k.bought,
    k.expiry,
    k.outbox,
    k.meta,
    c.userId,
    c.orderId,
    c.paidEventId,
    c.expiredEventId,
  );
}

/** Queues one expiry (EXPIRE_ONE) on a pipeline: the sweeper sends a batch in one round trip. */
export function expireOrderScript(pipeline: ChainableCommander, c: { saleId: string; orderId: string; eventId: string }): void {
  const k = saleKeys(c.saleId);
  void raw(pipeline).expireOrder(k.order(c.orderId), k.stock, k.reserved, k.bought, k.expiry, k.outbox, c.orderId, c.eventId);
}

/** A shopper joins a sale's waiting room (JOIN_QUEUE): the only Redis step of a waiting shopper. */
export function joinQueueScript(
  redis: SaleRedis,
  c: { saleId: string; userId: string; ipHash: string; limits: BucketLimits; accountsPerAddress: number },
): Promise<Reply> {
  const k = saleKeys(c.saleId);
  const l = c.limits;
  return raw(redis).joinQueue(
    k.meta,
    k.queue,
    k.queueCounter,
    k.stock,
    k.offer(c.userId),
    k.rateByIp(c.ipHash),
    k.rateByShopper(c.userId),
    k.expiry,
    k.queueAddresses,
    c.userId,
    l.ipRatePerSecond,
    l.ipBurst,
    l.shopperRatePerSecond,
    l.shopperBurst,
    c.ipHash,
    c.accountsPerAddress,
  );
}

/** A sale's state as the waiting room's per-process view needs it (SALE_STATE). */
export function saleStateScript(redis: SaleRedis, saleId: string): Promise<(string | number)[]> {
  const k = saleKeys(saleId);
  return raw(redis).saleState(k.meta, k.stock, k.expiry);
}

/** A token from the sale's buckets of the address and the shopper (TAKE_TOKENS): 0, or the ms to wait. */
export function takeTokensScript(
  redis: SaleRedis,
  c: { saleId: string; ipHash: string; userId: string; limits: BucketLimits },
): Promise<number> {
  const k = saleKeys(c.saleId);
  const l = c.limits;
  return raw(redis).takeTokens(
    k.rateByIp(c.ipHash),
    k.rateByShopper(c.userId),
    l.ipRatePerSecond,
    l.ipBurst,
    l.shopperRatePerSecond,
    l.shopperBurst,
  );
}

/** Stores a new sale (CREATE_SALE): 1, or 0 when a sale of that id exists. */
export function createSaleScript(
  redis: SaleRedis,
  c: { saleId: string; metaJson: string; catalogJson: string; skusJson: string },
): Promise<number> {
  const k = saleKeys(c.saleId);
  return raw(redis).createSale(k.meta, k.catalog, k.stock, k.reserved, k.sold, k.initial, c.metaJson, c.catalogJson, c.skusJson);
}

/** One consistent read of the four stock counters (STOCK_LEDGER), each as HGETALL's flat list. */
export function stockLedgerScript(redis: SaleRedis, saleId: string): Promise<string[][]> {
  const k = saleKeys(saleId);
  return raw(redis).stockLedger(k.stock, k.reserved, k.sold, k.initial);
}
