// The HTTP edge (common/http.ts) against a real sale-core: the OpenAPI document is a valid contract that
// documents what the server answers; strings that are not valid Unicode are refused with a coded 400 and
// change nothing; a request body that trickles in is cut within the request time limit; undeclared
// methods get 405 with Allow; path parameters and body limits agree with the schemas.
import http from 'node:http';
import net from 'node:net';
import SwaggerParser from '@apidevtools/swagger-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_PATH_PARAM_CHARS, maxJsonBytes, REQUEST_TIME_LIMIT_MS, TIMEOUT_CHECK_INTERVAL_MS } from '../../common/http.js';
import { SaleDefinition } from '../../sale-core/sales.js';
import {
  ADMIN,
  createSale,
  OPEN_LIMITS,
  readTopic,
  type Shopper,
  shopper,
  startTestSaleCore,
  type TestSaleCore,
  uniqueSaleId,
  until,
} from './support.js';

type Operation = {
  security?: Record<string, string[]>[];
  parameters?: { in: string; name: string; required?: boolean }[];
  responses: Record<string, { headers?: Record<string, { required?: boolean }>; content?: Record<string, { schema: { $ref?: string } }> }>;
};
type Document = {
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, { type: string; scheme: string }> };
};

let core: TestSaleCore;
let saleId: string;
let doc: Document;
const buyer: Shopper = shopper('contract-buyer');
const admin = { authorization: `Bearer ${ADMIN}` };

beforeAll(async () => {
  core = await startTestSaleCore({ settings: OPEN_LIMITS });
  saleId = await createSale(core, { stock: 5 });
  doc = (await core.app.inject({ method: 'GET', url: '/openapi.json' })).json();
});
afterAll(async () => {
  await core?.close();
});

const operations = () =>
  Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method, op })));

function expectCodedError(res: { statusCode: number; json(): unknown }, status: number, code: string) {
  expect(res.statusCode, JSON.stringify(res.json())).toBe(status);
  const body = res.json() as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(15);
  return body.error.message;
}

describe('the OpenAPI document is a contract', () => {
  it('is valid OpenAPI 3.0 for a real validator', async () => {
    // validate() dereferences in place: give it a copy.
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeTruthy();
    expect((doc as unknown as { openapi: string }).openapi).toBe('3.0.3');
  });

  it('documents every error answer with the ErrorBody shape, by what the route is', () => {
    for (const { path, method, op } of operations()) {
      const label = `${method.toUpperCase()} ${path}`;
      const statuses = Object.keys(op.responses);
      expect(
        statuses.some((s) => /^2/.test(s)),
        label,
      ).toBe(true);
      for (const status of ['400', '500']) expect(statuses, label).toContain(status);
      if (path.includes('{')) for (const status of ['404', '414']) expect(statuses, label).toContain(status);
      if (method === 'post') for (const status of ['408', '413', '415']) expect(statuses, label).toContain(status);
      if (op.security?.some((r) => Object.keys(r).length > 0)) expect(statuses, label).toContain('401');
      for (const status of statuses.filter((s) => Number(s) >= 400)) {
        expect(op.responses[status]?.content?.['application/json']?.schema.$ref, `${label} ${status}`).toBe(
          '#/components/schemas/ErrorBody',
        );
      }
      const limited = op.responses['429'];
      if (limited) expect(limited.headers?.['Retry-After']?.required, label).toBe(true);
    }
    expect(doc.paths['/sales/{saleId}/purchase']?.post?.responses).toHaveProperty('429');
    expect(doc.paths['/sales/{saleId}/queue']?.post?.responses).toHaveProperty('409');
  });

  it('says 201 and 202 where the server answers them', () => {
    expect(Object.keys(doc.paths['/admin/sales']?.post?.responses ?? {})).toContain('201');
    expect(Object.keys(doc.paths['/sales/{saleId}/purchase']?.post?.responses ?? {})).toContain('202');
    expect(Object.keys(doc.paths['/sales/{saleId}/events']?.post?.responses ?? {})).toContain('202');
    expect(Object.keys(doc.paths['/sales/{saleId}/catalog']?.get?.responses ?? {})).toContain('304');
  });

  it('names the security schemes, each route the ones it takes, and the headers', () => {
    expect(doc.components.securitySchemes).toEqual({
      ShopperSession: expect.objectContaining({ type: 'http', scheme: 'bearer' }),
      AdminToken: expect.objectContaining({ type: 'http', scheme: 'bearer' }),
    });
    expect(doc.paths['/admin/sales']?.post?.security).toEqual([{ AdminToken: [] }]);
    expect(doc.paths['/sales/{saleId}/purchase']?.post?.security).toEqual([{ ShopperSession: [] }]);
    expect(doc.paths['/sales/{saleId}/catalog']?.get?.security).toEqual([{}, { ShopperSession: [] }]);
    expect(doc.paths['/session']?.post?.security).toEqual([]);
    const headers = (path: string, method: string) =>
      (doc.paths[path]?.[method]?.parameters ?? []).filter((p) => p.in === 'header').map((p) => [p.name, p.required]);
    expect(headers('/sales/{saleId}/purchase', 'post')).toEqual(
      expect.arrayContaining([
        ['idempotency-key', true],
        ['x-channel', false],
      ]),
    );
    expect(headers('/sales/{saleId}/catalog', 'get')).toEqual(expect.arrayContaining([['if-none-match', false]]));
  });

  it('leaves the ops routes out', () => {
    for (const hidden of ['/openapi.json', '/healthz', '/readyz', '/metrics']) expect(doc.paths).not.toHaveProperty(hidden);
  });
});

