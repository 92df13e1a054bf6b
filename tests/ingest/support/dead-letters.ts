// Reads a test's own dead-letter topic back.
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';

export interface ParkedMessage {
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

export async function readDeadLetters(kafka: Kafka, topic: string, expected: number, timeoutMs = 20_000): Promise<ParkedMessage[]> {
  const consumer = kafka.consumer({ groupId: `dlq-reader-${randomUUID()}`, maxWaitTimeInMs: 100 });
  const parked: ParkedMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(message.headers ?? {})) headers[name] = String(value);
        parked.push({ key: message.key?.toString() ?? null, value: message.value?.toString() ?? null, headers });
      },
    });
    const deadline = Date.now() + timeoutMs;
    while (parked.length < expected && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    // A little longer, so a surplus (a message parked twice) shows up too.
    await new Promise((resolve) => setTimeout(resolve, 500));
    return parked;
  } finally {
    await consumer.disconnect();
  }
}
