// Each test file opens chdb on its own fresh folder: chdb binds one data folder per process, and
// vitest runs files in parallel forked processes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openChdbWarehouse } from '../../../analytics/warehouse/chdb-warehouse.js';
import { migrate } from '../../../analytics/warehouse/migrate.js';
import type { Warehouse } from '../../../analytics/warehouse/warehouse.js';

export interface TestWarehouse {
  warehouse: Warehouse;
  dir: string;
  dispose(): Promise<void>;
}

export function freshWarehouseDir(): string {
  return mkdtempSync(join(tmpdir(), 'ingest-chdb-'));
}

export async function openTestWarehouse(dir = freshWarehouseDir()): Promise<TestWarehouse> {
  const warehouse = await openChdbWarehouse(dir, 'flashsale');
  await migrate(warehouse);
  return {
    warehouse,
    dir,
    async dispose() {
      await warehouse.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function countOf(warehouse: Warehouse, sql: string, params?: Record<string, unknown>): Promise<number> {
  const [row] = await warehouse.query<{ n: string | number }>(sql, params);
  return Number(row?.n ?? 0);
}

/**
 * A sale's clickstream as the warehouse holds it, without FINAL: raw rows, distinct event ids, and what
 * the funnel rollup added up. "Exactly once" means all three equal the events sent.
 */
export async function clickstreamCounts(warehouse: Warehouse, sale: string) {
  const where = { sale };
  return {
    rows: await countOf(warehouse, 'SELECT count() AS n FROM clickstream_events WHERE sale_id = {sale:String}', where),
    distinct: await countOf(warehouse, 'SELECT uniqExact(event_id) AS n FROM clickstream_events WHERE sale_id = {sale:String}', where),
    funnel: await countOf(warehouse, 'SELECT sum(events) AS n FROM funnel_stages_per_minute WHERE sale_id = {sale:String}', where),
  };
}