describe('what the server does matches the document', () => {
  it('an undeclared method on a known path is 405 with Allow, in the error shape', async () => {
    for (const [method, url, allow] of [
      ['PUT', '/session', 'POST'],
      ['DELETE', `/sales/${saleId}/catalog`, 'GET, HEAD'],
      ['PATCH', `/sales/${saleId}/queue`, 'GET, HEAD, POST'],
    ] as const) {
      const res = await core.app.inject({ method, url, headers: { 'content-type': 'application/json' }, payload: '{' });
      expectCodedError(res, 405, 'METHOD_NOT_ALLOWED');
      expect(res.headers.allow).toBe(allow);
    }
    // Methods fastify has no route type for reach the same answer over a real socket.
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.request(`${core.url}/session`, { method: 'TRACE' }, resolve).on('error', reject).end();
    });
    res.resume();
    expect(res.statusCode).toBe(405);
    expect(res.headers.allow).toBe('POST');
    expectCodedError(await core.app.inject({ method: 'GET', url: '/no/such/path' }), 404, 'NOT_FOUND');
  });

  it('order ids the schema allows reach the route; longer ones get one coded answer', async () => {
    const auth = { authorization: `Bearer ${buyer.token}` };
    // 128 astral characters: 256 UTF-16 units, still within the router's limit, and allowed by the schema.
    const longest = encodeURIComponent('😀'.repeat(MAX_PATH_PARAM_CHARS));
    expectCodedError(await core.app.inject({ method: 'GET', url: `/orders/${longest}`, headers: auth }), 404, 'ORDER_NOT_FOUND');
    expectCodedError(
      await core.app.inject({ method: 'GET', url: `/orders/${'a'.repeat(MAX_PATH_PARAM_CHARS + 1)}`, headers: auth }),
      400,
      'INVALID_REQUEST',
    );
    expectCodedError(
      await core.app.inject({ method: 'GET', url: `/orders/${'a'.repeat(2 * MAX_PATH_PARAM_CHARS + 1)}`, headers: auth }),
      414,
      'URI_TOO_LONG',
    );
  });

  it('the largest sale the schema allows fits the body limit', async () => {
    const id = uniqueSaleId('largest');
    const starts = Date.now() + 60_000;
    // 200 SKUs at every field's limit, written as Python's json writes it (non-ASCII as \u escapes).
    const sale = {
      id,
      title: '😀'.repeat(200),
      starts_at: starts,
      ends_at: starts + 3_600_000,
      payment_window_minutes: 24 * 60,
      admission_rate_per_second: 1_000_000,
      admission_burst: 10_000_000,
      skus: Array.from({ length: 200 }, (_, i) => ({
        sku: `S${String(i).padStart(63, '0')}`,
        title: '😀'.repeat(200),
        price: 100_000_000,
        stock: 100_000_000,
        limit_per_shopper: 100,
        image_url: `https://img.example/${'a'.repeat(1000 - 20)}`,
      })),
    };
    const payload = JSON.stringify(sale).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    expect(payload.length).toBeGreaterThan(600_000);
    expect(payload.length).toBeLessThanOrEqual(maxJsonBytes(SaleDefinition));
    const res = await core.app.inject({
      method: 'POST',
      url: '/admin/sales',
      headers: { ...admin, 'content-type': 'application/json' },
      payload,
    });
    core.sales.add(id);
    expect(res.statusCode, res.body.slice(0, 300)).toBe(201);
    expect(res.json().products).toHaveLength(200);
    // Shopper routes keep the small default.
    const big = JSON.stringify({ type: 'page_view', path: `/${'a'.repeat(20_000)}` });
    expectCodedError(
      await core.app.inject({
        method: 'POST',
        url: `/sales/${saleId}/events`,
        headers: { authorization: `Bearer ${buyer.token}`, 'content-type': 'application/json' },
        payload: big,
      }),
      413,
      'BODY_TOO_LARGE',
    );
  });
});

