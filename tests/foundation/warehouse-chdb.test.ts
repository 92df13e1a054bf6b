// The embedded warehouse (chdb): DDL, insert, server-side bound parameters, Arrow, migrations.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openChdbWarehouse } from '../../analytics/warehouse/chdb-warehouse.js';
import { migrate } from '../../analytics/warehouse/migrate.js';
import type { Warehouse } from '../../analytics/warehouse/warehouse.js';
import { stackDir } from '../../stack/services.js';

let dir: string;
let warehouse: Warehouse;

beforeAll(async () => {
  mkdirSync(stackDir(), { recursive: true });
  // chdb binds one data folder per process; each test file gets its own.
  dir = mkdtempSync(join(stackDir(), 'chdb-test-'));
  warehouse = await openChdbWarehouse(join(dir, 'data'), 'foundation');
});

afterAll(async () => {
  await warehouse.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('chdb warehouse', () => {
  it('creates a table, inserts, and queries with bound parameters', async () => {
    await warehouse.command(
      'CREATE TABLE units (sale_id LowCardinality(String), sku String, price UInt32, ts DateTime64(3)) ENGINE = MergeTree ORDER BY (sale_id, ts)',
    );
    await warehouse.insert('units', [
      { sale_id: 's1', sku: 'red', price: 1000, ts: '2026-11-25 10:00:00.000' },
      { sale_id: 's1', sku: 'blue', price: 2500, ts: '2026-11-25 10:00:01.000' },
      { sale_id: 's2', sku: 'red', price: 999, ts: '2026-11-25 10:00:02.000' },
    ]);
    const rows = await warehouse.query<{ sku: string; price: number }>(
      'SELECT sku, price FROM units WHERE sale_id = {sale:String} AND price >= {min:UInt32} ORDER BY sku',
      { sale: 's1', min: 1500 },
    );
    expect(rows).toEqual([{ sku: 'blue', price: 2500 }]);
  });

  it('binds parameters server-side, so a hostile value stays a value', async () => {
    const rows = await warehouse.query<{ n: string }>('SELECT count() AS n FROM units WHERE sale_id = {sale:String}', {
      sale: "s1' OR 1=1 --",
    });
    expect(Number(rows[0]?.n)).toBe(0);
  });

  it('reads a result as Arrow', async () => {
    const table = await warehouse.queryArrow('SELECT sale_id, sum(price) AS revenue FROM units GROUP BY sale_id ORDER BY sale_id');
    expect(table.numRows).toBe(2);
    expect(table.schema.fields.map((f) => f.name)).toEqual(['sale_id', 'revenue']);
    expect(table.getChild('sale_id')?.toArray()).toEqual(['s1', 's2']);
    expect(Array.from(table.getChild('revenue')?.toArray() ?? [], Number)).toEqual([3500, 999]);
  });

  it('applies migrations once, in order, and records them', async () => {
    const migrations = join(dir, 'migrations');
    mkdirSync(migrations);
    writeFileSync(
      join(migrations, '0002_add_rollup.sql'),
      'CREATE TABLE m_b (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO m_b VALUES (2);\n',
    );
    writeFileSync(join(migrations, '0001_create.sql'), '-- the first table\nCREATE TABLE m_a (x UInt8) ENGINE = MergeTree ORDER BY x;\n');
    writeFileSync(join(migrations, 'README.txt'), 'not a migration');
    expect(await migrate(warehouse, migrations)).toEqual({ applied: ['0001_create.sql', '0002_add_rollup.sql'], alreadyApplied: [] });
    expect(await migrate(warehouse, migrations)).toEqual({ applied: [], alreadyApplied: ['0001_create.sql', '0002_add_rollup.sql'] });
    expect(await warehouse.query('SELECT x FROM m_b')).toEqual([{ x: 2 }]);
    const recorded = await warehouse.query<{ version: number; name: string }>(
      'SELECT version, name FROM schema_migrations ORDER BY version',
    );
    expect(recorded).toEqual([
      { version: 1, name: '0001_create.sql' },
      { version: 2, name: '0002_add_rollup.sql' },
    ]);
  });

  it('reports a failing statement as a warehouse error naming the problem', async () => {
    await expect(warehouse.query('SELECT * FROM no_such_table')).rejects.toThrow(/no_such_table/);
  });
});
