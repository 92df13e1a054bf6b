// The event contract (DESIGN.md, "Event contract"). Producers encode through here and consumers
// decode through here, so an event that does not match its schema never reaches Kafka from us and
// never reaches the warehouse from anyone.
//
// Topics: clickstream.v1 carries what shoppers do; orders.v1 carries what happens to orders.
// Kafka key = user id, else anon id: one shopper's events stay in order on one partition.

import { isUtf8 } from 'node:buffer';
import Type, { type Static, type TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { v7 as uuidv7 } from 'uuid';
import { TOPICS } from './topics.js';

const Id = (maxLength = 128) => Type.String({ minLength: 1, maxLength });
const UUID = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' });

/** Fields every event carries. */
const Envelope = {
  event_id: UUID, // UUIDv7: time-ordered, and the dedup key in every sink
  ts: Type.Integer({ minimum: 1_500_000_000_000, maximum: 4_102_444_800_000 }), // epoch ms
  sale_id: Id(),
  user_id: Type.Union([Id(), Type.Null()]),
  anon_id: Id(),
  session_id: Id(),
  sku: Type.Union([Id(), Type.Null()]),
  channel: Type.Union([Type.Literal('web'), Type.Literal('app'), Type.Literal('api')]),
  device: Type.String({ maxLength: 64 }),
  ip_hash: Type.String({ pattern: '^[0-9a-f]{16,64}$' }), // never a raw IP
  offer_id: Type.Optional(Type.Union([Id(), Type.Null()])),
  bot_signals: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 16 })),
};

const Money = Type.Integer({ minimum: 0, maximum: 100_000_000 }); // minor units (cents)
// The warehouse keeps it as UInt32, and ClickHouse stores a larger JSON number wrapped (2^33 + 1 as 1).
const QueuePosition = Type.Integer({ minimum: 0, maximum: 4_294_967_295 });

function event<T extends string, P extends Record<string, TSchema>>(type: T, props: P) {
  return Type.Object({ ...Envelope, type: Type.Literal(type), ...props }, { additionalProperties: false });
}

export const ClickstreamSchemas = {
  page_view: event('page_view', { path: Type.String({ maxLength: 512 }) }),
  product_view: event('product_view', { price: Money }),
  add_to_cart: event('add_to_cart', { price: Money, qty: Type.Integer({ minimum: 1, maximum: 100 }) }),
  login: event('login', {}), // stitches anon_id to user_id
  queue_joined: event('queue_joined', { position: QueuePosition }),
  admitted: event('admitted', {}),
  purchase_attempt: event('purchase_attempt', { qty: Type.Integer({ minimum: 1, maximum: 100 }) }),
  purchase_rejected: event('purchase_rejected', { reason: Type.String({ minLength: 1, maxLength: 64 }) }),
  // A queue join turned away (sold out, final or not): the missed-out shopper, with the place it would have had.
  queue_refused: event('queue_refused', {
    reason: Type.String({ minLength: 1, maxLength: 64 }),
    position: Type.Optional(QueuePosition),
  }),
} as const;

const OrderFields = {
  order_id: Id(),
  price: Money,
  qty: Type.Integer({ minimum: 1, maximum: 100 }),
};

export const OrderSchemas = {
  order_reserved: event('order_reserved', { ...OrderFields, status: Type.Literal('reserved'), expires_at: Envelope.ts }),
  order_paid: event('order_paid', { ...OrderFields, status: Type.Literal('paid') }),
  order_expired: event('order_expired', { ...OrderFields, status: Type.Literal('expired') }),
} as const;

type Schemas = typeof ClickstreamSchemas & typeof OrderSchemas;
export type EventType = keyof Schemas;
export type EventOf<T extends EventType> = Static<Schemas[T]>;
export type ClickstreamEvent = { [K in keyof typeof ClickstreamSchemas]: EventOf<K> }[keyof typeof ClickstreamSchemas];
export type OrderEvent = { [K in keyof typeof OrderSchemas]: EventOf<K> }[keyof typeof OrderSchemas];
export type FlashSaleEvent = ClickstreamEvent | OrderEvent;
export type OrderStatus = OrderEvent['status'];

