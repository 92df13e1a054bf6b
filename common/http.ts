// What every HTTP service here shares: fastify with the TypeBox type provider, the OpenAPI document at
// /openapi.json, liveness and readiness, Prometheus metrics, and coded JSON errors. A module adds its
// own routes and its own error catalogue (AppError subclasses or codes) on top.
//
// The edge is strict so that nothing behind it has to be: a body is UTF-8 JSON whose strings are valid
// Unicode (no lone UTF-16 surrogates, which the warehouse and most JSON tools refuse), a request arrives
// whole within REQUEST_TIME_LIMIT_MS, an undeclared method on a known path is a 405 with `Allow`, and
// every refusal, even the ones fastify or node make before a route runs, has the coded error shape.
//
// The OpenAPI document is a contract: every route's error answers are added here by route kind (input →
// 400, security → 401, path parameters → 404 and 414, a body → 408, 413, 415), plus the statuses a route
// names in `schema.errorStatuses`; request headers a handler checks itself are documented from
// `schema.handlerHeaders`, without fastify validating them (so the handler's own coded error answers).

import { isUtf8 } from 'node:buffer';
import type { Socket } from 'node:net';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifySchema,
  type FastifyServerOptions,
  LogController,
  type RouteOptions,
} from 'fastify';
import Type from 'typebox';
import { config } from './config.js';
import { recordRequests } from './http-requests.js';
import { collectProcessMetrics, registry } from './metrics.js';

/**
 * An error a person can act on: the code is stable for programs, the message is for people.
 *
 * Made without a stack trace. It is an answer, not a fault: every refusal (sold out, rate limited, not found) is
 * one, and nothing reads its stack (the error handler logs only errors that are not AppErrors). Capturing a stack
 * cost ~12 µs per refusal here, against ~1 µs without: in a spike most joins are refused once sold out, and under a
 * flood most requests are refused, so refusing must stay cheap (bench/README.md, "Refusals without a stack").
 */
export class AppError extends Error {
  constructor(
    readonly code: string,
    readonly statusCode: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.name = 'AppError';
  }
}

export const ErrorBody = Type.Object(
  { error: Type.Object({ code: Type.String(), message: Type.String() }) },
  { $id: 'ErrorBody', description: 'Every error answer: a stable code and a message a person can act on.' },
);

declare module 'fastify' {
  interface FastifySchema {
    /**
     * Error statuses this route answers beyond those its kind implies (see commonErrorStatuses): the
     * OpenAPI document lists each with the ErrorBody shape (and Retry-After where it is sent).
     */
    errorStatuses?: readonly number[];
    /**
     * Request headers the handler reads and checks itself: documented in OpenAPI as header parameters,
     * not validated by fastify, so a bad value gets the handler's own coded error.
     */
    handlerHeaders?: unknown;
  }
}

/**
 * How callers of the platform's HTTP APIs authenticate. A route names the ones it accepts in
 * `schema.security` (`[{}, {ShopperSession: []}]` when the credential is optional); the document lists
 * only the schemes some route uses.
 */
export const SECURITY_SCHEMES = {
  ShopperSession: {
    type: 'http',
    scheme: 'bearer',
    description: 'A shopper session token from POST /session or POST /session/login: `Authorization: Bearer <token>`.',
  },
  AdminToken: {
    type: 'http',
    scheme: 'bearer',
    description: "The marketers' admin token (SALE_ADMIN_TOKEN): `Authorization: Bearer <token>`.",
  },
} as const;

/**
 * The longest request, from its first byte to its last, a service waits for: 10 s. A shopper's body is
 * at most a few KiB (an admin's largest sale under 1 MB), which even a poor mobile link sends in well
 * under a second; a client slower than that is broken or holding sockets on purpose (one byte every two
 * seconds held a socket 88 s before). Node applies it through `requestTimeout`, but only checks it every
 * `connectionsCheckingInterval` (30 s by default), and swaps it for `headersTimeout` (60 s by default)
 * when that one is longer: both are set here, so such a request gets a 408 and its socket is closed
 * within REQUEST_TIME_LIMIT_MS + TIMEOUT_CHECK_INTERVAL_MS (11 s).
 */
export const REQUEST_TIME_LIMIT_MS = 10_000;
export const TIMEOUT_CHECK_INTERVAL_MS = 1_000;

