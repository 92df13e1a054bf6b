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
