// Kafka client factory (kafkajs). Topics are created by the stack / ops, never auto-created.
import { Kafka, type KafkaConfig, logLevel } from 'kafkajs';
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
