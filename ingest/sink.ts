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

/** The sink's dedup identity of a batch: the same source range always yields the same token. */
export function batchToken(batch: Pick<SinkBatch, 'topic' | 'partition' | 'firstOffset' | 'lastOffset'>): string {
  return `${batch.topic}:${batch.partition}:${batch.firstOffset}-${batch.lastOffset}`;
}
