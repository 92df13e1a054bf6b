// What the dashboards' tests share: a private warehouse (chdb in a fresh folder, migrated) served by the
// warehouse endpoint in the test process, the dashboards on a free port with PostgreSQL tables in a
// schema of the test's own, and a small cookie-keeping HTTP client that signs in like the browser does.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { createWarehouseReader } from '../../analytics/reader.js';
import { openChdbWarehouse } from '../../analytics/warehouse/chdb-warehouse.js';
import { migrate } from '../../analytics/warehouse/migrate.js';
import type { Warehouse } from '../../analytics/warehouse/warehouse.js';
import { hashWarehousePassword, startWarehouseEndpoint } from '../../analytics/warehouse-endpoint/index.js';
import { createPostgresPool, type pg } from '../../common/postgres.js';
import { type Dashboards, type DashboardsOptions, startDashboards } from '../../dashboards/index.js';

export const ANALYST_PASSWORD = 'test-analyst-password';
export const OFFERS_PASSWORD = 'test-offers-password';
export const ADMIN = { email: 'admin@test.local', password: 'test-admin-password' };
export const MARKETER = { email: 'marketer@flashsale.local', password: 'demo-marketer-password' };
export const ANALYST = { email: 'analyst@flashsale.local', password: 'demo-analyst-password' };

export interface PrivateWarehouse {
  warehouse: Warehouse;
  url: string;
  reader: ClickHouseClient;
  dir: string;
  close(): Promise<void>;
}

export async function startPrivateWarehouse(dir = mkdtempSync(join(tmpdir(), 'dashboards-chdb-'))): Promise<PrivateWarehouse> {
  const warehouse = await openChdbWarehouse(dir, 'flashsale');
  await migrate(warehouse);
  const endpoint = await startWarehouseEndpoint({
    warehouse,
    host: '127.0.0.1',
    port: 0,
    users: [
      { name: 'analyst', role: 'analyst', passwordHash: hashWarehousePassword(ANALYST_PASSWORD) },
      { name: 'offers', role: 'offers', passwordHash: hashWarehousePassword(OFFERS_PASSWORD) },
    ],
  });
  const reader = createWarehouseReader({ url: endpoint.url, username: 'analyst', password: ANALYST_PASSWORD });
  return {
    warehouse,
    url: endpoint.url,
    reader,
    dir,
    async close() {
      await reader.close();
      await endpoint.close();
      await warehouse.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestDashboards extends Dashboards {
  pool: pg.Pool;
  schema: string;
  dispose(): Promise<void>;
}

export async function startTestDashboards(options: Partial<DashboardsOptions> & { reader: ClickHouseClient }): Promise<TestDashboards> {
  const pool = createPostgresPool({ max: 4 });
  const schema = `dashboards_test_${randomUUID().slice(0, 8)}`;
  const dashboards = await startDashboards({
    port: 0,
    host: '127.0.0.1',
    pool,
    pgSchema: schema,
    admin: ADMIN,
    demoAccounts: true,
    ...options,
  });
  return {
    ...dashboards,
    pool,
    schema,
    async dispose() {
      await dashboards.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    },
  };
}

/** An HTTP client with a cookie jar and the CSRF token, as the browser holds them. */
export class Visitor {
  private cookies = new Map<string, string>();
  csrf: string | undefined;

  constructor(readonly base: string) {}

  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${this.base}${path}`, {
      method,
      redirect: 'manual',
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(this.cookies.size ? { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      this.cookies.set(pair!.slice(0, eq), pair!.slice(eq + 1));
    }
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, headers: res.headers, text, json };
  }

  /** A state-changing request carrying the CSRF token (fetched first if needed). */
  async send(method: string, path: string, body?: unknown) {
    if (!this.csrf) this.csrf = String((await this.request('GET', '/api/csrf')).json.token);
    return this.request(method, path, body, { 'x-csrf-token': this.csrf });
  }

  async signIn(email: string, password: string) {
    const answer = await this.send('POST', '/api/signin', { email, password });
    if (answer.status === 200) this.csrf = String(answer.json.csrf);
    return answer;
  }

  cookieHeader(): string | undefined {
    return this.cookies.get('flashsale_dashboards');
  }
}

export { until } from '../support/until.js';
