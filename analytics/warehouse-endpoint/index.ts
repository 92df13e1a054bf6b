// The embedded warehouse as a ClickHouse server: ClickHouse's HTTP interface, served by the process
// that owns the chdb data folder, so every reader elsewhere (offer jobs, dashboards, notebooks, DBeaver,
// clickhouse-connect) uses an ordinary ClickHouse client. See README "Query the warehouse".
//
// Plain node:http rather than fastify: this is ClickHouse's protocol, not one of our JSON APIs (no
// schema to validate or publish: query text, arbitrary bodies, binary formats), and a result streams
// from the engine to the socket chunk by chunk with backpressure, which fastify's reply model would wrap
// for nothing on a path whose throughput is measured against chdb called directly.

import { randomUUID } from 'node:crypto';
import { type EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import { createDeflate, createGunzip, createGzip, createInflate } from 'node:zlib';
import { config } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import type { EngineConnection, Warehouse } from '../warehouse/warehouse.js';
import { type ConnectionMode, EnginePool, PROBE_RESULT, sessionDefault, type WarehouseLimits } from './engine-pool.js';
import { CLICKHOUSE_ERRORS, toWireError, WarehouseEndpointError, type WireError } from './errors.js';
import { insertFormat, outputFormat, ResultStitcher, textRows } from './formats.js';
import { dateTime64Text, QueryLog, type QueryLogEntry } from './query-log.js';
import { type CheckedStatement, checkStatement, isProtectedSetting } from './sql-guard.js';
import { type WarehouseUser, WarehouseUserDirectory } from './users.js';

export type { WarehouseLimits } from './engine-pool.js';
export { QUERY_LOG_TABLE } from './query-log.js';
export { OFFERS_INSERT_TABLES } from './sql-guard.js';
export { hashWarehousePassword, type WarehouseRole, type WarehouseUser, warehouseUsersFromConfig } from './users.js';

const log = createLogger('warehouse-endpoint');

/** The limits from configuration (WAREHOUSE_MAX_* and WAREHOUSE_CONCURRENT_*). */
export function warehouseLimitsFromConfig(settings = config().warehouseEndpoint): WarehouseLimits {
  return {
    maxExecutionSeconds: settings.maxExecutionSeconds,
    maxResultRows: settings.maxResultRows,
    maxResultBytes: settings.maxResultBytes,
    maxMemoryBytes: settings.maxMemoryBytes,
    maxThreads: settings.maxThreads,
    queryNice: settings.queryNice,
    concurrentPerUser: settings.concurrentPerUser,
    concurrentTotal: settings.concurrentTotal,
    maxQueryBytes: 1 << 20,
    maxInsertBytes: 256 << 20,
  };
}

/** URL parameters that are the HTTP protocol's own, not ClickHouse settings to apply. */
const PROTOCOL_PARAMS = new Set([
  'query',
  'database',
  'default_format',
  'query_id',
  'user',
  'password',
  'quota_key',
  'log_comment',
  'session_id',
  'session_timeout',
  'session_check',
  'compress',
  'decompress',
  'enable_http_compression',
  'http_zlib_compression_level',
  'buffer_size',
  'wait_end_of_query',
  'send_progress_in_http_headers',
  'http_headers_progress_interval_ms',
  'cancel_http_readonly_queries_on_client_close',
  'http_wait_end_of_query',
  'http_response_buffer_size',
  'add_http_cors_header',
  'extremes',
  'role',
]);

/** Before this many bytes are ready the response is held, so an early error still gets its status. */
const HOLD_BYTES = 1 << 20;

interface Outcome {
  rows: number;
  bytes: number;
  written: number;
}

function sqlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

async function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const encoding = (request.headers['content-encoding'] ?? '').toLowerCase();
  const source = encoding === 'gzip' ? request.pipe(createGunzip()) : encoding === 'deflate' ? request.pipe(createInflate()) : request;
  if (encoding && encoding !== 'gzip' && encoding !== 'deflate' && encoding !== 'identity') {
    throw new WarehouseEndpointError('NOT_IMPLEMENTED', `Content-Encoding ${encoding} is not supported (send gzip or deflate)`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of source) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new WarehouseEndpointError('QUERY_IS_TOO_LARGE', `the request body is larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function credentials(request: IncomingMessage, url: URL): { name: string; password: string } | undefined {
  const headerUser = request.headers['x-clickhouse-user'];
  if (typeof headerUser === 'string' && headerUser) {
    const key = request.headers['x-clickhouse-key'];
    return { name: headerUser, password: typeof key === 'string' ? key : '' };
  }
  const authorization = request.headers.authorization;
  if (authorization?.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) return { name: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  const user = url.searchParams.get('user');
  if (user) return { name: user, password: url.searchParams.get('password') ?? '' };
  return undefined;
}

export async function startWarehouseEndpoint(opts: {
  warehouse: Warehouse;
  host?: string;
  port?: number;
  users?: WarehouseUser[];
  limits?: Partial<WarehouseLimits>;
}): Promise<{ url: string; close(): Promise<void>; activeQueries(user?: string): number }> {
  const settings = config().warehouseEndpoint;
  const limits: WarehouseLimits = { ...warehouseLimitsFromConfig(), ...opts.limits };
  const { warehouse } = opts;
  const users = new WarehouseUserDirectory(opts.users ?? (await import('./users.js')).warehouseUsersFromConfig());
  const pool = new EnginePool(warehouse, limits);
  const queryLog = new QueryLog(warehouse, (error) => log.warn({ err: error }, 'query log write failed; will retry'));
  const activeByUser = new Map<string, number>();
  /** Per pooled connection: the parameters and settings the last query left on it, and their reset values. */
  const leftovers = new WeakMap<EngineConnection, Map<string, string>>();
  const timezone = (await warehouse.query<{ tz: string }>('SELECT timezone() AS tz'))[0]?.tz ?? 'UTC';
  // chdb holds a libuv worker for each running query and insert; the pool (4 by default) is shared with
  // ingest's insert lanes, which stall behind long endpoint queries when it is small (main.ts sets 16).
  const threadpool = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  if (threadpool < limits.concurrentTotal + 8) {
    log.warn(
      { threadpool, concurrentTotal: limits.concurrentTotal },
      'UV_THREADPOOL_SIZE is small: long endpoint queries will slow ingest',
    );
  }

  const serve = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const started = Date.now();
    const url = new URL(request.url ?? '/', 'http://warehouse');
    const method = request.method ?? 'GET';
    if (
      url.pathname === '/ping' ||
      url.pathname === '/replicas_status' ||
      (url.pathname === '/' && method === 'GET' && !url.searchParams.has('query'))
    ) {
      response.writeHead(200, { 'Content-Type': 'text/html; charset=UTF-8', 'Content-Length': 4 });
      response.end('Ok.\n');
      return;
    }
    const queryId = url.searchParams.get('query_id') || randomUUID();
    const abort = new AbortController();
    response.on('close', () => {
      if (!response.writableFinished) abort.abort();
    });
    const entry: QueryLogEntry = {
      started_at: dateTime64Text(started),
      query_id: queryId,
      user_name: '',
      role: '',
      on_behalf_of: url.searchParams.get('log_comment') ?? url.searchParams.get('quota_key') ?? '',
      client_address: request.socket.remoteAddress ?? '',
      statement: '',
      query: url.searchParams.get('query') ?? '',
      format: '',
      status: 'ok',
      http_status: 200,
      error_code: 0,
      error: '',
      duration_ms: 0,
      result_rows: 0,
      result_bytes: 0,
      written_rows: 0,
    };
    let user: WarehouseUser | undefined;
    let committed = false;
    try {
      if (url.pathname !== '/' || (method !== 'GET' && method !== 'POST')) {
        throw new WarehouseEndpointError('BAD_ARGUMENTS', `no handler for ${method} ${url.pathname}: send queries to / (GET or POST)`, 404);
      }
      const claimed = credentials(request, url);
      if (!claimed) {
        throw new WarehouseEndpointError(
          'REQUIRED_PASSWORD',
          'Authentication required: send X-ClickHouse-User and X-ClickHouse-Key, HTTP Basic, or user and password',
        );
      }
      entry.user_name = claimed.name;
      user = await users.authenticate(claimed.name, claimed.password);
      if (!user) {
        throw new WarehouseEndpointError(
          'AUTHENTICATION_FAILED',
          `${claimed.name}: Authentication failed: password is incorrect, or there is no user with such name`,
        );
      }
      entry.role = user.role;
      const active = activeByUser.get(user.name) ?? 0;
      if (active >= limits.concurrentPerUser) {
        throw new WarehouseEndpointError(
          'TOO_MANY_SIMULTANEOUS_QUERIES',
          `Too many simultaneous queries for user ${user.name}. Current: ${active}, maximum: ${limits.concurrentPerUser}`,
        );
      }
      activeByUser.set(user.name, active + 1);
      // The user's query ends for them when the response does: a client sends its next query as soon as
      // it has read the last byte, while the connection's reset and the log still run here.
      const name = user.name;
      response.once('close', () => {
        const left = (activeByUser.get(name) ?? 1) - 1;
        if (left > 0) activeByUser.set(name, left);
        else activeByUser.delete(name);
      });
      const outcome = await runRequest(
        request,
        response,
        url,
        user,
        queryId,
        entry,
        abort.signal,
        () => {
          committed = true;
        },
        started,
      );
      entry.result_rows = outcome.rows;
      entry.result_bytes = outcome.bytes;
      entry.written_rows = outcome.written;
    } catch (error) {
      const wire = toWireError(error);
      entry.status = error instanceof WarehouseEndpointError && wire.code !== 202 && wire.code !== 1002 ? 'refused' : 'failed';
      entry.http_status = committed ? 200 : wire.status;
      entry.error_code = wire.code;
      entry.error = wire.message;
      sendError(response, wire, committed, queryId, timezone);
    } finally {
      entry.duration_ms = Date.now() - started;
      queryLog.record(entry);
    }
  };

  const runRequest = async (
    request: IncomingMessage,
    response: ServerResponse,
    url: URL,
    user: WarehouseUser,
    queryId: string,
    entry: QueryLogEntry,
    signal: AbortSignal,
    onCommit: () => void,
    startedMs: number,
  ): Promise<Outcome> => {
    for (const native of ['compress', 'decompress']) {
      if (url.searchParams.get(native) === '1') {
        throw new WarehouseEndpointError(
          'NOT_IMPLEMENTED',
          `${native}=1 (ClickHouse's own LZ4 framing) is not served here: turn it off in the client, and use enable_http_compression=1 with Accept-Encoding: gzip`,
        );
      }
    }
    const urlQuery = url.searchParams.get('query') ?? '';
    // With the query in the URL, an INSERT's body is its data, bytes as they are; otherwise the body is
    // (the rest of) the query text, as ClickHouse reads it.
    const urlInsert = urlQuery ? checkInsertHead(urlQuery, user) : undefined;
    const body =
      method(request) === 'POST'
        ? await readBody(request, urlInsert ? limits.maxInsertBytes : limits.maxQueryBytes + limits.maxInsertBytes)
        : Buffer.alloc(0);
    let sql: string;
    let data: Buffer | undefined;
    let statement: CheckedStatement;
    if (urlInsert) {
      sql = urlQuery;
      statement = urlInsert;
      data = body;
    } else {
      sql = urlQuery && body.length > 0 ? `${urlQuery}\n${body.toString('utf8')}` : urlQuery || body.toString('utf8');
      statement = checkStatement(sql, user.role, warehouse.database);
      if (statement.dataOffset !== undefined) {
        data = Buffer.from(sql.slice(statement.dataOffset), 'utf8');
        sql = sql.slice(0, statement.dataOffset);
      } else if (Buffer.byteLength(sql) > limits.maxQueryBytes) {
        throw new WarehouseEndpointError('QUERY_IS_TOO_LARGE', `the query text is larger than ${limits.maxQueryBytes} bytes`);
      }
    }
    entry.query = sql;
    entry.statement = statement.kind;

    // Per-query state: parameters, settings from the URL, another database; and how to undo it, so
    // the connection goes back to the pool as it came (nothing one user set is seen by the next).
    const state: string[] = [];
    const stateNames = new Set<string>();
    const reset = new Map<string, string>();
    for (const [name, value] of url.searchParams) {
      if (name.startsWith('param_')) {
        if (!/^param_[A-Za-z_][A-Za-z0-9_]*$/.test(name))
          throw new WarehouseEndpointError('BAD_ARGUMENTS', `bad query parameter name ${name}`);
        state.push(`${name} = ${sqlString(value)}`);
        stateNames.add(name);
        reset.set(name, "''");
      } else if (!PROTOCOL_PARAMS.has(name)) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new WarehouseEndpointError('UNKNOWN_SETTING', `Unknown setting ${name}`);
        if (user.role !== 'admin' && isProtectedSetting(name)) {
          throw new WarehouseEndpointError(
            'READONLY',
            `${user.name}: Cannot modify '${name}' setting in readonly mode: the endpoint sets the limits and the read-only mode itself`,
          );
        }
        state.push(`${name} = ${sqlString(value)}`);
        stateNames.add(name);
        reset.set(name, sessionDefault(name));
      }
    }
    const database = url.searchParams.get('database');
    const otherDatabase = database && database !== 'default' && database !== warehouse.database ? database : undefined;
    if (otherDatabase && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(otherDatabase))
      throw new WarehouseEndpointError('UNKNOWN_DATABASE', `Database ${otherDatabase} does not exist`);

    const mode: ConnectionMode = user.role === 'admin' ? 'admin' : statement.kind === 'insert' ? 'write' : 'read';
    const release = await pool.slot(signal);
    // Connections are taken when needed: most queries are answered by a probe connection alone.
    const taken = new Map<EngineConnection, boolean>();
    const take = async (probe: boolean): Promise<EngineConnection> => {
      const on = await pool.acquire(mode, probe);
      taken.set(on, probe);
      if (otherDatabase) await on.run(`USE ${otherDatabase}`, 'TSV');
      return on;
    };
    /**
     * The SET that puts this query's parameters and settings on `on` and undoes what the query before
     * left there (undone lazily, by the next query on the connection, in the same call as its own).
     */
    const setFor = (on: EngineConnection): string => {
      const items = [...state];
      for (const [name, value] of leftovers.get(on) ?? []) if (!stateNames.has(name)) items.push(`${name} = ${value}`);
      leftovers.set(on, new Map(reset));
      return items.length > 0 ? `SET ${items.join(', ')}` : '';
    };
    /** `sql` run whole on `on`, its SET folded in (chdb runs `SET …; query` in one call, not as a stream). */
    const runWhole = (on: EngineConnection, sql: string, format: string) => {
      const set = setFor(on);
      return on.run(set ? `${set}; ${sql}` : sql, format);
    };
    let reusable = true;
    const retired = new Set<EngineConnection>();
    try {
      const headers = (format: string, contentType: string): Record<string, string> => ({
        'Content-Type': contentType,
        'X-ClickHouse-Format': format,
        'X-ClickHouse-Query-Id': queryId,
        'X-ClickHouse-Timezone': timezone,
        'X-ClickHouse-Server-Display-Name': 'flashsale-warehouse',
        'Keep-Alive': 'timeout=10',
      });

      if (data !== undefined && statement.insert) {
        const format = insertFormat(statement.format ?? 'TabSeparated');
        entry.format = format;
        const connection = await take(false);
        const set = setFor(connection);
        if (set) await connection.run(set, 'TSV');
        const written = await connection.insertRaw(
          statement.insert.table,
          data,
          format,
          statement.insert.columns,
          statement.insert.settings,
        );
        const summary = summaryHeader(0, 0, written.rowsWritten, written.bytesWritten, 0, 0, startedMs);
        response.writeHead(200, { ...headers(format, 'text/plain; charset=UTF-8'), 'X-ClickHouse-Summary': summary, 'Content-Length': 0 });
        response.end();
        return { rows: 0, bytes: 0, written: written.rowsWritten };
      }
      if (!statement.returnsRows) {
        const result = await runWhole(await take(false), sql, 'TabSeparated');
        const bytes = Buffer.from(result.bytes);
        response.writeHead(200, {
          ...headers('TabSeparated', 'text/plain; charset=UTF-8'),
          'X-ClickHouse-Summary': summaryHeader(result.rowsRead, result.bytesRead, 0, 0, 0, bytes.length, startedMs),
          'Content-Length': bytes.length,
        });
        response.end(bytes);
        return { rows: 0, bytes: bytes.length, written: 0 };
      }

      const format = outputFormat(statement.format ?? url.searchParams.get('default_format') ?? 'TabSeparated');
      entry.format = format.name;
      const compress = compression(request, url);
      let sink: Writable = response;
      const commit = (rows: number, bytes: number) => {
        const head: Record<string, string | number> = {
          ...headers(format.name, format.contentType),
          'X-ClickHouse-Summary': summaryHeader(0, 0, 0, 0, rows, bytes, startedMs),
        };
        if (compress) head['Content-Encoding'] = compress;
        response.writeHead(200, head);
        onCommit();
        if (compress) {
          const zip = compress === 'gzip' ? createGzip({ level: 3 }) : createDeflate({ level: 3 });
          zip.pipe(response);
          sink = zip;
        }
      };
      const write = async (chunk: Buffer) => {
        if (chunk.length === 0) return;
        if (!sink.write(chunk)) await firstOf(sink, 'drain', response, 'close');
      };
      const finish = async () => {
        sink.end();
        if (!response.writableFinished) await firstOf(response, 'finish', response, 'close');
      };

      if (format.stitching === 'whole') {
        const result = await runWhole(await take(false), sql, format.name);
        const bytes = Buffer.from(result.bytes.buffer, result.bytes.byteOffset, result.bytes.byteLength);
        // The JSON family says how many rows it holds near its end; other whole formats are not counted.
        const rows = Number(/"rows": ?(\d+)/.exec(bytes.subarray(Math.max(0, bytes.length - 512)).toString('latin1'))?.[1] ?? 0);
        commit(rows, bytes.length);
        await write(bytes);
        await finish();
        return { rows, bytes: bytes.length, written: 0 };
      }

      if (format.text && mode !== 'write' && (limits.maxResultRows > PROBE_RESULT.rows || limits.maxResultBytes > PROBE_RESULT.bytes)) {
        const probe = await take(true);
        try {
          const result = await runWhole(probe, sql, format.name);
          const bytes = Buffer.from(result.bytes.buffer, result.bytes.byteOffset, result.bytes.byteLength);
          const rows = textRows(format, bytes);
          commit(rows, bytes.length);
          await write(bytes);
          await finish();
          return { rows, bytes: bytes.length, written: 0 };
        } catch (error) {
          // Past the probe's limits: run it again as a stream, under the real ones. (A failed query can
          // leave its partial output in chdb's connection, where the next query would answer with it:
          // the probe connection is closed, as after every engine error, below.)
          retired.add(probe);
          if (toWireError(error).code !== CLICKHOUSE_ERRORS.TOO_MANY_ROWS_OR_BYTES || response.headersSent) throw error;
        }
      }

      const stitcher = new ResultStitcher(format);
      const held: Buffer[] = [];
      let heldBytes = 0;
      let rows = 0;
      let bytes = 0;
      const holdAll = url.searchParams.get('wait_end_of_query') === '1';
      let live = false;
      const connection = await take(false);
      const set = setFor(connection);
      if (set) await connection.run(set, 'TSV');
      for await (const chunk of connection.stream(sql, format.name)) {
        rows += chunk.rows;
        const out = stitcher.push(chunk.bytes);
        bytes += out.length;
        if (live) await write(out);
        else {
          held.push(out);
          heldBytes += out.length;
          if (heldBytes >= (holdAll ? 64 * HOLD_BYTES : HOLD_BYTES)) {
            commit(rows, heldBytes);
            live = true;
            for (const part of held.splice(0)) await write(part);
          }
        }
        if (signal.aborted) {
          // The client went away: stop the query (leaving the loop cancels the engine's stream).
          throw new WarehouseEndpointError('UNKNOWN_EXCEPTION', 'the client closed the connection before the result was sent');
        }
      }
      const tail = stitcher.end();
      bytes += tail.length;
      if (!live) {
        commit(rows, heldBytes + tail.length);
        for (const part of held) await write(part);
      }
      await write(tail);
      await finish();
      return { rows, bytes, written: 0 };
    } catch (error) {
      // A failed query can leave its partial output in chdb's connection (the next query there would
      // answer with it), and a broken stream its cursor: close the connections rather than pool them.
      reusable = false;
      throw error;
    } finally {
      for (const [on, probe] of taken) {
        let ok = reusable && !retired.has(on);
        if (ok && otherDatabase) {
          ok = await on.run(`USE ${warehouse.database}`, 'TSV').then(
            () => true,
            () => false,
          );
        }
        pool.release(on, mode, ok, probe);
      }
      release();
    }
  };

  /** A URL query that is `INSERT … FORMAT x` takes its data from the body. */
  const checkInsertHead = (urlQuery: string, user: WarehouseUser): CheckedStatement | undefined => {
    if (!/^\s*insert\b/i.test(urlQuery)) return undefined;
    const statement = checkStatement(urlQuery, user.role, warehouse.database);
    return statement.insert && statement.dataOffset !== undefined && urlQuery.slice(statement.dataOffset).trim() === ''
      ? statement
      : undefined;
  };

  const server = createServer((request, response) => {
    serve(request, response).catch((error: unknown) => {
      log.error({ err: error }, 'warehouse endpoint request failed');
      if (!response.headersSent) response.writeHead(500);
      response.destroy();
    });
  });
  server.keepAliveTimeout = 10_000;
  server.listen(opts.port ?? settings.port, opts.host ?? settings.host);
  await once(server, 'listening');
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const endpointUrl = `http://${host}:${address.port}`;
  log.info({ url: endpointUrl, users: [...new Set((opts.users ?? []).map((u) => u.role))] }, 'warehouse endpoint listening');

  return {
    url: endpointUrl,
    activeQueries(user?: string) {
      return user ? (activeByUser.get(user) ?? 0) : [...activeByUser.values()].reduce((a, b) => a + b, 0);
    },
    async close() {
      const closing = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Queries in flight get a moment to finish; then their sockets go.
      const deadline = Date.now() + 5_000;
      while ((pool.active > 0 || activeByUser.size > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      server.closeAllConnections();
      await closing;
      await queryLog.close();
      pool.close();
    },
  };
}

/** Resolves on whichever event comes first, and leaves no listener behind (a result waits for many drains). */
function firstOf(a: EventEmitter, aEvent: string, b: EventEmitter, bEvent: string): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      a.off(aEvent, done);
      b.off(bEvent, done);
      resolve();
    };
    a.on(aEvent, done);
    b.on(bEvent, done);
  });
}

