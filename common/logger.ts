// pino, the same logger fastify uses, so a service's request logs and its own lines share one format.
import { pino } from 'pino';
import { config } from './config.js';

export type Logger = pino.Logger;

export function createLogger(name: string, level: string = config().logLevel): Logger {
  return pino({ name, level });
}