const ALL_SCHEMAS: Schemas = { ...ClickstreamSchemas, ...OrderSchemas };
const validators = Object.fromEntries(Object.entries(ALL_SCHEMAS).map(([type, schema]) => [type, Compile(schema)])) as {
  [K in EventType]: ReturnType<typeof Compile<Schemas[K]>>;
};

export const EVENT_TYPES = Object.keys(ALL_SCHEMAS) as EventType[];
export const CLICKSTREAM_TYPES = Object.keys(ClickstreamSchemas) as (keyof typeof ClickstreamSchemas)[];
export const ORDER_TYPES = Object.keys(OrderSchemas) as (keyof typeof OrderSchemas)[];

export function isEventType(type: unknown): type is EventType {
  return typeof type === 'string' && Object.hasOwn(ALL_SCHEMAS, type);
}

/** The topic an event type belongs to. */
export function topicOf(type: EventType): string {
  return Object.hasOwn(OrderSchemas, type) ? TOPICS.orders.name : TOPICS.clickstream.name;
}

/** Kafka key: one shopper's events stay in order on one partition. */
export function keyOf(event: FlashSaleEvent): string {
  return event.user_id ?? event.anon_id;
}

export function newEventId(now = Date.now()): string {
  return uuidv7({ msecs: now });
}

export class EventContractError extends Error {
  constructor(
    readonly reason: 'malformed_json' | 'invalid_unicode' | 'unknown_type' | 'schema_violation' | 'wrong_topic',
    detail: string,
  ) {
    super(`${reason}: ${detail}`);
    this.name = 'EventContractError';
  }
}

function describeErrors<T extends EventType>(type: T, value: unknown): string {
  const errors = [...validators[type].Errors(value)].slice(0, 5);
  return errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
}

/** Validates an event; throws EventContractError naming what does not match. */
export function validateEvent(value: unknown): FlashSaleEvent {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new EventContractError('schema_violation', 'an event must be a JSON object');
  }
  const type = (value as { type?: unknown }).type;
  if (!isEventType(type)) throw new EventContractError('unknown_type', `unknown event type ${JSON.stringify(type)}`);
  if (!validators[type].Check(value)) throw new EventContractError('schema_violation', `${type}: ${describeErrors(type, value)}`);
  return value as FlashSaleEvent;
}

/** The bytes a producer sends: validated first, so we never publish what a consumer would reject. */
export function encodeEvent(event: FlashSaleEvent): Buffer {
  return Buffer.from(JSON.stringify(validateEvent(event)));
}

/** Refuses a string field (or an element of an array field) holding a lone surrogate: not Unicode text. */
function assertWellFormed(value: unknown): void {
  if (typeof value !== 'object' || value === null) return;
  for (const [field, item] of Object.entries(value)) {
    const strings = Array.isArray(item) ? item : [item];
    for (const string of strings) {
      if (typeof string === 'string' && !(string as string & { isWellFormed(): boolean }).isWellFormed()) {
        throw new EventContractError('invalid_unicode', `/${field} holds a lone UTF-16 surrogate`);
      }
    }
  }
}

/**
 * Decodes a Kafka message value. `expectedTopic`, when given, rejects an event that arrived on the
 * wrong topic (an order event on the clickstream, say) instead of letting it into the wrong table.
 */
export function decodeEvent(bytes: Buffer | Uint8Array | string | null, expectedTopic?: string): FlashSaleEvent {
  if (bytes === null) throw new EventContractError('malformed_json', 'empty message value');
  // Invalid UTF-8 would silently become U+FFFD when read as text: refuse the bytes instead.
  if (typeof bytes !== 'string' && !isUtf8(bytes)) throw new EventContractError('invalid_unicode', 'the message is not valid UTF-8');
  const text =
    typeof bytes === 'string'
      ? bytes
      : (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new EventContractError('malformed_json', (error as Error).message);
  }
  // A lone UTF-16 surrogate can only come from a `\uD800`-`\uDFFF` escape (UTF-8 cannot encode one), and the
  // warehouse refuses it ("missing second part of surrogate pair"): check the strings only then.
  if (text.includes('\\u')) assertWellFormed(parsed);
  const event = validateEvent(parsed);
  if (expectedTopic !== undefined && topicOf(event.type) !== expectedTopic) {
    throw new EventContractError('wrong_topic', `${event.type} belongs on ${topicOf(event.type)}, not ${expectedTopic}`);
  }
  return event;
}
