// What a consumer hands a sink: one partition's run of messages, decoded and validated, with the
// offsets it spans. Boundaries are part of the batch's identity (see replay-fence.ts).
import type { FlashSaleEvent } from '../common/events.js';

export interface SourcedEvent {
  event: FlashSaleEvent;
  partition: number;
  offset: string;
  /** The message bytes `event` was decoded from, when a sink may pass them on instead of re-encoding. */
  raw?: Buffer;
}

export interface SinkBatch {
  topic: string;
  partition: number;
  /** First and last Kafka offsets the batch spans, dead letters included. */
  firstOffset: string;
  lastOffset: string;
  events: SourcedEvent[];
  /** True when this re-writes a batch a previous owner may already have written (crash, rebalance). */
  replay: boolean;
  /**
   * Set on a part of a batch the sink refused for good: the consumer splits such a batch in halves (by
   * event index, so a replay cuts the same parts) until the refused events stand alone. `firstOffset` /
   * `lastOffset` stay the whole batch's; this is the part's own range, and its events are the part's.
   */
  part?: { firstOffset: string; lastOffset: string };
}

export interface Sink {
  readonly name: string;
  /**
   * True for a sink that drops a re-written batch only when it has exactly its first boundaries
   * (the warehouse's insert deduplication token); false for one that is idempotent per event anyway.
   */
  readonly needsStableBatches: boolean;
  write(batch: SinkBatch): Promise<void>;
}

/**
 * The sink's dedup identity of a batch: the same source range always yields the same token. A part of a
 * split batch adds its own range to its batch's token, so a replay that splits the batch the same way
 * writes each part under the token it had, and no part can collide with a whole batch.
 */
export function batchToken(batch: Pick<SinkBatch, 'topic' | 'partition' | 'firstOffset' | 'lastOffset' | 'part'>): string {
  const whole = `${batch.topic}:${batch.partition}:${batch.firstOffset}-${batch.lastOffset}`;
  return batch.part ? `${whole}/${batch.part.firstOffset}-${batch.part.lastOffset}` : whole;
}

/**
 * Whether a sink error says the data itself is refused (`retriable: false`, as WarehouseError and
 * OrderStoreError carry it): retrying cannot help, so the batch is split and the rows at fault parked.
 * An error that does not say is retried.
 */
export function isRefusedForGood(error: unknown): boolean {
  return error instanceof Error && (error as { retriable?: unknown }).retriable === false;
}
