// Redis client factory. Keys that one script touches together live in one hash slot
// (`sale:{id}:…`) so the same scripts run unchanged on Redis Cluster.
import { Redis, type RedisOptions } from 'ioredis';
import { config } from './config.js';

export function createRedis(options: RedisOptions = {}, url: string = config().redis.url): Redis {
  return new Redis(url, {
    // Fail fast while Redis is down instead of queueing shopper requests without bound; callers
    // turn the error into a 503 and the shopper retries.
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    connectTimeout: 2000,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 1000),
    ...options,
  });
}

export type { Redis };
