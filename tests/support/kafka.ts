// Topics of a test's own, so suites sharing the local broker never read each other's events.
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { createKafka, createTopicsAndWait } from '../../common/kafka.js';

export async function createTestTopic(base: string, partitions = 3, kafka: Kafka = createKafka('test-admin')): Promise<string> {
  const topic = `${base}.test-${randomUUID().slice(0, 8)}`;
  const admin = kafka.admin();
  await admin.connect();
  try {
    await createTopicsAndWait(admin, [{ topic, numPartitions: partitions, replicationFactor: 1 }]);
  } finally {
    await admin.disconnect();
  }
  return topic;
}

/** Ingest's three topics, each of its own (clickstream and orders with the given partitions, one for dead letters). */
export async function createIngestTopics(
  kafka: Kafka,
  partitions: { clickstream: number; orders: number },
): Promise<{ clickstream: string; orders: string; deadLetters: string }> {
  const [clickstream, orders, deadLetters] = await Promise.all([
    createTestTopic('clickstream.v1', partitions.clickstream, kafka),
    createTestTopic('orders.v1', partitions.orders, kafka),
    createTestTopic('dlq.v1', 1, kafka),
  ]);
  return { clickstream, orders, deadLetters };
}

export async function deleteTopics(topics: string[], kafka: Kafka = createKafka('test-admin')): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics });
  } finally {
    await admin.disconnect();
  }
}
