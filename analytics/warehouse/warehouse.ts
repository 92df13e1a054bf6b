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
  /**
   * Embedded engine only: a connection of its own on the same data, for the warehouse endpoint
   * (analytics/warehouse-endpoint), which serves this warehouse to readers in other processes.
   */
  openEngineConnection?(): Promise<EngineConnection>;
}

/**
 * One engine connection (chdb opens several on one data folder): its session settings (`SET`, the
 * read-only mode, limits) and `SET param_*` values are its own, and it holds at most one result stream.
 */
export interface EngineConnection {
  /** Runs SQL and returns its whole result, formatted in `format`. */
  run(sql: string, format: string): Promise<{ bytes: Uint8Array; rowsRead: number; bytesRead: number }>;
  /** Streams the result chunk by chunk (each chunk formatted on its own); stopping the iteration cancels the query. */
  stream(sql: string, format: string): AsyncIterable<{ bytes: Uint8Array; rows: number }>;
  /** Inserts rows given as bytes in a text row format. */
  insertRaw(
    table: string,
    payload: Buffer,
    format:
      | 'JSONEachRow'
      | 'JSONCompactEachRow'
      | 'CSV'
      | 'CSVWithNames'
      | 'TSV'
      | 'TabSeparated'
      | 'TSVWithNames'
      | 'TabSeparatedWithNames',
    columns?: readonly string[],
    settings?: Record<string, string | number>,
  ): Promise<{ rowsWritten: number; bytesWritten: number }>;
  close(): void;
}

/**
 * ClickHouse exception codes that mean the data itself is refused: the same rows fail the same way on every
 * retry, so a writer must set them aside (ingest splits the batch and dead-letters the rows at fault).
 * Every other failure (connection, timeout, overload, a table or column not migrated yet, an unknown code)
 * counts as retriable: retrying costs time, never data.
 */
const DATA_REFUSED_CODES = new Map<number, string>([
  [6, 'CANNOT_PARSE_TEXT'],
  [25, 'CANNOT_PARSE_ESCAPE_SEQUENCE'],
  [26, 'CANNOT_PARSE_QUOTED_STRING'],
  [27, 'CANNOT_PARSE_INPUT_ASSERTION_FAILED'],
  [38, 'CANNOT_PARSE_DATE'],
  [41, 'CANNOT_PARSE_DATETIME'],
  [53, 'TYPE_MISMATCH'],
  [69, 'ARGUMENT_OUT_OF_BOUND'],
  [70, 'CANNOT_CONVERT_TYPE'],
  [72, 'CANNOT_PARSE_NUMBER'],
  [117, 'INCORRECT_DATA'],
  [131, 'TOO_LARGE_STRING_SIZE'],
  [321, 'VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE'],
  [349, 'CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN'],
  [376, 'CANNOT_PARSE_UUID'],
  [395, 'FUNCTION_THROW_IF_VALUE_IS_NON_ZERO'],
  [407, 'DECIMAL_OVERFLOW'],
  [467, 'CANNOT_PARSE_BOOL'],
  [469, 'VIOLATED_CONSTRAINT'],
]);

/** Any `CANNOT_PARSE_*` exception is a value the engine cannot read, listed above or not. */
const refusesData = (code: number, name: string | undefined) =>
  DATA_REFUSED_CODES.has(code) || (name?.startsWith('CANNOT_PARSE_') ?? false);

/** Node socket errors: the warehouse is unreachable, not refusing anything. */
const CONNECTION_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

export interface WarehouseFailure {
  /** The ClickHouse exception name (`CANNOT_PARSE_ESCAPE_SEQUENCE`), `CLICKHOUSE_<n>`, `CONNECTION` or `UNKNOWN`. */
  code: string;
  /** The ClickHouse exception code, when the engine or server answered with one. */
  clickhouseCode?: number;
  /** False only when the engine refused the data itself: the same rows will fail again. */
  retriable: boolean;
}

/**
 * Reads what went wrong from an error of chdb (`clickhouseCode`), @clickhouse/client (`code`, `type`) or
 * their text (`Code: N. DB::Exception: … (NAME)`), walking the cause chain.
 */
export function classifyWarehouseFailure(error: unknown): WarehouseFailure {
  for (let current = error, depth = 0; current instanceof Error && depth < 8; current = current.cause, depth++) {
    if (current instanceof WarehouseError)
      return { code: current.code, clickhouseCode: current.clickhouseCode, retriable: current.retriable };
    const fields = current as Error & { clickhouseCode?: unknown; code?: unknown; type?: unknown };
    let clickhouseCode = typeof fields.clickhouseCode === 'number' ? fields.clickhouseCode : undefined;
    // @clickhouse/client's ClickHouseError carries the number as a string in `code` and the name in `type`.
    if (clickhouseCode === undefined && typeof fields.code === 'string' && /^\d+$/.test(fields.code) && typeof fields.type === 'string') {
      clickhouseCode = Number(fields.code);
    }
    const match = /\bCode: (\d+)\./.exec(current.message);
    if (clickhouseCode === undefined && match) clickhouseCode = Number(match[1]);
    if (clickhouseCode !== undefined) {
      // The exception name closes ClickHouse's message: `… (CANNOT_PARSE_ESCAPE_SEQUENCE)`.
      const name =
        DATA_REFUSED_CODES.get(clickhouseCode) ??
        (typeof fields.type === 'string' && fields.type !== '' ? fields.type : undefined) ??
        [...current.message.matchAll(/\(([A-Z][A-Z0-9_]{2,})\)/g)].at(-1)?.[1];
      return { code: name ?? `CLICKHOUSE_${clickhouseCode}`, clickhouseCode, retriable: !refusesData(clickhouseCode, name) };
    }
    if (typeof fields.code === 'string' && CONNECTION_ERRORS.has(fields.code)) return { code: 'CONNECTION', retriable: true };
  }
  return { code: 'UNKNOWN', retriable: true };
}

export class WarehouseError extends Error {
  readonly code: string;
  readonly clickhouseCode?: number;
  /** Whether the same call may succeed later; false when the warehouse refused the data itself. */
  readonly retriable: boolean;

  constructor(message: string, options?: { cause?: unknown; failure?: WarehouseFailure }) {
    super(message, options);
    this.name = 'WarehouseError';
    const failure = options?.failure ?? classifyWarehouseFailure(options?.cause ?? new Error(message));
    this.code = failure.code;
    this.clickhouseCode = failure.clickhouseCode;
    this.retriable = failure.retriable;
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
