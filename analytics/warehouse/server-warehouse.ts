// A ClickHouse server through @clickhouse/client (HTTP). Used when CLICKHOUSE_URL is set, so ingest,
// offer jobs and dashboards can run as separate processes against a cluster.

import { Readable } from 'node:stream';
import { ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { tableFromIPC } from 'apache-arrow';
import {
  assertIdentifier,
  type InsertOptions,
  insertSettings,
  parseJsonEachRow,
  type QueryParams,
  type Warehouse,
  WarehouseError,
} from './warehouse.js';

const hasParams = (params?: QueryParams) => params !== undefined && Object.keys(params).length > 0;

export async function openServerWarehouse(url: string, database: string): Promise<Warehouse> {
  assertIdentifier(database);
  // Errors reach callers as WarehouseError; the client's own error log would print them twice.
  const quiet = { level: ClickHouseLogLevel.OFF };
  const bootstrap = createClient({ url, request_timeout: 30_000, log: quiet });
  try {
    await bootstrap.command({ query: `CREATE DATABASE IF NOT EXISTS ${database}` });
  } catch (error) {
    throw new WarehouseError(`cannot reach ClickHouse at ${new URL(url).host}: ${(error as Error).message}`, { cause: error });
  } finally {
    await bootstrap.close();
  }
  const client = createClient({ url, database, request_timeout: 60_000, log: quiet });

  const wrap = async <T>(what: string, action: () => Promise<T>): Promise<T> => {
    try {
      return await action();
    } catch (error) {
      throw new WarehouseError(`${what} failed: ${(error as Error).message}`, { cause: error });
    }
  };

  return {
    kind: 'server',
    database,
    query<T>(sql: string, params?: QueryParams) {
      return wrap('warehouse query', async () => {
        // Only send query_params when there are some: servers older than 19.x reject the setting.
        const result = await client.query({ query: sql, format: 'JSONEachRow', ...(hasParams(params) ? { query_params: params } : {}) });
        return parseJsonEachRow<T>(await result.text());
      });
    },
    queryArrow(sql: string, params?: QueryParams) {
      return wrap('warehouse query', async () => {
        const result = await client.exec({
          query: `${sql} FORMAT ArrowStream`,
          // apache-arrow in JS reads uncompressed IPC only.
          clickhouse_settings: { output_format_arrow_compression_method: 'none' },
          ...(hasParams(params) ? { query_params: params } : {}),
        });
        const chunks: Buffer[] = [];
        for await (const chunk of result.stream) chunks.push(chunk as Buffer);
        return tableFromIPC(Buffer.concat(chunks));
      });
    },
    insert(table: string, rows: readonly Record<string, unknown>[], options: InsertOptions = {}) {
      return wrap(`insert into ${table}`, async () => {
        if (rows.length === 0) return;
        const settings = insertSettings(options);
        await client.insert({
          table: assertIdentifier(table),
          values: rows as Record<string, unknown>[],
          format: 'JSONEachRow',
          ...(Object.keys(settings).length > 0 ? { clickhouse_settings: settings } : {}),
        });
      });
    },
    insertJsonEachRow(table: string, payload: Buffer, columns: readonly string[], options: InsertOptions = {}) {
      return wrap(`insert into ${table}`, async () => {
        if (payload.length === 0) return;
        const settings = insertSettings(options);
        const result = await client.exec({
          query: `INSERT INTO ${assertIdentifier(table)} (${columns.map(assertIdentifier).join(', ')}) FORMAT JSONEachRow`,
          values: Readable.from([payload]),
          ...(Object.keys(settings).length > 0 ? { clickhouse_settings: settings } : {}),
        });
        // An INSERT answers with an empty body; the socket goes back to the pool only once it is released.
        result.stream.destroy();
      });
    },
    command(sql: string, params?: QueryParams) {
      return wrap('warehouse command', async () => {
        await client.command({ query: sql, ...(hasParams(params) ? { query_params: params } : {}) });
      });
    },
    async ping() {
      return (await client.ping()).success;
    },
    async close() {
      await client.close();
    },
  };
}
