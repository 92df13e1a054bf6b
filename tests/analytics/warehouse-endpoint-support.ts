// The warehouse endpoint in this test process, over chdb in a folder of the test file's own, with
// users of every role (passwords known to the test) and limits the test may tighten.
import type { ClickHouseClient } from '@clickhouse/client';
import { createWarehouseReader } from '../../analytics/reader.js';
import {
  hashWarehousePassword,
  startWarehouseEndpoint,
  type WarehouseLimits,
  type WarehouseUser,
} from '../../analytics/warehouse-endpoint/index.js';
import { openTestWarehouse, type TestWarehouse } from '../ingest/support/warehouse.js';

export const PASSWORDS = { analyst: 'analyst-test-password', offers: 'offers-test-password', admin: 'admin-test-password' } as const;

export interface TestEndpoint {
  test: TestWarehouse;
  url: string;
  activeQueries(user?: string): number;
  client(role: keyof typeof PASSWORDS, extra?: Parameters<typeof createWarehouseReader>[0]): ClickHouseClient;
  dispose(): Promise<void>;
}

export async function startTestEndpoint(limits: Partial<WarehouseLimits> = {}): Promise<TestEndpoint> {
  const test = await openTestWarehouse();
  const users: WarehouseUser[] = (Object.keys(PASSWORDS) as (keyof typeof PASSWORDS)[]).map((role) => ({
    name: role,
    role,
    passwordHash: hashWarehousePassword(PASSWORDS[role]),
  }));
  const endpoint = await startWarehouseEndpoint({ warehouse: test.warehouse, host: '127.0.0.1', port: 0, users, limits });
  const clients: ClickHouseClient[] = [];
  return {
    test,
    url: endpoint.url,
    activeQueries: endpoint.activeQueries,
    client(role, extra = {}) {
      const client = createWarehouseReader({ url: endpoint.url, username: role, password: PASSWORDS[role], role, ...extra });
      clients.push(client);
      return client;
    },
    async dispose() {
      await Promise.all(clients.map((client) => client.close()));
      await endpoint.close();
      await test.dispose();
    },
  };
}

/** Raw HTTP to the endpoint, for what a client library would hide (status, headers, body). */
export async function rawQuery(
  url: string,
  sql: string,
  opts: { user?: string; password?: string; params?: Record<string, string>; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const target = new URL(url);
  if (opts.body === undefined) target.searchParams.set('query', sql);
  for (const [name, value] of Object.entries(opts.params ?? {})) target.searchParams.set(name, value);
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.user !== undefined) {
    headers['X-ClickHouse-User'] = opts.user;
    headers['X-ClickHouse-Key'] = opts.password ?? '';
  }
  const response = await fetch(target, { method: 'POST', headers, body: opts.body ?? '' });
  return { status: response.status, headers: response.headers, text: await response.text() };
}
