// What every HTTP service here shares: fastify with the TypeBox type provider, the OpenAPI document at
// /openapi.json, liveness and readiness, Prometheus metrics, and coded JSON errors. A module adds its
// own routes and its own error catalogue (AppError subclasses or codes) on top.

import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import Type from 'typebox';
import { config } from './config.js';
import { collectProcessMetrics, registry } from './metrics.js';

/** An error a person can act on: the code is stable for programs, the message is for people. */
export class AppError extends Error {
  constructor(
    readonly code: string,
    readonly statusCode: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'AppError';
  }
}

export const ErrorBody = Type.Object(
  { error: Type.Object({ code: Type.String(), message: Type.String() }) },
  { $id: 'ErrorBody', description: 'Every error answer: a stable code and a message a person can act on.' },
);

export interface ServiceAppOptions {
  name: string;
  version?: string;
  description?: string;
  /** Readiness: the dependencies this service cannot serve without. */
  ready?: () => Promise<boolean>;
  bodyLimit?: number;
  fastify?: FastifyServerOptions;
}

/** Translates fastify's own errors (bad JSON, validation, size) into our coded shape. */
function toAppError(error: FastifyError): AppError {
  if (error instanceof AppError) return error;
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('MALFORMED_JSON', 400, `The request body is not valid JSON: ${error.message}`);
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('BODY_TOO_LARGE', 413, `The request body is larger than this endpoint accepts (${error.message}).`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('UNSUPPORTED_MEDIA_TYPE', 415, 'Send the body as application/json.');
  }
  if (error.validation) {
    const where = error.validationContext ?? 'request';
    return new AppError('INVALID_REQUEST', 400, `Invalid ${where}: ${error.message}`);
  }
  if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    return new AppError('BAD_REQUEST', error.statusCode, error.message);
  }
  return new AppError('INTERNAL', 500, 'Something went wrong on our side; try again shortly.');
}

export async function createServiceApp(options: ServiceAppOptions): Promise<FastifyInstance> {
  collectProcessMetrics();
  const app = Fastify({
    logger: { name: options.name, level: config().logLevel },
    bodyLimit: options.bodyLimit ?? 16 * 1024,
    // Shoppers retry; one slow client must not hold a socket for long.
    requestTimeout: 10_000,
    // Strict edge: a number where a string belongs, or a field we do not know, is refused with a message
    // instead of being coerced or silently dropped (fastify's defaults). Path and query values arrive as
    // strings, so routes declare them as strings (with a pattern) and convert them themselves.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
    ...options.fastify,
  }).withTypeProvider<TypeBoxTypeProvider>();

  await app.register(swagger, {
    openapi: {
      info: { title: options.name, version: options.version ?? '1', description: options.description },
    },
  });
  app.addSchema(ErrorBody);

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const appError = toAppError(error);
    // A 5xx we chose (STORE_UNAVAILABLE while Redis is away) was logged where it was chosen; only a
    // surprise is logged here, or an outage would log once per shopper request.
    if (appError.statusCode >= 500 && !(error instanceof AppError)) request.log.error({ err: error }, 'request failed');
    reply
      .headers(appError.headers)
      .code(appError.statusCode)
      .send({ error: { code: appError.code, message: appError.message } });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ error: { code: 'NOT_FOUND', message: `No route ${request.method} ${request.url}.` } });
  });

  const hidden = { schema: { hide: true } };
  app.get('/openapi.json', hidden, async () => app.swagger());
  app.get('/healthz', hidden, async () => ({ ok: true }));
  app.get('/readyz', hidden, async (_request, reply) => {
    const ready = options.ready ? await options.ready().catch(() => false) : true;
    reply.code(ready ? 200 : 503).send({ ready });
  });
  app.get('/metrics', hidden, async (_request, reply) => {
    reply.header('content-type', registry.contentType).send(await registry.metrics());
  });
  return app;
}

/** Stop accepting, let in-flight requests finish, then run the service's own drain. */
export function closeOnSignals(app: FastifyInstance, drain: () => Promise<void> = async () => {}): void {
  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    app.log.info({ signal }, 'shutting down');
    await app.close();
    await drain();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
}
