// The @clickhouse/client adapter against a real ClickHouse server. Debian's clickhouse-server 18.16 is
// the only server build available here, so this covers the version-independent subset: ping, DDL of a
// plain MergeTree table, insert, select (no query parameters: 18.16 predates them).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openServerWarehouse } from '../../analytics/warehouse/server-warehouse.js';
import type { Warehouse } from '../../analytics/warehouse/warehouse.js';
import { loadStackPorts } from '../../common/config.js';

let warehouse: Warehouse;
const table = `units_${process.pid}`;

beforeAll(async () => {
  warehouse = await openServerWarehouse(`http://127.0.0.1:${loadStackPorts().clickhouseHttp}`, 'foundation');
});

afterAll(async () => {
  await warehouse.command(`DROP TABLE IF EXISTS ${table}`);
  await warehouse.close();
});

describe('ClickHouse server adapter', () => {
  it('pings', async () => {
    expect(await warehouse.ping()).toBe(true);
  });

  it('creates a plain MergeTree table, inserts and selects', async () => {
    await warehouse.command(
      `CREATE TABLE ${table} (day Date, sale_id String, sku String, price UInt32) ENGINE = MergeTree(day, (sale_id, sku), 8192)`,
    );
    await warehouse.insert(table, [
      { day: '2026-11-25', sale_id: 's1', sku: 'red', price: 1000 },
      { day: '2026-11-25', sale_id: 's1', sku: 'blue', price: 2500 },
    ]);
    const rows = await warehouse.query<{ sku: string; price: number }>(`SELECT sku, price FROM ${table} WHERE sale_id = 's1' ORDER BY sku`);
    expect(rows).toEqual([
      { sku: 'blue', price: 2500 },
      { sku: 'red', price: 1000 },
    ]);
  });

  it('names the server problem in its error', async () => {
    await expect(warehouse.query('SELECT * FROM no_such_table')).rejects.toThrow(/no_such_table/);
  });
});
