// Opens the warehouse the configuration names: a ClickHouse server when CLICKHOUSE_URL is set,
// otherwise embedded chdb under the stack's data folder.
import { config } from '../../common/config.js';
import { openChdbWarehouse } from './chdb-warehouse.js';
import { openServerWarehouse } from './server-warehouse.js';
import type { Warehouse } from './warehouse.js';

export function openWarehouse(settings = config().warehouse): Promise<Warehouse> {
  return settings.clickhouseUrl
    ? openServerWarehouse(settings.clickhouseUrl, settings.database)
    : openChdbWarehouse(settings.chdbDir, settings.database);
}

export { type MigrationResult, migrate } from './migrate.js';
export type { InsertOptions, QueryParams, Warehouse } from './warehouse.js';
export { WarehouseError } from './warehouse.js';
