// Reads a test's own dead-letter topic back.
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';

export interface ParkedMessage {
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

/**
 * Everything in the topic once it holds at least `expected` messages: polls until that many arrived, then
 * reads on to the end of the log as it stands, so a surplus (a message parked twice) shows up too.
 */
export async function readDeadLetters(kafka: Kafka, topic: string, expected: number, timeoutMs = 20_000): Promise<ParkedMessage[]> {
  const consumer = kafka.consumer({ groupId: `dlq-reader-${randomUUID()}`, maxWaitTimeInMs: 100 });
  const admin = kafka.admin();
  const parked: ParkedMessage[] = [];
  const next = new Map<number, bigint>();
  await Promise.all([consumer.connect(), admin.connect()]);
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(message.headers ?? {})) headers[name] = String(value);
        parked.push({ key: message.key?.toString() ?? null, value: message.value?.toString() ?? null, headers });
        next.set(partition, BigInt(message.offset) + 1n);
      },
    });
    const deadline = Date.now() + timeoutMs;
    const readToEnd = async () => {
      if (parked.length < expected) return false;
      const ends = await admin.fetchTopicOffsets(topic);
      return ends.every((end) => (next.get(end.partition) ?? BigInt(end.low)) >= BigInt(end.high));
    };
    while (!(await readToEnd()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    return parked;
  } finally {
    await Promise.all([consumer.disconnect(), admin.disconnect()]);
  }
}
