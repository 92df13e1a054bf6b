// Event → warehouse row, column for column as analytics/SCHEMA.md documents them.
import type { ClickstreamEvent, OrderEvent } from '../common/events.js';
import type { SourcedEvent } from './sink.js';

export function clickstreamRow({ event, partition, offset }: SourcedEvent & { event: ClickstreamEvent }): Record<string, unknown> {
  return {
    event_id: event.event_id,
    type: event.type,
    ts: event.ts,
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
    queue_position: event.type === 'queue_joined' ? event.position : null,
    reject_reason: event.type === 'purchase_rejected' ? event.reason : null,
    kafka_partition: partition,
    kafka_offset: Number(offset),
  };
}

export function orderFactRow({ event, partition, offset }: SourcedEvent & { event: OrderEvent }): Record<string, unknown> {
  return {
    event_id: event.event_id,
    type: event.type,
    status: event.status,
    ts: event.ts,
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
    expires_at: event.type === 'order_reserved' ? event.expires_at : null,
    kafka_partition: partition,
    kafka_offset: Number(offset),
  };
}

/**
 * Columns of clickstream_events a clickstream event's own JSON may name (its contract fields; `price`,
 * `position` and `reason` are EPHEMERAL and fill price_cents, queue_position and reject_reason), plus the
 * Kafka lineage spliced in front. Everything else is derived by the column defaults, exactly as
 * clickstreamRow derives it.
 */
export const CLICKSTREAM_JSON_COLUMNS = [
  'kafka_partition',
  'kafka_offset',
  'event_id',
  'type',
  'ts',
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
const isJsonSpace = (byte: number | undefined) => byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;

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
  let size = 0;
  for (let i = 0; i < events.length; i++) {
    const { raw, partition, offset } = events[i]!;
    if (!raw) return undefined;
    let start = 0;
    while (isJsonSpace(raw[start])) start++;
    // A validated event is a JSON object, so this only guards against a caller passing other bytes.
    if (raw[start] !== OPEN_BRACE) return undefined;
    starts[i] = start + 1;
    const prefix = `{"kafka_partition":${partition},"kafka_offset":${offset},`;
    prefixes[i] = prefix;
    size += prefix.length + raw.length - start; // the brace dropped, one newline added
  }
  const payload = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < events.length; i++) {
    const raw = events[i]!.raw!;
    at += payload.write(prefixes[i]!, at, 'latin1');
    at += raw.copy(payload, at, starts[i]!);
    payload[at++] = 0x0a;
  }
  return payload;
}
