// The clickstream the ingest benches produce: add-to-cart events of 5,000 shoppers over 20 SKUs, each a
// Kafka message keyed as the sale core keys it, valid against the event contract.
import type { Message } from 'kafkajs';
import { encodeEvent, keyOf, newEventId } from '../common/events.js';

export function clickMessage(i: number, ts = Date.now()): Message {
  const shopper = i % 5000;
  const event = {
    event_id: newEventId(ts),
    type: 'add_to_cart' as const,
    ts,
    sale_id: 'bench-sale',
    user_id: shopper % 3 === 0 ? null : `user-${shopper}`,
    anon_id: `anon-${shopper}`,
    session_id: `session-${shopper}`,
    sku: `sku-${i % 20}`,
    channel: 'web' as const,
    device: 'phone',
    ip_hash: 'a1b2c3d4e5f60718',
    price: 1999,
    qty: 1,
  };
  return { key: keyOf(event), value: encodeEvent(event) };
}
