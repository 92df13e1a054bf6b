// What an answered request leaves behind (common/http-requests.ts): no access-log lines by default, a count and
// a time per route and status in /metrics, and a capped warning line when an answer was slow.
import { Writable } from 'node:stream';
import Fastify, { LogController } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { AppError, createServiceApp } from '../../common/http.js';
import { answeredAsStream, recordRequests, SLOW_LINES_PER_SECOND } from '../../common/http-requests.js';
import { registry } from '../../common/metrics.js';

/** A pino destination that keeps the lines written to it. */
function captured() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { lines, stream };
}

/** The value of one series of the metrics text, 0 when absent. */
async function sample(name: string, labels: Record<string, string>): Promise<number> {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of (await registry.metrics()).split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.indexOf('}'));
    const parts = inside.split(',');
    if (wanted.every((w) => parts.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

const apps: { close(): Promise<unknown> }[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
});

describe('answered requests', () => {
  it('logs no line per request by default, and counts each by route pattern and status', async () => {
    const { lines, stream } = captured();
    const app = await createServiceApp({ name: 'requests-test', fastify: { logger: { level: 'info', stream } } });
    apps.push(app);
    app.get('/things/:id', async (request, reply) =>
      (request.params as { id: string }).id === 'missing' ? reply.code(404).send({ error: { code: 'NO', message: 'none' } }) : { ok: true },
    );
    const of = { service: 'requests-test', method: 'GET', route: '/things/:id' };
    const unmatched = { service: 'requests-test', route: 'unmatched' };

    for (let i = 0; i < 5; i++) expect((await app.inject({ method: 'GET', url: `/things/${i}?q=secret` })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/things/missing' })).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: '/nowhere' })).statusCode).toBe(404);

    // One series per route pattern, not per id: the metric's size does not grow with the shoppers.
    expect(await sample('flashsale_http_requests_total', { ...of, status: '200' })).toBe(5);
    expect(await sample('flashsale_http_requests_total', { ...of, status: '404' })).toBe(1);
    expect(await sample('flashsale_http_requests_total', { ...unmatched, method: 'GET', status: '404' })).toBe(1);
    // An unknown method on a known path is refused too, as unmatched (405).
    expect((await app.inject({ method: 'DELETE', url: '/things/1' })).statusCode).toBe(405);
    expect(await sample('flashsale_http_requests_total', { ...unmatched, method: 'DELETE', status: '405' })).toBe(1);
    // Timed: every answer falls in the +Inf bucket, and the buckets only grow.
    expect(await sample('flashsale_http_request_duration_seconds_count', of)).toBe(6);
    expect(await sample('flashsale_http_request_duration_seconds_bucket', { ...of, le: '+Inf' })).toBe(6);
    const buckets = await Promise.all(
      ['0.001', '0.01', '0.1', '1', '10'].map((le) => sample('flashsale_http_request_duration_seconds_bucket', { ...of, le })),
    );
    expect([...buckets].sort((a, b) => a - b)).toEqual(buckets);
    expect(buckets.at(-1)).toBe(6);
    expect(await sample('flashsale_http_request_duration_seconds_sum', of)).toBeGreaterThan(0);
    expect((await registry.metrics()).includes('/things/1')).toBe(false);

    expect(lines.filter((l) => l.msg === 'incoming request' || l.msg === 'request completed')).toEqual([]);
  });

  it('logs every request of a service that asks for it (the dashboards), still counting them', async () => {
    const { lines, stream } = captured();
    const app = await createServiceApp({ name: 'staff-test', logEveryRequest: true, fastify: { logger: { level: 'info', stream } } });
    apps.push(app);
    app.get('/page', async () => ({ ok: true }));
    expect((await app.inject({ method: 'GET', url: '/page' })).statusCode).toBe(200);
    expect(lines.filter((l) => l.msg === 'request completed')).toHaveLength(1);
    expect(await sample('flashsale_http_requests_total', { service: 'staff-test', route: '/page', status: '200' })).toBe(1);
  });

  it('logs a slow answer once, with its route and time but not its query, and caps the lines per second', async () => {
    const { lines, stream } = captured();
    const app = Fastify({ logger: { level: 'info', stream }, logController: new LogController({ disableRequestLogging: true }) });
    apps.push(app);
    recordRequests(app, { service: 'slow-test', slowMs: 20, fastifyLogsAll: false });
    app.get('/slow', async () => {
      await new Promise((r) => setTimeout(r, 30));
      return { ok: true };
    });
    app.get('/fast', async () => ({ ok: true }));

    expect((await app.inject({ method: 'GET', url: '/fast' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/slow?token=do-not-log' })).statusCode).toBe(200);
    const slow = lines.filter((l) => l.msg === 'slow request');
    expect(slow).toHaveLength(1);
    expect(slow[0]).toMatchObject({ route: '/slow', path: '/slow', method: 'GET', statusCode: 200 });
    expect(slow[0]!.responseTimeMs as number).toBeGreaterThanOrEqual(20);
    expect(JSON.stringify(lines)).not.toContain('do-not-log');

    // A burst of slow answers within a second: at most the cap, and the next line says how many were left out.
    const burst = SLOW_LINES_PER_SECOND * 3;
    await Promise.all(Array.from({ length: burst }, () => app.inject({ method: 'GET', url: '/slow' })));
    const inBurst = lines.filter((l) => l.msg === 'slow request').length - 1;
    expect(inBurst).toBeGreaterThan(0);
    expect(inBurst).toBeLessThanOrEqual(SLOW_LINES_PER_SECOND);
    await new Promise((r) => setTimeout(r, 1100));
    await app.inject({ method: 'GET', url: '/slow' });
    // Every slow answer is either a line or counted in the next line's slowNotLogged.
    const slowLines = lines.filter((l) => l.msg === 'slow request');
    expect(slowLines.at(-1)!.slowNotLogged).toBeGreaterThanOrEqual(burst - SLOW_LINES_PER_SECOND);
    const accounted = slowLines.length + slowLines.reduce((sum, l) => sum + ((l.slowNotLogged as number | undefined) ?? 0), 0);
    expect(accounted).toBe(1 + burst + 1);
  });

  it('counts a stream (server-sent events) without timing it or calling it slow when it ends', async () => {
    const { lines, stream } = captured();
    const app = Fastify({ logger: { level: 'info', stream }, logController: new LogController({ disableRequestLogging: true }) });
    apps.push(app);
    recordRequests(app, { service: 'stream-test', slowMs: 20, fastifyLogsAll: false });
    app.get('/events', (_request, reply) => {
      answeredAsStream(reply);
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
      reply.raw.write('data: one\n\n');
      setTimeout(() => reply.raw.end(), 60);
    });
    const response = await app.inject({ method: 'GET', url: '/events' });
    expect(response.body).toContain('data: one');
    await new Promise((r) => setTimeout(r, 20));
    const of = { service: 'stream-test', method: 'GET', route: '/events' };
    expect(await sample('flashsale_http_requests_total', { ...of, status: '200' })).toBe(1);
    expect(await sample('flashsale_http_request_duration_seconds_count', of)).toBe(0);
    expect(lines.filter((l) => l.msg === 'slow request')).toEqual([]);
  });

  it('leaves the lines to fastify when ACCESS_LOG=all: no slow line of its own on top', async () => {
    const { lines, stream } = captured();
    const app = Fastify({ logger: { level: 'info', stream } });
    apps.push(app);
    recordRequests(app, { service: 'all-test', slowMs: 1, fastifyLogsAll: true });
    app.get('/slow', async () => {
      await new Promise((r) => setTimeout(r, 5));
      return { ok: true };
    });
    await app.inject({ method: 'GET', url: '/slow' });
    expect(lines.filter((l) => l.msg === 'request completed')).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'slow request')).toHaveLength(0);
  });
});

describe('refusals', () => {
  it('are made without a stack trace, and leave the stack limit of other errors as it was', () => {
    const before = Error.stackTraceLimit;
    const refusal = new AppError('SALE_SOLD_OUT', 409, 'Sold out.', { 'retry-after': '2' });
    expect(refusal).toBeInstanceOf(Error);
    expect(refusal).toMatchObject({ name: 'AppError', code: 'SALE_SOLD_OUT', statusCode: 409, message: 'Sold out.' });
    expect(refusal.stack?.split('\n').filter((line) => line.trimStart().startsWith('at '))).toEqual([]);
    expect(Error.stackTraceLimit).toBe(before);
    expect(new Error('a fault').stack).toContain(' at ');
  });
});
