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

export async function deleteTopics(topics: string[], kafka: Kafka = createKafka('test-admin')): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics });
  } finally {
    await admin.disconnect();
  }
}