/**
 * The longest path parameter a route schema may allow, in characters (code points, as the schema counts
 * them; a route declaring more fails at start). The router counts UTF-16 code units, so its limit is twice
 * this: every parameter a schema allows reaches validation (400 when it is too long for that route), and
 * one beyond the router's limit gets 414 URI_TOO_LONG, in the same error shape.
 */
export const MAX_PATH_PARAM_CHARS = 128;

/** The smallest body limit of a route; a route whose schema allows larger bodies gets what it needs. */
const DEFAULT_BODY_LIMIT = 16 * 1024;

export interface ServiceAppOptions {
  name: string;
  version?: string;
  description?: string;
  /** Readiness: the dependencies this service cannot serve without. */
  ready?: () => Promise<boolean>;
  /** Body limit of routes whose schema does not need more (default 16 KiB). */
  bodyLimit?: number;
  fastify?: FastifyServerOptions;
  /**
   * fastify's lines per request whatever ACCESS_LOG says: for a staff app with little traffic, where they are the
   * trail of which address opened what. A shopper-facing service leaves it off (common/http-requests.ts says why).
   */
  logEveryRequest?: boolean;
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

function sendError(reply: FastifyReply, error: AppError): void {
  reply
    .headers(error.headers)
    .code(error.statusCode)
    .send({ error: { code: error.code, message: error.message } });
}

// ---------------------------------------------------------------------------------------------------
// Unicode at the edge

// String.prototype.isWellFormed is in Node 20 but not in the ES2023 library the compiler is set to.
const isWellFormed = (text: string): boolean => (text as unknown as { isWellFormed(): boolean }).isWellFormed();

/**
 * The path (`$.skus[3].title`, `$` for the body itself) of the first string or key holding a lone UTF-16
 * surrogate, or null. JSON may spell one (`"\ud800"`) although no UTF-8 text can carry it.
 */
export function findLoneSurrogate(value: unknown, path = '$'): string | null {
  if (typeof value === 'string') return isWellFormed(value) ? null : path;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findLoneSurrogate(value[i], `${path}[${i}]`);
      if (found) return found;
    }
    return null;
  }
  if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      const at = `${path}.${key}`;
      if (!isWellFormed(key)) return `${path} (a key)`;
      const found = findLoneSurrogate(item, at);
      if (found) return found;
    }
  }
  return null;
}

function invalidUnicode(path: string): AppError {
  return new AppError(
    'INVALID_UNICODE',
    400,
    `The request body's ${path} holds a lone UTF-16 surrogate (such as "\\ud800"), which is not a character: send valid Unicode text.`,
  );
}

const INVALID_UTF8 = () =>
  new AppError('INVALID_UTF8', 400, 'The request body is not valid UTF-8: encode the JSON text as UTF-8 (no other byte sequences).');

/** A body's declared charset, when it names one other than UTF-8, is refused rather than guessed at. */
function refusesCharset(contentType: string | undefined): boolean {
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType ?? '')?.[1]?.toLowerCase();
  return charset !== undefined && charset !== 'utf-8' && charset !== 'utf8';
}

/**
 * JSON bodies, parsed here instead of by fastify's default parser, which decodes invalid UTF-8 into
 * U+FFFD without a word and passes lone surrogates on. Keeps the default's prototype-poisoning refusal.
 */
function registerStrictBodyParsers(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    const bytes = body as Buffer;
    if (refusesCharset(request.headers['content-type'])) {
      done(new AppError('UNSUPPORTED_MEDIA_TYPE', 415, 'Send the body as application/json in UTF-8.'), undefined);
      return;
    }
    if (!isUtf8(bytes)) {
      done(INVALID_UTF8(), undefined);
      return;
    }
    const text = bytes.toString('utf8');
    parseJson(request, text, (error, value) => {
      if (error) return done(error, undefined);
      // Only a \u escape can spell a surrogate in UTF-8 JSON text: most bodies skip the walk.
      const lone = text.includes('\\u') ? findLoneSurrogate(value) : null;
      done(lone ? invalidUnicode(lone) : null, lone ? undefined : value);
    });
  });
}

