// A private warehouse for one test file, read the way production reads it: chdb on a fresh folder in this
// process, migrated, served by the ClickHouse-HTTP warehouse endpoint on a free port, and queried through
// @clickhouse/client from createWarehouseReader() as the `offers` role (which may also insert into the offer
// tables). Each file gets its own folder, so files run in parallel.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { openChdbWarehouse } from '../../analytics/warehouse/chdb-warehouse.js';
import { migrate } from '../../analytics/warehouse/migrate.js';
import type { Warehouse } from '../../analytics/warehouse/warehouse.js';

export interface TestWarehouseEndpoint {
  warehouse: Warehouse;
  reader: ClickHouseClient;
  url: string;
  username: string;
  password: string;
  close(): Promise<void>;
}

export async function openWarehouseEndpoint(prefix: string): Promise<TestWarehouseEndpoint> {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-chdb-`));
  const warehouse = await openChdbWarehouse(dir, 'flashsale');
  await migrate(warehouse);
  const { hashWarehousePassword, startWarehouseEndpoint } = await import('../../analytics/warehouse-endpoint/index.js');
  const { createWarehouseReader } = await import('../../analytics/reader.js');
  // The `offers` role under its own name, so a child process (the offers CLI) can log in through the same
  // configuration variables production uses (WAREHOUSE_HTTP_URL, WAREHOUSE_OFFERS_PASSWORD).
  const username = 'offers';
  const password = 'offers-test-password';
  const endpoint = await startWarehouseEndpoint({
    warehouse,
    host: '127.0.0.1',
    port: 0,
    users: [{ name: username, role: 'offers', passwordHash: hashWarehousePassword(password) }],
  });
  const reader = createWarehouseReader({ url: endpoint.url, username, password });
  return {
    warehouse,
    reader,
    url: endpoint.url,
    username,
    password,
    async close() {
      await reader.close();
      await endpoint.close();
      await warehouse.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
