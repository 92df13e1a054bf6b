// chdb hands what a query that failed part-way had already output to the next query on the same session;
// ingest's warehouse (order-facts dedup reads, the readiness ping) shares that session, so the adapter
// clears it after a failure and lets no other query in between.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WarehouseError } from '../../analytics/warehouse/warehouse.js';
import { openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

// Fails at row 5, after rows 0-4 have been output one block each.
const FAILS_PART_WAY = 'SELECT number FROM numbers(10) WHERE throwIf(number = 5) = 0 SETTINGS max_block_size = 1';

describe('chdb warehouse after a query that failed part-way', () => {
  let test: TestWarehouse;
  beforeAll(async () => {
    test = await openTestWarehouse();
  });
  afterAll(async () => test?.dispose());

  it('answers the next query with that query own rows only', async () => {
    await expect(test.warehouse.query(FAILS_PART_WAY)).rejects.toBeInstanceOf(WarehouseError);
    expect(await test.warehouse.query('SELECT 4 AS four')).toEqual([{ four: 4 }]);
    await expect(test.warehouse.query(FAILS_PART_WAY)).rejects.toBeInstanceOf(WarehouseError);
    expect(await test.warehouse.ping()).toBe(true);
  });

  it('keeps the leftovers from a query sent at the same time', async () => {
    const [failed, next, arrow] = await Promise.allSettled([
      test.warehouse.query(FAILS_PART_WAY),
      test.warehouse.query<{ n: string }>('SELECT toString(number) AS n FROM numbers(3)'),
      test.warehouse.queryArrow('SELECT 7 AS seven'),
    ]);
    expect(failed.status).toBe('rejected');
    expect(next).toEqual({ status: 'fulfilled', value: [{ n: '0' }, { n: '1' }, { n: '2' }] });
    expect(arrow.status === 'fulfilled' ? arrow.value.toArray().map((row) => row.toJSON()) : arrow.reason).toEqual([{ seven: 7 }]);
  });
});
