// Embedded ClickHouse (chdb): ClickHouse 26.x in this process, data under one folder. chdb binds one
// data folder per process, so only the process that owns the warehouse may open it (DESIGN.md).

import { mkdirSync } from 'node:fs';
import { tableFromIPC } from 'apache-arrow';
import { Session } from 'chdb';
import {
  assertIdentifier,
  type EngineConnection,
  type InsertOptions,
  insertSettings,
  parseJsonEachRow,
  type QueryParams,
  type Warehouse,
  WarehouseError,
} from './warehouse.js';

export async function openChdbWarehouse(dir: string, database: string): Promise<Warehouse> {
  assertIdentifier(database);
  mkdirSync(dir, { recursive: true });
  const session = new Session(dir);

  // chdb keeps what a query that failed part-way had already output in the session, and hands it to the
  // next query there ahead of that query's own result (chdb 3.4: after a throwIf at row 5, `SELECT 4`
  // answered with rows 0-4, then its own row). So queries on this session take turns, and a failed one is
  // followed by a throwaway query that carries the leftovers off before the next turn. Inserts need no
  // turn: they read no result (one that runs first takes the leftovers with it, harmlessly).
  let turn: Promise<unknown> = Promise.resolve();
  const runNow = async (sql: string, params: QueryParams | undefined, format: string) => {
    try {
      return params && Object.keys(params).length > 0
        ? await session.queryBindAsync(sql, params, { format })
        : await session.queryAsync(sql, { format });
    } catch (error) {
      await session.queryAsync('SELECT 1', { format: 'TSV' }).catch(() => {});
      throw new WarehouseError(`warehouse query failed: ${(error as Error).message}`, { cause: error });
    }
  };
  const run = (sql: string, params: QueryParams | undefined, format: string) => {
    const result = turn.then(() => runNow(sql, params, format));
    turn = result.catch(() => {});
    return result;
  };

  await run(`CREATE DATABASE IF NOT EXISTS ${database}`, undefined, 'TSV');
  // The session is one connection, so USE sticks for every later query.
  await run(`USE ${database}`, undefined, 'TSV');
  // apache-arrow in JS reads uncompressed IPC only.
  await run("SET output_format_arrow_compression_method = 'none'", undefined, 'TSV');

  return {
    kind: 'chdb',
    database,
    async query<T>(sql: string, params?: QueryParams) {
      return parseJsonEachRow<T>((await run(sql, params, 'JSONEachRow')).text());
    },
    async queryArrow(sql: string, params?: QueryParams) {
      return tableFromIPC((await run(sql, params, 'ArrowStream')).bytes());
    },
    async insert(table: string, rows: readonly Record<string, unknown>[], options: InsertOptions = {}) {
      if (rows.length === 0) return;
      const settings = insertSettings(options);
      const payload = Buffer.from(`${rows.map((row) => JSON.stringify(row)).join('\n')}\n`);
      try {
        await session.insert({ table: assertIdentifier(table), values: payload, format: 'JSONEachRow', settings });
      } catch (error) {
        throw new WarehouseError(`insert into ${table} failed: ${(error as Error).message}`, { cause: error });
      }
    },
    async insertJsonEachRow(table: string, payload: Buffer, columns: readonly string[], options: InsertOptions = {}) {
      if (payload.length === 0) return;
      const settings = insertSettings(options);
      try {
        // The Buffer goes to chdb zero-copy; it must stay untouched until the insert settles.
        await session.insert({
          table: assertIdentifier(table),
          values: payload,
          format: 'JSONEachRow',
          columns: columns.map(assertIdentifier),
          settings,
        });
      } catch (error) {
        throw new WarehouseError(`insert into ${table} failed: ${(error as Error).message}`, { cause: error });
      }
    },
    async command(sql: string, params?: QueryParams) {
      await run(sql, params, 'TSV');
    },
    async ping() {
      return (await run('SELECT 1', undefined, 'TSV')).text().trim() === '1';
    },
    async close() {
      session.close();
    },
    async openEngineConnection(): Promise<EngineConnection> {
      // Same data folder, so chdb gives a connection of its own (they coexist by design), with its own settings.
      const own = new Session(dir);
      await own.queryAsync(`USE ${database}`, { format: 'TSV' });
      return {
        async run(sql, format) {
          const result = await own.queryAsync(sql, { format });
          return { bytes: result.bytes(), rowsRead: result.rowsRead, bytesRead: result.bytesRead };
        },
        async *stream(sql, format) {
          for await (const chunk of own.queryStream(sql, { format })) yield { bytes: chunk.raw(), rows: chunk.numRows };
        },
        async insertRaw(table, payload, format, columns, settings) {
          const summary = await own.insert({
            table: assertIdentifier(table),
            values: payload,
            format,
            columns: columns?.map(assertIdentifier),
            settings,
          });
          return { rowsWritten: summary.rowsWritten, bytesWritten: summary.bytesWritten };
        },
        close() {
          own.close();
        },
      };
    },
  };
}
