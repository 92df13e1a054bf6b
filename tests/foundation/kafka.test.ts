// kafkajs against the pinned broker: produce, consume in a group, commit, and a rebalance when a
// second member joins — the protocol paths every producer and consumer here relies on.
import type { Consumer, EachMessagePayload } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { createTestTopic, deleteTopics } from '../support/kafka.js';

const kafka = createKafka('foundation-test');
const topics: string[] = [];
const consumers: Consumer[] = [];

afterAll(async () => {
  await Promise.all(consumers.map((c) => c.disconnect()));
  if (topics.length > 0) await deleteTopics(topics);
});

async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('Kafka with kafkajs', () => {
  it('produces, consumes in a group, commits, and rebalances onto a second member', async () => {
    const topic = await createTestTopic('foundation', 4);
    topics.push(topic);
    const groupId = `${topic}-group`;
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const send = (from: number, count: number) =>
      producer.sendBatch({
        topicMessages: [
          { topic, messages: Array.from({ length: count }, (_, i) => ({ key: `shopper-${(from + i) % 17}`, value: String(from + i) })) },
        ],
      });

    const seen = new Map<string, Set<number>>(); // member → partitions it consumed from
    const values: number[] = [];
    const assignments: Record<string, number[]> = {};
    const member = async (name: string) => {
      const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 500 });
      consumers.push(consumer);
      consumer.on(consumer.events.GROUP_JOIN, (e) => {
        assignments[name] = e.payload.memberAssignment[topic] ?? [];
      });
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ partition, message }: EachMessagePayload) => {
          values.push(Number(message.value?.toString()));
          seen.set(name, (seen.get(name) ?? new Set()).add(partition));
        },
      });
      return consumer;
    };

    await send(0, 200);
    await member('first');
    await until('the first 200 messages', () => values.length >= 200);
    expect(assignments.first?.sort()).toEqual([0, 1, 2, 3]);

    // A second member joins: the group rebalances and splits the partitions between them.
    await member('second');
    await until('the rebalance', () => (assignments.second?.length ?? 0) > 0 && (assignments.first?.length ?? 0) < 4);
    expect([...(assignments.first ?? []), ...(assignments.second ?? [])].sort()).toEqual([0, 1, 2, 3]);

    await send(200, 200);
    await until('all 400 messages', () => values.length >= 400);
    await producer.disconnect();
    expect(new Set(values).size).toBe(400);
    expect(seen.get('second')?.size).toBeGreaterThan(0);

    // Offsets were committed: the group's committed offsets add up to everything produced, while the
    // members run (they commit as they go) and after they leave.
    const admin = kafka.admin();
    await admin.connect();
    const committed = async () => {
      const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
      // A partition with nothing committed yet reports -1.
      return (offsets?.partitions ?? []).reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
    };
    try {
      await until('the committed offsets to cover all 400 messages', async () => (await committed()) === 400);
      await Promise.all(consumers.map((c) => c.disconnect()));
      consumers.length = 0;
      expect(await committed()).toBe(400);
    } finally {
      await admin.disconnect();
    }
  });
});
