// Event → warehouse row, column for column as analytics/SCHEMA.md documents them.
import type { ClickstreamEvent, OrderEvent } from '../common/events.js';
import type { SourcedEvent } from './sink.js';

/**
 * An epoch-ms time as DateTime64(3) text (`2026-12-01 01:51:03.123`, read in the column's UTC). Never
 * the bare number: ClickHouse versions disagree on whether a JSON number in a DateTime64 column counts
 * milliseconds or seconds (migration 0006), while this text reads the same everywhere.
 */
export function dateTime64Text(ms: number): string {
  return new Date(ms).toISOString().slice(0, 23).replace('T', ' ');
}

export function clickstreamRow({ event, partition, offset }: SourcedEvent & { event: ClickstreamEvent }): Record<string, unknown> {
  return {
    event_id: event.event_id,
    type: event.type,
    ts: dateTime64Text(event.ts),
    sale_id: event.sale_id,
    user_id: event.user_id,
    anon_id: event.anon_id,
    shopper_id: event.user_id ?? event.anon_id,
    session_id: event.session_id,
    sku: event.sku,
    channel: event.channel,
    device: event.device,
    ip_hash: event.ip_hash,
    offer_id: event.offer_id ?? null,
    bot_signals: event.bot_signals ?? [],
    path: event.type === 'page_view' ? event.path : null,
    price_cents: event.type === 'product_view' || event.type === 'add_to_cart' ? event.price : null,
    qty: event.type === 'add_to_cart' || event.type === 'purchase_attempt' ? event.qty : null,
    queue_position: event.type === 'queue_joined' || event.type === 'queue_refused' ? (event.position ?? null) : null,
    reject_reason: event.type === 'purchase_rejected' || event.type === 'queue_refused' ? event.reason : null,
    kafka_partition: partition,
    kafka_offset: Number(offset),
  };
}

export function orderFactRow({ event, partition, offset }: SourcedEvent & { event: OrderEvent }): Record<string, unknown> {
  return {
    event_id: event.event_id,
    type: event.type,
    status: event.status,
    ts: dateTime64Text(event.ts),
    order_id: event.order_id,
    sale_id: event.sale_id,
    user_id: event.user_id,
    anon_id: event.anon_id,
    shopper_id: event.user_id ?? event.anon_id,
    session_id: event.session_id,
    sku: event.sku ?? '',
    channel: event.channel,
    device: event.device,
    offer_id: event.offer_id ?? null,
    bot_signals: event.bot_signals ?? [],
    price_cents: event.price,
    qty: event.qty,
    amount_cents: event.price * event.qty,
    expires_at: event.type === 'order_reserved' ? dateTime64Text(event.expires_at) : null,
    kafka_partition: partition,
    kafka_offset: Number(offset),
  };
}

/**
 * Columns of clickstream_events a clickstream event's own JSON may name (its contract fields; `price`,
 * `position` and `reason` are EPHEMERAL and fill price_cents, queue_position and reject_reason), plus the
 * Kafka lineage spliced in front. The event's `ts` key is renamed `ts_ms` on the way (an EPHEMERAL Int64
 * that fills `ts` by fromUnixTimestamp64Milli, migration 0006), and `ts` itself is not listed, so a
 * second `ts` key fails the insert rather than being read as the engine guesses. Everything else is
 * derived by the column defaults, exactly as clickstreamRow derives it.
 */
export const CLICKSTREAM_JSON_COLUMNS = [
  'kafka_partition',
  'kafka_offset',
  'event_id',
  'type',
  'ts_ms',
  'sale_id',
  'user_id',
  'anon_id',
  'session_id',
  'sku',
  'channel',
  'device',
  'ip_hash',
  'offer_id',
  'bot_signals',
  'path',
  'price',
  'qty',
  'position',
  'reason',
] as const;

const OPEN_BRACE = 0x7b;
const COMMA = 0x2c;
const isJsonSpace = (byte: number | undefined) => byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
const TS_KEY = Buffer.from('"ts":');
const TS_MS_KEY = Buffer.from('"ts_ms":');

/**
 * Where the top-level `"ts":` key starts in an event's bytes, or -1. In valid JSON an unescaped `"ts":`
 * whose quote follows `{` or `,` (spaces aside) can only be a key named ts; events hold no nested
 * objects. A producer that wrote the key another way (`"ts" :`, `"\u0074s"`) gets -1: rows instead.
 */
function tsKeyAt(raw: Buffer, from: number): number {
  const at = raw.indexOf(TS_KEY, from);
  if (at < 0) return -1;
  let before = at - 1;
  while (isJsonSpace(raw[before])) before--;
  return raw[before] === OPEN_BRACE || raw[before] === COMMA ? at : -1;
}

/**
 * JSONEachRow for clickstream_events straight from the validated message bytes: each line is
 * `{"kafka_partition":P,"kafka_offset":O,` followed by the message after its opening brace. Copying bytes
 * costs far less than building a row object and JSON.stringify per event, and ClickHouse parses fewer
 * fields (omitted nulls, no derived columns). Undefined when an event carries no bytes to pass on; the
 * caller then writes rows.
 */
export function clickstreamJsonEachRow(events: readonly SourcedEvent[]): Buffer | undefined {
  const prefixes: string[] = new Array(events.length);
  const starts: number[] = new Array(events.length);
  const tsKeys: number[] = new Array(events.length);
  let size = 0;
  for (let i = 0; i < events.length; i++) {
    const { raw, partition, offset } = events[i]!;
    if (!raw) return undefined;
    let start = 0;
    while (isJsonSpace(raw[start])) start++;
    // A validated event is a JSON object, so this only guards against a caller passing other bytes.
    if (raw[start] !== OPEN_BRACE) return undefined;
    const tsKey = tsKeyAt(raw, start + 1);
    if (tsKey < 0) return undefined;
    starts[i] = start + 1;
    tsKeys[i] = tsKey;
    const prefix = `{"kafka_partition":${partition},"kafka_offset":${offset},`;
    prefixes[i] = prefix;
    // The brace dropped, "ts" renamed "ts_ms", one newline added.
    size += prefix.length + raw.length - start + (TS_MS_KEY.length - TS_KEY.length);
  }
  const payload = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < events.length; i++) {
    const raw = events[i]!.raw!;
    const tsKey = tsKeys[i]!;
    at += payload.write(prefixes[i]!, at, 'latin1');
    at += raw.copy(payload, at, starts[i]!, tsKey);
    at += TS_MS_KEY.copy(payload, at);
    at += raw.copy(payload, at, tsKey + TS_KEY.length);
    payload[at++] = 0x0a;
  }
  return payload;
}