describe('strings that are not valid Unicode are refused at the edge', () => {
  const events = (payload: string | Buffer, who: Shopper = buyer) =>
    core.app.inject({
      method: 'POST',
      url: `/sales/${saleId}/events`,
      headers: { authorization: `Bearer ${who.token}`, 'content-type': 'application/json' },
      payload,
    });

  it('a page view whose path is a lone surrogate gets 400 and no clickstream event', async () => {
    const visitor = shopper('contract-surrogate-visitor');
    const message = expectCodedError(await events('{"type":"page_view","path":"\\ud800"}', visitor), 400, 'INVALID_UNICODE');
    expect(message).toContain('$.path');
    expectCodedError(await events('{"type":"page_view","path":"/a\\udfff/b"}', visitor), 400, 'INVALID_UNICODE');
    // A surrogate pair is a real character and is accepted.
    expect((await events('{"type":"page_view","path":"/\\ud83d\\ude00"}', visitor)).statusCode).toBe(202);
    const mine = await until(
      async () =>
        (await readTopic(core.topics.clickstream, { expected: 1, quietMs: 500 })).filter((e) => e.value.user_id === visitor.userId),
      (found) => found.length >= 1,
    );
    expect(mine.map((e) => e.value.path)).toEqual(['/😀']);
  });

  it('invalid UTF-8 bytes get 400 instead of becoming U+FFFD', async () => {
    const bytes = Buffer.concat([Buffer.from('{"type":"page_view","path":"/'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
    expectCodedError(await events(bytes), 400, 'INVALID_UTF8');
    // A surrogate encoded as UTF-8 bytes (CESU/WTF-8) is not UTF-8 either.
    const cesu = Buffer.concat([Buffer.from('{"type":"page_view","path":"/'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]);
    expectCodedError(await events(cesu), 400, 'INVALID_UTF8');
    const latin1 = await core.app.inject({
      method: 'POST',
      url: `/sales/${saleId}/events`,
      headers: { authorization: `Bearer ${buyer.token}`, 'content-type': 'application/json; charset=latin1' },
      payload: '{"type":"page_view","path":"/x"}',
    });
    expectCodedError(latin1, 415, 'UNSUPPORTED_MEDIA_TYPE');
    expectCodedError(await core.app.inject({ method: 'GET', url: '/sales/%FF/stock' }), 400, 'INVALID_UTF8');
    expectCodedError(await core.app.inject({ method: 'GET', url: `/sales/${saleId}/stock?ref=%ED%A0%80` }), 400, 'INVALID_UTF8');
  });

  it('a sale whose title holds a lone surrogate gets 400 and no sale is written', async () => {
    const id = uniqueSaleId('surrogate');
    const starts = Date.now() + 60_000;
    const payload = JSON.stringify({
      id,
      title: 'Sale PLACEHOLDER',
      starts_at: starts,
      ends_at: starts + 3_600_000,
      payment_window_minutes: 10,
      skus: [{ sku: 'SKU-1', title: 'Sneaker', price: 100, stock: 1, limit_per_shopper: 1 }],
    }).replace('PLACEHOLDER', '\\udc00');
    const res = await core.app.inject({
      method: 'POST',
      url: '/admin/sales',
      headers: { ...admin, 'content-type': 'application/json' },
      payload,
    });
    expect(expectCodedError(res, 400, 'INVALID_UNICODE')).toContain('$.title');
    expectCodedError(await core.app.inject({ method: 'GET', url: `/admin/sales/${id}`, headers: admin }), 404, 'SALE_NOT_FOUND');
    expect(await core.context.redis.sismember(core.activeSalesKey, id)).toBe(0);
    expect(await core.context.redis.exists(`sale:{${id}}:meta`, `sale:{${id}}:catalog`)).toBe(0);
  });
});

describe('a request body that trickles in', () => {
  it('is cut with a 408 within the request time limit', async () => {
    const bound = REQUEST_TIME_LIMIT_MS + TIMEOUT_CHECK_INTERVAL_MS + 3_000;
    const { port } = new URL(core.url);
    const socket = net.connect(Number(port), '127.0.0.1');
    let answer = '';
    let closed = false;
    socket.on('data', (chunk) => {
      answer += chunk.toString();
    });
    socket.on('close', () => {
      closed = true;
    });
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(
      `POST /sales/${saleId}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${buyer.token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n`,
    );
    // One byte every half second: never idle long enough for an idle timeout, so only the request limit cuts it.
    const drip = setInterval(() => {
      if (!socket.destroyed) socket.write(' ');
    }, 500);
    try {
      await until(
        async () => closed,
        (done) => done,
        bound,
      );
    } finally {
      clearInterval(drip);
      socket.destroy();
    }
    expect(closed).toBe(true);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).error.code).toBe('REQUEST_TIMEOUT');
  });
});
