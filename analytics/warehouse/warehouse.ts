// The warehouse interface every reader and writer of ClickHouse goes through. Two adapters implement
// it: embedded chdb (the default; one process owns the data folder) and @clickhouse/client for a
// ClickHouse server (when CLICKHOUSE_URL is set). Parameters are bound server-side with `{name:Type}`
// placeholders in both, so no value is ever spliced into SQL text.

import type { Table } from 'apache-arrow';

export type QueryParams = Record<string, unknown>;

export interface InsertOptions {
  /**
   * Insert deduplication token: a retried insert of the same batch with the same token is dropped by
   * ClickHouse (needs `non_replicated_deduplication_window` on plain MergeTree tables).
   */
  dedupToken?: string;
  settings?: Record<string, string | number>;
}

export interface Warehouse {
  readonly kind: 'chdb' | 'server';
  readonly database: string;
  /** Rows as plain objects (JSONEachRow). 64-bit integers come back as strings unless cast. */
  query<T = Record<string, unknown>>(sql: string, params?: QueryParams): Promise<T[]>;
  /** The result as an Arrow table, for columnar consumers (offer jobs, notebooks). */
  queryArrow(sql: string, params?: QueryParams): Promise<Table>;
  insert(table: string, rows: readonly Record<string, unknown>[], options?: InsertOptions): Promise<void>;
  /**
   * Inserts JSONEachRow bytes as they are (one JSON object per line, keys among `columns`; columns not
   * listed take their defaults). For a writer that already holds valid JSON: nothing is parsed or
   * re-encoded in JS. Optional, so a writer must be able to fall back to `insert`.
   */
  insertJsonEachRow?(table: string, payload: Buffer, columns: readonly string[], options?: InsertOptions): Promise<void>;
  /** DDL and other statements that return nothing. */
  command(sql: string, params?: QueryParams): Promise<void>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export class WarehouseError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WarehouseError';
  }
}

/** ClickHouse settings for an insert: the caller's, plus the deduplication token when there is one. */
export function insertSettings(options: InsertOptions): Record<string, string | number> {
  const settings: Record<string, string | number> = { ...options.settings };
  if (options.dedupToken) {
    settings.insert_deduplicate = 1;
    settings.insert_deduplication_token = options.dedupToken;
  }
  return settings;
}

/** Table and database names are the one thing not bindable; accept only plain identifiers. */
export function assertIdentifier(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/.test(name)) {
    throw new WarehouseError(`not a plain table or database name: ${JSON.stringify(name)}`);
  }
  return name;
}

export function parseJsonEachRow<T>(text: string): T[] {
  const rows: T[] = [];
  for (const line of text.split('\n')) if (line.length > 0) rows.push(JSON.parse(line) as T);
  return rows;
}
