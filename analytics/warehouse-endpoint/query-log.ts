// The endpoint's query log (table `warehouse_query_log`, migration 0007, analytics/SCHEMA.md): one row
// per request that named a query, answered or refused. Rows are batched and written about once a second
// through the owner's warehouse, so logging costs the hot path an array push.

import type { Warehouse } from '../warehouse/warehouse.js';

// A type, not an interface: rows for Warehouse.insert are plain records.
export type QueryLogEntry = {
  /** `YYYY-MM-DD hh:mm:ss.sss` UTC: ClickHouse versions disagree on what a bare number means in DateTime64. */
  started_at: string;
  query_id: string;
  user_name: string;
  role: string;
  on_behalf_of: string;
  client_address: string;
  statement: string;
  query: string;
  format: string;
  status: 'ok' | 'refused' | 'failed';
  http_status: number;
  error_code: number;
  error: string;
  duration_ms: number;
  result_rows: number;
  result_bytes: number;
  written_rows: number;
};

export function dateTime64Text(ms: number): string {
  return new Date(ms).toISOString().slice(0, 23).replace('T', ' ');
}

export const QUERY_LOG_TABLE = 'warehouse_query_log';
/** Longer query texts are cut in the log (the query itself runs whole). */
const MAX_LOGGED_QUERY = 16 * 1024;
/** Past this many unwritten rows (the warehouse is failing) the oldest are dropped, counted in `dropped`. */
const MAX_PENDING = 50_000;

export class QueryLog {
  private pending: QueryLogEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  dropped = 0;

  constructor(
    private readonly warehouse: Warehouse,
    private readonly onError: (error: unknown) => void,
    private readonly intervalMs = 1000,
  ) {}

  record(entry: QueryLogEntry): void {
    if (entry.query.length > MAX_LOGGED_QUERY) entry.query = `${entry.query.slice(0, MAX_LOGGED_QUERY)}…`;
    this.pending.push(entry);
    if (this.pending.length > MAX_PENDING) this.dropped += this.pending.splice(0, this.pending.length - MAX_PENDING).length;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.intervalMs);
  }

  /** Writes what is pending; resolves when it is written (or failed and was put back). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.flushing = this.warehouse
      .insert(QUERY_LOG_TABLE, batch)
      .catch((error: unknown) => {
        this.pending = [...batch, ...this.pending].slice(-MAX_PENDING);
        this.onError(error);
      })
      .finally(() => {
        this.flushing = undefined;
      });
    await this.flushing;
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
