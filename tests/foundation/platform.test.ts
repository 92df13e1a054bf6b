// `npm start`'s main job end to end: main.ts --role all as its own process (sale core in a child
// process, ingest with its chdb warehouse in the parent). A shopper buys and pays over real HTTP, and
// the order reaches the PostgreSQL order store through Redis, the outbox relay, Kafka and ingest.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresPool } from '../../common/postgres.js';
import { stackDir } from '../../stack/services.js';
import { freePort } from '../support/private-server.js';
import { until as pollUntil } from '../support/until.js';

const root = join(import.meta.dirname, '..', '..');
let main: ChildProcess;
let saleUrl: string;
let ingestUrl: string;
let chdbDir: string;
let output = '';

/** Polls until `probe` answers; a time-out shows what the main job said. */
const until = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000) =>
  pollUntil(what, probe, timeoutMs, { explain: () => `main.ts said:\n${output.slice(-3000)}` });

beforeAll(async () => {
  const [salePort, ingestPort, warehousePort, dashboardsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  saleUrl = `http://127.0.0.1:${salePort}`;
  ingestUrl = `http://127.0.0.1:${ingestPort}`;
  chdbDir = mkdtempSync(join(stackDir(), 'chdb-platform-'));
  const run = randomUUID().slice(0, 8);
  main = spawn(join(root, 'node_modules', '.bin', 'tsx'), [join(root, 'main.ts')], {
    cwd: root,
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      SALE_PORT: String(salePort),
      INGEST_PORT: String(ingestPort),
      WAREHOUSE_HTTP_PORT: String(warehousePort),
      DASHBOARDS_PORT: String(dashboardsPort),
      CHDB_DIR: chdbDir,
      // Groups of this run only, so it does not take partitions from anyone else's ingest.
      INGEST_WAREHOUSE_GROUP: `platform-test-warehouse-${run}`,
      INGEST_ORDER_STORE_GROUP: `platform-test-orders-${run}`,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  main.stdout?.on('data', (chunk) => (output += chunk));
  main.stderr?.on('data', (chunk) => (output += chunk));
  await until('the sale core', async () => ((await fetch(`${saleUrl}/readyz`)).ok ? true : undefined), 90_000);
  await until('ingest', async () => ((await fetch(`${ingestUrl}/readyz`)).ok ? true : undefined), 90_000);
}, 120_000);

afterAll(async () => {
  if (main && main.exitCode === null) {
    main.kill('SIGTERM');
    await new Promise((r) => main.once('exit', r));
  }
  rmSync(chdbDir, { recursive: true, force: true });
});

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${saleUrl}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('the main job (npm start)', () => {
  it('sells a unit over HTTP and lands the paid order in the order store', async () => {
    const saleId = `platform-${randomUUID().slice(0, 8)}`;
    const now = Date.now();
    const created = await call(
      'POST',
      '/admin/sales',
      {
        id: saleId,
        title: 'Platform smoke sale',
        starts_at: now - 1000,
        ends_at: now + 3_600_000,
        payment_window_minutes: 10,
        skus: [{ sku: 'SNEAKER', title: 'Sneaker', price: 12_999, stock: 5, limit_per_shopper: 1 }],
      },
      { authorization: 'Bearer dev-admin-token' },
    );
    expect(created.status).toBe(201);

    const anonymous = await call('POST', '/session');
    const login = await call(
      'POST',
      '/session/login',
      { user_id: 'shopper-1', sale_id: saleId },
      { authorization: `Bearer ${anonymous.json.token}` },
    );
    const auth = { authorization: `Bearer ${login.json.token}` };
    await call('POST', `/sales/${saleId}/events`, { type: 'product_view', sku: 'SNEAKER' }, auth);
    const admitted = await call('POST', `/sales/${saleId}/queue`, undefined, auth);
    expect(admitted.json.status).toBe('admitted');

    const purchase = await call(
      'POST',
      `/sales/${saleId}/purchase`,
      { sku: 'SNEAKER', ticket: admitted.json.ticket },
      { ...auth, 'idempotency-key': randomUUID() },
    );
    expect(purchase.status).toBe(202);
    const orderId = String(purchase.json.order_id);
    expect((await call('POST', `/orders/${orderId}/pay`, {}, auth)).json.status).toBe('paid');

    const pool = createPostgresPool({ max: 1 });
    try {
      const stored = await until('the order in the order store', async () => {
        const { rows } = await pool.query('SELECT status, sale_id, price_cents FROM orders WHERE order_id = $1', [orderId]);
        return rows[0]?.status === 'paid' ? rows[0] : undefined;
      });
      expect(stored).toEqual({ status: 'paid', sale_id: saleId, price_cents: '12999' });
    } finally {
      await pool.end();
    }

    // Ingest reports what it wrote, and the sale core serves its metrics and API document.
    const metrics = await (await fetch(`${ingestUrl}/metrics`)).text();
    expect(metrics).toMatch(/flashsale_ingest_rows_total\{[^}]*sink="order-store"[^}]*\} [1-9]/);
    const openapi = (await (await fetch(`${saleUrl}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(openapi.paths)).toContain('/sales/{saleId}/purchase');
  });

  it('stops on SIGTERM, taking its sale-core child with it', async () => {
    main.kill('SIGTERM');
    const code = await new Promise((r) => main.once('exit', r));
    expect(code).toBe(0);
    await until(
      'the sale core to stop',
      async () => ((await fetch(`${saleUrl}/healthz`).catch(() => undefined)) ? undefined : true),
      15_000,
    );
  });
});
