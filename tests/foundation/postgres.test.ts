import { describe, expect, it } from 'vitest';
import { createPostgresPool } from '../../common/postgres.js';

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
});
