// The dead-letter topic (dlq.v1): a message that does not decode or validate, or whose row the sink
// refuses for good, is parked there with its original key and bytes untouched, and where it came from
// and why in headers, so it can be inspected and replayed once fixed. The pipeline moves on past it.
import type { KafkaMessage, Producer } from 'kafkajs';
import type { EventContractError } from '../common/events.js';
import { ingestMetrics } from './metrics.js';

/**
 * Why a message was parked: the contract's reasons (it did not decode or validate), or `sink_refused`
 * (it did, but the sink refused its row for good; `dlq-detail` carries the sink's message and code).
 */
export type DeadLetterReason = EventContractError['reason'] | 'sink_refused';

export interface RejectedMessage {
  topic: string;
  partition: number;
  message: KafkaMessage;
  error: { reason: DeadLetterReason; message: string };
}

export const DEAD_LETTER_HEADERS = {
  reason: 'dlq-reason',
  detail: 'dlq-detail',
  topic: 'dlq-topic',
  partition: 'dlq-partition',
  offset: 'dlq-offset',
  group: 'dlq-group',
  failedAt: 'dlq-failed-at',
} as const;

export class DeadLetters {
  constructor(
    private readonly producer: Producer,
    private readonly topic: string,
    private readonly groupId: string,
  ) {}

  /** Resolves once the broker has every record: only then may the source offsets be committed. */
  async park(rejected: readonly RejectedMessage[]): Promise<void> {
    if (rejected.length === 0) return;
    const failedAt = new Date().toISOString();
    await this.producer.send({
      topic: this.topic,
      acks: -1,
      messages: rejected.map(({ topic, partition, message, error }) => ({
        key: message.key,
        value: message.value,
        headers: {
          [DEAD_LETTER_HEADERS.reason]: error.reason,
          [DEAD_LETTER_HEADERS.detail]: error.message.slice(0, 1000),
          [DEAD_LETTER_HEADERS.topic]: topic,
          [DEAD_LETTER_HEADERS.partition]: String(partition),
          [DEAD_LETTER_HEADERS.offset]: message.offset,
          [DEAD_LETTER_HEADERS.group]: this.groupId,
          [DEAD_LETTER_HEADERS.failedAt]: failedAt,
        },
      })),
    });
    for (const { topic, error } of rejected) ingestMetrics.deadLetters.inc({ group: this.groupId, topic, reason: error.reason });
  }
}
