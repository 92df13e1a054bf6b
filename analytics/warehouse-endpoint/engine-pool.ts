// Engine connections for the endpoint, kept open between queries and set up once per kind:
//
//   read   readonly=2 (the engine refuses writes and DDL, and SET readonly) plus the limits
//   write  the `offers` role's inserts: not read-only (the SQL guard allows only its tables), same limits
//   admin  not read-only, same limits as defaults (an admin may change them)
//
// The limits are session settings of the connection, set before readonly=2, so a read-only user cannot
// lift them with SET; a `SETTINGS` clause or URL setting that names one is refused by the guard. A query
// with per-query state (`SET param_*`, settings from the URL, another database) undoes it before its
// connection goes back (`sessionDefault`); opening a fresh connection instead costs ~10 ms.

import type { EngineConnection, Warehouse } from '../warehouse/warehouse.js';
import { WarehouseEndpointError } from './errors.js';

export interface WarehouseLimits {
  /** Per query: ClickHouse `max_execution_time` (timeout_overflow_mode = throw). */
  maxExecutionSeconds: number;
  /** Per query: `max_result_rows` (result_overflow_mode = throw). */
  maxResultRows: number;
  /** Per query: `max_result_bytes` (uncompressed, in the engine's memory). */
  maxResultBytes: number;
  /** Per query: `max_memory_usage`. */
  maxMemoryBytes: number;
  /** Per query: `max_threads`, so endpoint queries leave cores to ingest. */
  maxThreads: number;
  /**
   * Nice value of the threads running an endpoint query (ClickHouse `os_thread_priority`; 0 to 19,
   * higher is lower priority, no privilege needed), so ingest's inserts come first.
   */
  queryNice: number;
  /** Queries one user may have running or waiting; one more is answered 429. */
  concurrentPerUser: number;
  /** Queries running on the engine at once, all users together; more wait their turn. */
  concurrentTotal: number;
  /** Largest query text, and largest insert body, accepted. */
  maxQueryBytes: number;
  maxInsertBytes: number;
}

/**
 * chdb's result stream runs ahead of its reader by a few dozen blocks whatever the socket does, so the
 * block size is what bounds a streamed result's memory: 8,192 rows (ClickHouse's default is 65,536)
 * keeps a wide result's read-ahead to tens of MiB. Reads from tables are cut at ~1 MiB blocks anyway
 * (preferred_block_size_bytes); this bounds generated and computed results too.
 */
const STREAM_BLOCK_ROWS = 8192;

/** Settings the endpoint's connections start with that a client may change: what they go back to. */
const SESSION_SETTINGS: Record<string, string | number> = {
  // A ClickHouse server quotes 64-bit integers in JSON by default (chdb does not); clients expect it.
  output_format_json_quote_64bit_integers: 1,
};

/** The value that undoes a client's `SET name = …` on a pooled connection. */
export function sessionDefault(name: string): string {
  const value = SESSION_SETTINGS[name.toLowerCase()];
  return value === undefined ? 'DEFAULT' : String(value);
}

/**
 * Result limits of a probe connection: a result within them is run whole with one asynchronous call, off
 * the event loop; a larger one is run again as a stream. chdb starts a stream on the calling thread
 * (parse and plan, ~0.5 ms of the event loop that ingest shares), and most queries return a few rows.
 */
export const PROBE_RESULT = { rows: 65_536, bytes: 8 << 20 };

export type ConnectionMode = 'read' | 'write' | 'admin';

export class EnginePool {
  private readonly idle = new Map<string, EngineConnection[]>();
  private readonly open = new Set<EngineConnection>();
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly warehouse: Warehouse,
    private readonly limits: WarehouseLimits,
  ) {
    if (!warehouse.openEngineConnection) {
      throw new WarehouseEndpointError(
        'NOT_IMPLEMENTED',
        'the warehouse endpoint serves the embedded (chdb) warehouse; a ClickHouse server is its own endpoint',
      );
    }
  }

  /** Waits for a slot among `concurrentTotal`; the returned function gives it back. */
  async slot(signal: AbortSignal): Promise<() => void> {
    if (this.running >= this.limits.concurrentTotal) {
      await new Promise<void>((resolve, reject) => {
        const go = () => {
          signal.removeEventListener('abort', gone);
          resolve();
        };
        const gone = () => {
          const index = this.waiting.indexOf(go);
          if (index >= 0) this.waiting.splice(index, 1);
          reject(new WarehouseEndpointError('TIMEOUT_EXCEEDED', 'the client went away while the query waited for a free slot'));
        };
        signal.addEventListener('abort', gone, { once: true });
        this.waiting.push(go);
      });
    } else this.running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    };
  }

  get active(): number {
    return this.running;
  }

  /**
   * A connection for `mode`; a `probe` one has its result limits cut to {@link PROBE_RESULT}, for running
   * a query whole first (see the endpoint's `runRequest`).
   */
  async acquire(mode: ConnectionMode, probe = false): Promise<EngineConnection> {
    if (this.closed) throw new WarehouseEndpointError('UNKNOWN_EXCEPTION', 'the warehouse endpoint is shutting down');
    const pooled = this.idle.get(`${mode}${probe ? ':probe' : ''}`)?.pop();
    if (pooled) return pooled;
    const connection = await this.warehouse.openEngineConnection!();
    this.open.add(connection);
    try {
      const l = this.limits;
      const settings = {
        max_execution_time: l.maxExecutionSeconds,
        timeout_overflow_mode: "'throw'",
        max_result_rows: probe ? Math.min(l.maxResultRows, PROBE_RESULT.rows) : l.maxResultRows,
        max_result_bytes: probe ? Math.min(l.maxResultBytes, PROBE_RESULT.bytes) : l.maxResultBytes,
        result_overflow_mode: "'throw'",
        max_memory_usage: l.maxMemoryBytes,
        max_threads: l.maxThreads,
        // Endpoint queries run at a lower OS priority than ingest's inserts, so a heavy query load takes
        // the CPU ingest leaves idle rather than a share of what it needs (bench/README.md).
        os_thread_priority: l.queryNice,
        max_block_size: STREAM_BLOCK_ROWS,
        ...SESSION_SETTINGS,
      };
      await connection.run(
        `SET ${Object.entries(settings)
          .map(([name, value]) => `${name} = ${value}`)
          .join(', ')}`,
        'TSV',
      );
      if (mode === 'read') await connection.run('SET readonly = 2', 'TSV');
    } catch (error) {
      this.discard(connection);
      throw error;
    }
    return connection;
  }

  /** Back to the pool, or closed when the query left state on it (params, settings, database) or failed oddly. */
  release(connection: EngineConnection, mode: ConnectionMode, reusable: boolean, probe = false): void {
    const key = `${mode}${probe ? ':probe' : ''}`;
    const idle = this.idle.get(key) ?? [];
    this.idle.set(key, idle);
    if (!reusable || this.closed || idle.length >= this.limits.concurrentTotal * 2) this.discard(connection);
    else idle.push(connection);
  }

  private discard(connection: EngineConnection): void {
    this.open.delete(connection);
    connection.close();
  }

  close(): void {
    this.closed = true;
    for (const connection of this.open) connection.close();
    this.open.clear();
    this.idle.clear();
  }
}
