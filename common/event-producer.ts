// The sale core's Kafka producer: the clickstream emitter and the outbox relay send through this, every
// purchase twice (purchase_attempt, order_reserved). On @platformatic/kafka rather than kafkajs, which the rest
// of the platform uses (consumers, admin, tests): kafkajs builds every record in freshly zero-filled buffers
// that it copies again at each level of the request, and at ~20 µs of CPU per message it was the largest single cost in the
// purchase profile; this client encodes the same batch at ~8 µs per message (bench/README.md, "Sale purchase
// path"). Both partition a key the way Kafka's Java client does (murmur2 & 0x7fffffff), so one shopper's
// events land on the same partition whichever client sent them.
import { compatibilityPartitioner, ProduceAcks, Producer, stringSerializer } from '@platformatic/kafka';
import { config } from './config.js';

export interface EventMessage {
  /** The shopper (user id, else anon id): the partition key. */
  key: string;
  /** The event's JSON, as encodeEvent made it. */
  value: Buffer | string;
}

export interface EventProducer {
  /** Resolves once every message is acknowledged by all in-sync replicas; rejects after a few retries. */
  send(topic: string, messages: EventMessage[]): Promise<void>;
  close(): Promise<void>;
}

export interface EventProducerOptions {
  brokers?: string[];
  /** Retries of a failed request before send rejects (the callers replace the producer and decide). */
  retries?: number;
  retryDelayMs?: number;
}

const valueBytes = (value?: Buffer | string) => (value === undefined || Buffer.isBuffer(value) ? value : Buffer.from(value));

/**
 * An idempotent producer (acks from every in-sync replica; the broker drops its own retries of a batch, so a
 * retried send does not land twice). Connects on first send.
 */
export function createEventProducer(clientId: string, options: EventProducerOptions = {}): EventProducer {
  const producer = new Producer<string, Buffer | string, string, string>({
    clientId: `${config().kafka.clientId}-${clientId}`,
    bootstrapBrokers: options.brokers ?? config().kafka.brokers,
    idempotent: true,
    acks: ProduceAcks.ALL,
    // Bounded: a send to a broker that is gone must fail in seconds, so the emitter can drop and count and
    // the relay can leave the entries in Redis and try again, instead of waiting forever inside the client.
    retries: options.retries ?? 3,
    retryDelay: options.retryDelayMs ?? 200,
    connectTimeout: 2000,
    timeout: 5000,
    autocreateTopics: false,
    partitioner: compatibilityPartitioner,
    serializers: { key: stringSerializer, value: valueBytes, headerKey: stringSerializer, headerValue: stringSerializer },
  });
  return {
    async send(topic, messages) {
      await producer.send({ messages: messages.map((m) => ({ topic, key: m.key, value: m.value })) });
    },
    async close() {
      await producer.close(true);
    },
  };
}
