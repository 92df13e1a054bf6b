// The Kafka topics of the event contract. Each topic has one writer:
//   clickstream.v1 — sale-core (clickstream emitter)
//   orders.v1      — sale-core (outbox relay)
//   dlq.v1         — ingest (messages that failed to decode or validate)
// They are created explicitly by the stack (and by ops in production); nothing relies on auto-create.

const DAY_MS = 24 * 60 * 60 * 1000;

export interface TopicSpec {
  name: string;
  partitions: number;
  retentionMs: number;
}

export const TOPICS = {
  clickstream: { name: 'clickstream.v1', partitions: 6, retentionMs: 7 * DAY_MS },
  orders: { name: 'orders.v1', partitions: 6, retentionMs: 30 * DAY_MS },
  deadLetters: { name: 'dlq.v1', partitions: 2, retentionMs: 30 * DAY_MS },
} as const satisfies Record<string, TopicSpec>;

export const ALL_TOPICS: TopicSpec[] = Object.values(TOPICS);
