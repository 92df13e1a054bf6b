// The clickstream emitter: what shoppers do goes to Kafka through a bounded in-process buffer,
// flushed in batches (a Kafka producer sends one request per send() call). It never blocks or fails a sale:
// when Kafka is slow or down the buffer fills, and what does not fit is dropped and counted.
import type { EventProducer } from '../common/event-producer.js';
import { type ClickstreamEvent, encodeEvent, keyOf } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { counter, gauge } from '../common/metrics.js';

const emitted = counter({ name: 'flashsale_clickstream_emitted_total', help: 'Clickstream events acknowledged by Kafka.' });
const dropped = counter({
  name: 'flashsale_clickstream_dropped_total',
  help: 'Clickstream events dropped (buffer full, invalid, or Kafka failed), by reason.',
  labelNames: ['reason'],
});
const buffered = gauge({ name: 'flashsale_clickstream_buffered', help: 'Clickstream events waiting in the in-process buffer.' });

export interface ClickstreamOptions {
  /** A new producer: one at the start, and a fresh one after a batch failed (see newProducer). */
  producer: () => EventProducer;
  topic: string;
  log: Logger;
  capacity: number;
  /** Linger before a flush, so concurrent requests share one batch. */
  lingerMs?: number;
  maxBatch?: number;
}

export class ClickstreamEmitter {
  private buffer: { key: string; value: Buffer }[] = [];
  private producer: EventProducer;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private closed = false;
  droppedCount = 0;
  sentCount = 0;

  constructor(private readonly options: ClickstreamOptions) {
    this.producer = this.newProducer();
  }

  // Best-effort by design: few retries (the factory's), so a Kafka outage shows up as counted drops instead of a
  // growing backlog. Idempotent all the same: a retried batch the broker had already written is dropped by the
  // broker instead of landing twice, which would count shoppers twice in the funnel rollups (they add up
  // inserts, they do not dedup by event id).
  private newProducer(): EventProducer {
    return this.options.producer();
  }

  /** Queues an event; returns at once. Invalid events are dropped and counted, never thrown at a shopper. */
  emit(event: ClickstreamEvent): void {
    if (this.closed) {
      this.drop('closed');
      return;
    }
    if (this.buffer.length >= this.options.capacity) {
      this.drop('buffer_full');
      return;
    }
    let value: Buffer;
    try {
      value = encodeEvent(event);
    } catch (error) {
      this.options.log.warn({ err: error, type: event.type }, 'clickstream event failed its schema');
      this.drop('invalid');
      return;
    }
    this.buffer.push({ key: keyOf(event), value });
    buffered.set(this.buffer.length);
    if (this.buffer.length >= (this.options.maxBatch ?? 1000)) this.scheduleFlush(0);
    else this.scheduleFlush(this.options.lingerMs ?? 10);
  }

  private drop(reason: string, n = 1): void {
    this.droppedCount += n;
    dropped.inc({ reason }, n);
  }

  private scheduleFlush(delay: number): void {
    if (this.timer || this.flushing) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flushing = this.flush().finally(() => {
        this.flushing = null;
        if (this.buffer.length > 0 && !this.closed) this.scheduleFlush(this.options.lingerMs ?? 10);
      });
    }, delay);
  }

  private async flush(): Promise<void> {
    if (this.buffer.length === 0) return;
    const batch = this.buffer.splice(0, this.options.maxBatch ?? 1000);
    buffered.set(this.buffer.length);
    try {
      await this.producer.send(this.options.topic, batch);
      this.sentCount += batch.length;
      emitted.inc(batch.length);
    } catch (error) {
      // A fresh producer (new producer id) after a failure: the old one's sequence numbers may no longer
      // match what the broker saw, and the dropped batch is not retried.
      const broken = this.producer;
      this.producer = this.newProducer();
      void broken.close().catch(() => {});
      this.options.log.warn({ err: error, lost: batch.length }, 'clickstream batch not delivered; dropped');
      this.drop('kafka_error', batch.length);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Flushes what is buffered (bounded by `timeoutMs`), then disconnects. */
  async close(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    while (Date.now() < deadline && (this.flushing || this.buffer.length > 0)) {
      if (this.flushing) await this.flushing;
      else {
        this.flushing = this.flush().finally(() => {
          this.flushing = null;
        });
        await this.flushing;
      }
    }
    this.closed = true;
    if (this.buffer.length > 0) this.drop('closed', this.buffer.length);
    this.buffer = [];
    await this.producer.close().catch(() => {});
  }
}
