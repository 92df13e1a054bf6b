// Builds clickstream events from a shopper's request context and hands them to the emitter.
import type { ClickstreamEvent } from '../common/events.js';
import { type ClickstreamDetail, envelope, type SaleContext, type ShopperContext } from './context.js';
import { newOrderEventId as newEventId } from './ids.js';

export function track(
  sc: SaleContext,
  ctx: ShopperContext,
  saleId: string,
  sku: string | null,
  detail: ClickstreamDetail,
  extra: { offer_id?: string | null; bot_signals?: string[]; ts?: number } = {},
): void {
  // `ts` when the event happened earlier than it is built: a purchase attempt is stamped when the request
  // arrived, though built after the script whose bot signals it carries.
  const now = extra.ts ?? Date.now();
  const event = { event_id: newEventId(now), ts: now, ...envelope(ctx, saleId, sku), ...detail } as ClickstreamEvent;
  if (extra.offer_id) event.offer_id = extra.offer_id;
  if (extra.bot_signals && extra.bot_signals.length > 0) event.bot_signals = extra.bot_signals;
  sc.clickstream.emit(event);
}
