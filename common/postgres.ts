// PostgreSQL pool factory (the order store's system of record).
import pg from 'pg';
import { config } from './config.js';

export function createPostgresPool(options: pg.PoolConfig = {}): pg.Pool {
  const { url, poolSize } = config().postgres;
  const pool = new pg.Pool({ connectionString: url, max: poolSize, connectionTimeoutMillis: 5000, ...options });
  // An idle client losing its server (a restart) must not crash the process; the next query reconnects.
  pool.on('error', () => {});
  return pool;
}

export type { pg };

/** Runs `work` in one transaction on one client: committed whole, or rolled back whole and rethrown. */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}