/** The query string's first %-escape that is malformed or does not decode to UTF-8, or null. */
function badQueryEscape(url: string): string | null {
  const start = url.indexOf('?');
  if (start === -1 || !url.includes('%', start)) return null;
  for (const part of url.slice(start + 1).split('&')) {
    if (!part.includes('%')) continue;
    try {
      decodeURIComponent(part.replaceAll('+', ' '));
    } catch {
      return part.split('=')[0] ?? part;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------
// Errors raised before a route runs

/** The router's refusals (a path that does not decode, a parameter too long), in our shape. */
function frameworkError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    sendError(
      reply,
      new AppError('URI_TOO_LONG', 414, `A path segment is longer than any id here (over ${MAX_PATH_PARAM_CHARS} characters).`),
    );
  } else if (error.code === 'FST_ERR_BAD_URL') {
    sendError(
      reply,
      new AppError('INVALID_UTF8', 400, 'The path holds a %-escape that is malformed or does not decode to UTF-8: encode it as UTF-8.'),
    );
  } else {
    sendError(reply, toAppError(error));
  }
}

const CLIENT_ERRORS: Record<string, [number, string, string, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [
    408,
    'Request Timeout',
    'REQUEST_TIMEOUT',
    `The request did not arrive within ${REQUEST_TIME_LIMIT_MS / 1000} s: send it whole, at once.`,
  ],
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'HEADERS_TOO_LARGE', 'The request headers are too large.'],
};

/**
 * Node's refusals of a connection's request (too slow, malformed HTTP, headers too large), in our error
 * shape. Like fastify's default handler, answers only a socket that can still be written, then closes it.
 */
function clientError(this: FastifyInstance, error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, reason, code, message] = CLIENT_ERRORS[error.code ?? ''] ?? [
    400,
    'Bad Request',
    'BAD_REQUEST',
    'The request is not valid HTTP/1.1.',
  ];
  this.log.debug({ err: error }, 'client error');
  if (socket.writable) {
    const body = JSON.stringify({ error: { code, message } });
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}

// ---------------------------------------------------------------------------------------------------
// 405: the methods each known path answers

interface PathMethods {
  pattern: RegExp;
  methods: Set<string>;
}

