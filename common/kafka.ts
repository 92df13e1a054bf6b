// Kafka client factory (kafkajs). Topics are created by the stack / ops, never auto-created.
import { type Admin, type ITopicConfig, Kafka, type KafkaConfig, logLevel } from 'kafkajs';
import { config } from './config.js';
import { createLogger } from './logger.js';

// The default-partitioner notice is about kafkajs 1.x migrations; our keys are always set.
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

export function createKafka(clientId: string, overrides: Partial<KafkaConfig> = {}): Kafka {
  const log = createLogger(`kafka:${clientId}`);
  return new Kafka({
    clientId: `${config().kafka.clientId}-${clientId}`,
    brokers: config().kafka.brokers,
    // kafkajs logs a retried, recovered request as ERROR; keep those at warn in our logs.
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }) => {
        const { message, ...rest } = entry;
        log[LEVELS[level] === 'error' ? 'warn' : (LEVELS[level] ?? 'info')](rest, message);
      },
    ...overrides,
  });
}

/**
 * Creates topics (those that exist already are left as they are) and waits until every partition has a
 * leader. kafkajs's own `waitForLeaders` gives up when a freshly started broker answers the metadata poll
 * with "This server does not host this topic-partition", which it does for a moment after creating one;
 * here that answer just means "not yet".
 */
export async function createTopicsAndWait(admin: Admin, topics: ITopicConfig[], timeoutMs = 30_000): Promise<void> {
  await admin.createTopics({ waitForLeaders: false, topics });
  const names = topics.map((t) => t.topic);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics: found } = await admin.fetchTopicMetadata({ topics: names });
      const ready =
        found.length === names.length && found.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0));
      if (ready) return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    if (Date.now() > deadline) throw new Error(`Kafka topics ${names.join(', ')} have no leaders after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
