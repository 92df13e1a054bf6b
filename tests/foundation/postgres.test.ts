// PostgreSQL: a round trip on the shared server, and committed rows that survive kill -9 and a restart of
// a private one (the order store's promise). The private server also proves the stack can kill and
// restart PostgreSQL at once, and that it runs when the checkout is in a folder its user cannot enter.
import { afterAll, describe, expect, it } from 'vitest';
import { createPostgresPool } from '../../common/postgres.js';
import { type PrivateServer, startPrivateServer } from '../support/private-server.js';

let server: PrivateServer | undefined;
afterAll(async () => server?.dispose());

describe('PostgreSQL', () => {
  it('round-trips a row', async () => {
    const pool = createPostgresPool();
    const table = `foundation_roundtrip_${process.pid}`;
    try {
      await pool.query(`CREATE TABLE ${table} (id bigint PRIMARY KEY, title text NOT NULL, price_cents integer, at timestamptz)`);
      const at = new Date('2026-11-25T12:00:00.123Z');
      await pool.query(`INSERT INTO ${table} VALUES ($1, $2, $3, $4)`, [42, 'Limited sneaker — «ünïcode»', 12999, at]);
      const { rows } = await pool.query(`SELECT id, title, price_cents, at FROM ${table} WHERE id = $1`, [42]);
      expect(rows).toEqual([{ id: '42', title: 'Limited sneaker — «ünïcode»', price_cents: 12999, at }]);
    } finally {
      await pool.query(`DROP TABLE IF EXISTS ${table}`);
      await pool.end();
    }
  });

  it('keeps committed rows through kill -9 and a restart, twice', async () => {
    server = await startPrivateServer('postgres');
    const before = createPostgresPool({ max: 1, connectionString: server.url });
    await before.query('CREATE TABLE paid (order_id text PRIMARY KEY)');
    await before.query("INSERT INTO paid SELECT 'order-' || n FROM generate_series(1, 100) AS n");
    await before.end();

    for (let round = 0; round < 2; round++) {
      // SIGKILL: the postmaster's children and the killed process itself must be gone before the
      // restart, or the new postmaster refuses the data folder.
      await server.service.down(true);
      expect((await server.service.status()).running).toBe(false);
      await server.service.up();
    }

    const after = createPostgresPool({ max: 1, connectionString: server.url });
    try {
      expect((await after.query('SELECT count(*)::int AS n FROM paid')).rows).toEqual([{ n: 100 }]);
    } finally {
      await after.end();
    }
  });
});