/** `/sales/:saleId/queue` → a regular expression matching its concrete paths. */
function pathPattern(url: string): RegExp {
  const source = url
    .split(/(:[A-Za-z0-9_]+|\*)/)
    .map((part) => (part === '*' ? '.*' : part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`);
}

/** 405 with Allow when another method of this path exists, else 404: both before any body is read. */
function unknownRoute(request: FastifyRequest, known: PathMethods[]): AppError {
  const path = request.url.split('?')[0] ?? '';
  const allowed = new Set<string>();
  for (const k of known) if (k.pattern.test(path)) for (const m of k.methods) allowed.add(m);
  if (allowed.size === 0) return new AppError('NOT_FOUND', 404, `No route ${request.method} ${path}.`);
  const allow = [...allowed].sort().join(', ');
  return new AppError('METHOD_NOT_ALLOWED', 405, `${request.method} is not allowed here; this path answers ${allow}.`, { allow });
}

function queryError(url: string): AppError | undefined {
  const bad = badQueryEscape(url);
  if (bad === null) return undefined;
  return new AppError(
    'INVALID_UTF8',
    400,
    `The query parameter "${bad}" holds a %-escape that is malformed or does not decode to UTF-8: encode it as UTF-8.`,
  );
}

// ---------------------------------------------------------------------------------------------------
// The body limit a route's schema needs

/** Whether a character class (the text between `[` and `]`) matches printable ASCII only. */
function asciiClass(cls: string): boolean {
  if (cls.startsWith('^') || /\\[sSWDpPux]/.test(cls)) return false;
  return [...cls.replace(/\\./g, '')].every((c) => c >= ' ' && c <= '~');
}

/**
 * What an anchored pattern (`^…$` of character classes, literals and bounded quantifiers) says of its
 * strings: at most `chars` characters, and whether they are all printable ASCII. Null for anything else
 * (groups, alternatives, `.`, unbounded repeats), which this does not analyse.
 */
export function patternBound(pattern: string): { chars: number; ascii: boolean } | null {
  if (!pattern.startsWith('^') || !pattern.endsWith('$') || pattern.endsWith('\\$')) return null;
  const body = pattern.slice(1, -1);
  let chars = 0;
  let ascii = true;
  let i = 0;
  while (i < body.length) {
    const c = body[i] as string;
    let atomAscii: boolean;
    if (c === '[') {
      const end = body.indexOf(']', i + 1);
      if (end === -1) return null;
      atomAscii = asciiClass(body.slice(i + 1, end));
      i = end + 1;
    } else if (c === '\\') {
      const escaped = body[i + 1];
      if (escaped === undefined) return null;
      atomAscii = /[dw\-/\\^$*+?.()[\]{}|]/.test(escaped);
      i += 2;
    } else if ('()|.*+?{'.includes(c)) {
      return null;
    } else {
      atomAscii = c >= ' ' && c <= '~';
      i += 1;
    }
    let repeat = 1;
    if (body[i] === '?') {
      i += 1;
    } else if (body[i] === '{') {
      const m = /^\{(\d+)(?:,(\d*))?\}/.exec(body.slice(i));
      if (!m || m[2] === '') return null;
      repeat = Number(m[2] ?? m[1]);
      i += m[0].length;
    } else if (body[i] === '*' || body[i] === '+') {
      return null;
    }
    chars += repeat;
    ascii &&= atomAscii;
  }
  return { chars, ascii };
}

const ASCII_FORMATS = new Set(['uri', 'uuid', 'date-time', 'date', 'email']);

/**
 * The most bytes a schema-valid value takes as compact JSON, or Infinity when the schema does not bound
 * it. A character counts 12 bytes (an astral character written as two \uXXXX escapes, as Python's json
 * does by default), or 2 when the pattern allows printable ASCII only (`"` is written \"); a property
 * counts whether required or not.
 */
export function maxJsonBytes(schema: unknown): number {
  if (typeof schema !== 'object' || schema === null) return Number.POSITIVE_INFINITY;
  const s = schema as Record<string, unknown>;
  const alternatives = (s.anyOf ?? s.oneOf) as unknown[] | undefined;
  if (Array.isArray(alternatives)) return Math.max(...alternatives.map(maxJsonBytes));
  if (Array.isArray(s.enum)) return Math.max(...s.enum.map((v) => JSON.stringify(v).length * 6));
  if (s.const !== undefined) return JSON.stringify(s.const).length * 6;
  switch (s.type) {
    case 'string': {
      const bound = typeof s.pattern === 'string' ? patternBound(s.pattern) : null;
      // ajv's full formats admit ASCII only for these (a URI with other characters must %-encode them).
      const asciiFormat = typeof s.format === 'string' && ASCII_FORMATS.has(s.format);
      const chars = Math.min(
        typeof s.maxLength === 'number' ? s.maxLength : Number.POSITIVE_INFINITY,
        bound?.chars ?? Number.POSITIVE_INFINITY,
      );
      return 2 + chars * (bound?.ascii || asciiFormat ? 2 : 12);
    }
    case 'integer': {
      const max = typeof s.maximum === 'number' ? s.maximum : Number.POSITIVE_INFINITY;
      const min = typeof s.minimum === 'number' ? s.minimum : Number.NEGATIVE_INFINITY;
      return Math.max(String(max).length, String(min).length);
    }
    case 'number':
      return 24; // the longest a double prints: -1.2345678901234567e-308
    case 'boolean':
      return 5;
    case 'null':
      return 4;
    case 'array': {
      if (typeof s.maxItems !== 'number') return Number.POSITIVE_INFINITY;
      return 2 + s.maxItems * (maxJsonBytes(s.items) + 1);
    }
    case 'object': {
      if (s.additionalProperties !== false) return Number.POSITIVE_INFINITY;
      let total = 2;
      for (const [key, value] of Object.entries((s.properties ?? {}) as Record<string, unknown>)) {
        total += JSON.stringify(key).length + 2 + maxJsonBytes(value);
      }
      return total;
    }
  }
  return Number.POSITIVE_INFINITY;
}

// ---------------------------------------------------------------------------------------------------
// The OpenAPI contract

const RETRY_AFTER = {
  'Retry-After': {
    type: 'string',
    pattern: '^[0-9]+$',
    description: 'Seconds to wait before trying again.',
  },
};

/** What each error status means here; every one answers with ErrorBody. */
const ERROR_STATUSES: Record<number, { description: string; retryAfter?: 'always' | 'sometimes' }> = {
  400: {
    description:
      'The request is not valid: MALFORMED_JSON, INVALID_UTF8, INVALID_UNICODE, INVALID_REQUEST or a coded refusal of the value.',
  },
  401: { description: 'Authentication is missing or not valid.' },
  402: { description: 'The payment was declined.' },
  403: { description: 'Authenticated, but not allowed to do this.' },
  404: { description: 'No such resource (or not yours).' },
  408: {
    description: `The request did not arrive whole within ${REQUEST_TIME_LIMIT_MS / 1000} s (REQUEST_TIMEOUT); the connection is closed.`,
  },
  409: { description: 'Refused by the state of the resource (for example sold out, not live, already exists).', retryAfter: 'sometimes' },
  413: { description: 'The body is larger than this operation accepts (BODY_TOO_LARGE).' },
  414: {
    description: `A path parameter is far longer than any id here (URI_TOO_LONG; ids are at most ${MAX_PATH_PARAM_CHARS} characters).`,
  },
  415: { description: 'The body is not application/json in UTF-8 (UNSUPPORTED_MEDIA_TYPE).' },
  431: { description: 'The request headers are too large (HEADERS_TOO_LARGE); the connection is closed.' },
  422: { description: 'The request conflicts with an earlier one (for example an Idempotency-Key reused for another request).' },
  429: { description: 'Too many requests (RATE_LIMITED): wait for Retry-After.', retryAfter: 'always' },
  500: { description: 'Something failed on our side (INTERNAL).' },
  503: { description: 'A store this operation needs is briefly unavailable: retry after Retry-After.', retryAfter: 'always' },
};

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The error statuses a route may answer because of what it is, before any handler logic. */
function commonErrorStatuses(method: string, url: string, schema: FastifySchema): number[] {
  const statuses = [431, 500];
  const hasParams = url.includes(':');
  const hasBody = BODY_METHODS.has(method);
  if (hasBody || hasParams || schema.body || schema.querystring || schema.headers || schema.handlerHeaders) statuses.push(400);
  if (schema.security?.some((requirement) => Object.keys(requirement).length > 0)) statuses.push(401);
  if (hasParams) statuses.push(404, 414);
  if (hasBody) statuses.push(408, 413, 415);
  return statuses;
}

function errorResponse(status: number) {
  const known = ERROR_STATUSES[status] ?? { description: 'Refused; the error code says why.' };
  return {
    $ref: 'ErrorBody#',
    description: known.description,
    ...(known.retryAfter ? { headers: RETRY_AFTER } : {}),
  };
}

function mergeObjectSchemas(a: unknown, b: unknown): unknown {
  if (!a) return b;
  if (!b) return a;
  const x = a as { properties?: object; required?: string[] };
  const y = b as { properties?: object; required?: string[] };
  return {
    type: 'object',
    properties: { ...x.properties, ...y.properties },
    required: [...(x.required ?? []), ...(y.required ?? [])],
  };
}

const CHANNEL_HEADER = Type.Object({
  'x-channel': Type.Optional(
    Type.String({
      description: 'Which front end sent the request: web (the default), app or api; other values count as web.',
    }),
  ),
});

/** The route's schema as the document shows it: error answers, handler-checked headers. */
function documentRoute({ schema, url, route }: { schema: FastifySchema; url: string; route: RouteOptions }) {
  if (!schema || schema.hide) return { schema, url };
  const method = String(Array.isArray(route.method) ? route.method[0] : route.method).toUpperCase();
  const { errorStatuses = [], handlerHeaders, ...rest } = schema;
  const response: Record<string, unknown> = { ...(rest.response as Record<string, unknown> | undefined) };
  if (!Object.keys(response).some((status) => /^[23]/.test(status))) response[200] = { description: 'Done.' };
  for (const status of [...commonErrorStatuses(method, route.url ?? url, schema), ...errorStatuses]) {
    response[status] ??= errorResponse(status);
  }
  const usesSession = schema.security?.some((requirement) => 'ShopperSession' in requirement);
  const headers = mergeObjectSchemas(mergeObjectSchemas(rest.headers, handlerHeaders), usesSession ? CHANNEL_HEADER : undefined);
  return { schema: { ...rest, response, ...(headers ? { headers } : {}) }, url };
}

type OpenApiDocument = {
  components?: { securitySchemes?: Record<string, unknown> };
  paths?: Record<
    string,
    Record<
      string,
      { security?: Record<string, unknown>[]; responses?: Record<string, { headers?: Record<string, { required?: boolean }> }> }
    >
  >;
};

/** Finishing touches on the whole document: Retry-After required where always sent; unused schemes out. */
function finishDocument(documentObject: { openapiObject?: unknown; swaggerObject?: unknown }) {
  const doc = (documentObject.openapiObject ?? documentObject.swaggerObject) as OpenApiDocument;
  const used = new Set<string>();
  for (const operations of Object.values(doc.paths ?? {})) {
    for (const operation of Object.values(operations)) {
      for (const requirement of operation.security ?? []) for (const name of Object.keys(requirement)) used.add(name);
      for (const [status, answer] of Object.entries(operation.responses ?? {})) {
        const retryAfter = answer.headers?.['Retry-After'];
        if (retryAfter && ERROR_STATUSES[Number(status)]?.retryAfter === 'always') retryAfter.required = true;
      }
    }
  }
  const schemes = doc.components?.securitySchemes ?? {};
  for (const name of Object.keys(schemes)) if (!used.has(name)) delete schemes[name];
  return doc as never;
}

// ---------------------------------------------------------------------------------------------------

export async function createServiceApp(options: ServiceAppOptions): Promise<FastifyInstance> {
  collectProcessMetrics();
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const { logLevel, accessLog, slowRequestMs } = config();
  const logsAll = accessLog === 'all' || options.logEveryRequest === true;
  const app = Fastify({
    logger: { name: options.name, level: logLevel },
    // Requests are counted and timed per route instead, and logged when slow (http-requests.ts).
    logController: new LogController({ disableRequestLogging: !logsAll }),
    bodyLimit,
    // A request must arrive whole within REQUEST_TIME_LIMIT_MS (see there for why all three are set).
    requestTimeout: REQUEST_TIME_LIMIT_MS,
    http: { headersTimeout: REQUEST_TIME_LIMIT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS },
    clientErrorHandler: clientError,
    frameworkErrors: frameworkError,
    routerOptions: { maxParamLength: 2 * MAX_PATH_PARAM_CHARS },
    // Strict edge: a number where a string belongs, or a field we do not know, is refused with a message
    // instead of being coerced or silently dropped (fastify's defaults). Path and query values arrive as
    // strings, so routes declare them as strings (with a pattern) and convert them themselves.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
    ...options.fastify,
  }).withTypeProvider<TypeBoxTypeProvider>();

  const known: PathMethods[] = [];
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    let entry = known.find((k) => k.pattern.source === pathPattern(route.url).source);
    if (!entry) {
      entry = { pattern: pathPattern(route.url), methods: new Set() };
      known.push(entry);
    }
    for (const method of methods) entry.methods.add(method.toUpperCase());
    for (const [name, param] of Object.entries(
      (route.schema?.params as { properties?: Record<string, { maxLength?: number }> })?.properties ?? {},
    )) {
      if ((param.maxLength ?? 0) > MAX_PATH_PARAM_CHARS) {
        throw new Error(`${route.url}: path parameter ${name} allows more than ${MAX_PATH_PARAM_CHARS} characters (MAX_PATH_PARAM_CHARS)`);
      }
    }
    // A body the schema allows is never refused for its size: the limit grows to the largest one.
    if (route.bodyLimit === undefined && route.schema?.body) {
      const needed = maxJsonBytes(route.schema.body);
      if (Number.isFinite(needed) && needed > bodyLimit) route.bodyLimit = needed;
    }
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: options.name, version: options.version ?? '1', description: options.description },
      components: { securitySchemes: structuredClone(SECURITY_SCHEMES) as never },
    },
    // Shared schemas keep their own names in the document (`#/components/schemas/ErrorBody`).
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
    transform: documentRoute as never,
    transformObject: finishDocument as never,
  });
  app.addSchema(ErrorBody);
  registerStrictBodyParsers(app);
  const requests = recordRequests(app, { service: options.name, slowMs: slowRequestMs, fastifyLogsAll: logsAll });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const appError = toAppError(error);
    // A 5xx we chose (STORE_UNAVAILABLE while Redis is away) was logged where it was chosen; only a
    // surprise is logged here, or an outage would log once per shopper request.
    if (appError.statusCode >= 500 && !(error instanceof AppError)) request.log.error({ err: error }, 'request failed');
    sendError(reply, appError);
  });

  // Before the body is read: an unknown route or method costs no parsing, and a query that does not
  // decode is refused instead of reaching a handler as literal %-escapes.
  // A callback hook, not an async one: it runs on every request, the purchase included.
  app.addHook('onRequest', (request, _reply, done) => {
    if (!request.is404) return done(queryError(request.url));
    const refusal = unknownRoute(request, known);
    requests.unmatched(request.method, refusal.statusCode);
    done(refusal);
  });
  // Reached only if a hook above is skipped; kept so even then a 404 has the error shape.
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ error: { code: 'NOT_FOUND', message: `No route ${request.method} ${request.url.split('?')[0]}.` } });
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