function method(request: IncomingMessage): string {
  return request.method ?? 'GET';
}

function summaryHeader(
  readRows: number,
  readBytes: number,
  writtenRows: number,
  writtenBytes: number,
  resultRows: number,
  resultBytes: number,
  since: number,
): string {
  return JSON.stringify({
    read_rows: String(readRows),
    read_bytes: String(readBytes),
    written_rows: String(writtenRows),
    written_bytes: String(writtenBytes),
    total_rows_to_read: '0',
    result_rows: String(resultRows),
    result_bytes: String(resultBytes),
    elapsed_ns: String((Date.now() - since) * 1_000_000),
  });
}

/** gzip or deflate when the client asked for compressed responses the ClickHouse way. */
function compression(request: IncomingMessage, url: URL): 'gzip' | 'deflate' | undefined {
  if (url.searchParams.get('enable_http_compression') !== '1') return undefined;
  const accepted = (request.headers['accept-encoding'] ?? '').toLowerCase();
  if (/\bgzip\b/.test(accepted)) return 'gzip';
  if (/\bdeflate\b/.test(accepted)) return 'deflate';
  return undefined;
}

function sendError(response: ServerResponse, wire: WireError, committed: boolean, queryId: string, timezone: string): void {
  if (response.destroyed) return;
  if (committed || response.headersSent) {
    // Headers are gone: say it in the body as ClickHouse does, and cut the response short so no client
    // mistakes the partial result for a whole one.
    response.write(`\n${wire.body}`);
    response.destroy();
    return;
  }
  const headers: Record<string, string | number> = {
    'Content-Type': 'text/plain; charset=UTF-8',
    'X-ClickHouse-Exception-Code': String(wire.code),
    'X-ClickHouse-Query-Id': queryId,
    'X-ClickHouse-Timezone': timezone,
    'Content-Length': Buffer.byteLength(wire.body),
  };
  if (wire.status === 401) headers['WWW-Authenticate'] = 'Basic realm="warehouse", charset="UTF-8"';
  response.writeHead(wire.status, headers);
  response.end(wire.body);
}
