// Every refusal of the endpoint, each followed by the same two checks: nothing was written (tables, rows
// and files as before) and the endpoint still answers.
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ClickHouseClient, ClickHouseError, ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORDS, rawQuery, startTestEndpoint, type TestEndpoint } from './warehouse-endpoint-support.js';

let endpoint: TestEndpoint;
let snapshot: unknown;
const outfile = join(tmpdir(), `endpoint-refusal-${process.pid}.tsv`);

async function tablesAndRows() {
  // Everything but the endpoint's own query log, which records the refusals themselves.
  return endpoint.test.warehouse.query(
    `SELECT name, engine, total_rows FROM system.tables
     WHERE database = currentDatabase() AND name != 'warehouse_query_log' ORDER BY name`,
  );
}

async function expectNothingWrittenAndHealthy() {
  expect(await tablesAndRows()).toEqual(snapshot);
  expect(existsSync(outfile)).toBe(false);
  const result = await endpoint.client('analyst').query({ query: 'SELECT 1 AS ok', format: 'JSONEachRow' });
  expect(await result.json()).toEqual([{ ok: 1 }]);
}

async function refusal(action: Promise<unknown>): Promise<ClickHouseError> {
  const error = await action.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ClickHouseError);
  return error as ClickHouseError;
}

beforeAll(async () => {
  endpoint = await startTestEndpoint({ maxResultRows: 1000, maxExecutionSeconds: 2, concurrentPerUser: 1, maxMemoryBytes: 64 << 20 });
  await endpoint.test.warehouse.command(
    `INSERT INTO offer_runs (run_id, step, from_sales, for_sale, holdout_share, rules_digest, shoppers) VALUES ('r0', 'done', ['s'], 't', 0.1, 'd', 1)`,
  );
  snapshot = await tablesAndRows();
  rmSync(outfile, { force: true });
});
afterAll(async () => {
  rmSync(outfile, { force: true });
  await endpoint?.dispose();
});

describe('the endpoint refuses, writes nothing and stays healthy', () => {
  const statements: Array<{ what: string; role: 'analyst' | 'offers'; sql: string; type: string }> = [
    { what: 'a write (INSERT … VALUES)', role: 'analyst', sql: "INSERT INTO offer_runs (run_id) VALUES ('forged')", type: 'READONLY' },
    {
      what: 'a write (INSERT … SELECT)',
      role: 'analyst',
      sql: 'INSERT INTO offer_runs (run_id) SELECT toString(number) FROM numbers(3)',
      type: 'READONLY',
    },
    { what: 'a mutation (ALTER … DELETE)', role: 'analyst', sql: 'ALTER TABLE offer_runs DELETE WHERE 1', type: 'READONLY' },
    { what: 'DDL (CREATE TABLE)', role: 'analyst', sql: 'CREATE TABLE sneaky (x UInt8) ENGINE = Memory', type: 'READONLY' },
    { what: 'DDL (DROP TABLE)', role: 'analyst', sql: 'DROP TABLE offer_runs', type: 'READONLY' },
    { what: 'DDL from offers (TRUNCATE)', role: 'offers', sql: 'TRUNCATE TABLE offer_runs', type: 'READONLY' },
    { what: 'SYSTEM', role: 'analyst', sql: 'SYSTEM DROP MARK CACHE', type: 'READONLY' },
    { what: 'a second statement after ;', role: 'analyst', sql: 'SELECT 1; DROP TABLE offer_runs', type: 'SYNTAX_ERROR' },
    { what: 'the file() table function', role: 'analyst', sql: "SELECT * FROM file('/etc/passwd', 'LineAsString')", type: 'ACCESS_DENIED' },
    {
      what: 'the url() table function',
      role: 'analyst',
      sql: "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
      type: 'ACCESS_DENIED',
    },
    { what: 'the s3() table function', role: 'offers', sql: "SELECT * FROM s3('http://127.0.0.1:9/b/k.csv')", type: 'ACCESS_DENIED' },
    { what: 'the remote() table function', role: 'analyst', sql: "SELECT * FROM remote('127.0.0.1:9', system.one)", type: 'ACCESS_DENIED' },
    {
      what: 'INSERT INTO FUNCTION file()',
      role: 'offers',
      sql: `INSERT INTO FUNCTION file('${outfile}', 'TSV', 'x UInt8') VALUES (1)`,
      type: 'READONLY',
    },
    { what: 'INTO OUTFILE', role: 'analyst', sql: `SELECT 1 INTO OUTFILE '${outfile}'`, type: 'ACCESS_DENIED' },
    { what: 'SETTINGS readonly = 0', role: 'analyst', sql: 'SELECT count() FROM offer_runs SETTINGS readonly = 0', type: 'READONLY' },
    {
      what: 'SETTINGS raising a limit',
      role: 'analyst',
      sql: 'SELECT number FROM numbers(5000) SETTINGS max_result_rows = 0',
      type: 'READONLY',
    },
    { what: 'SET readonly = 0', role: 'analyst', sql: 'SET readonly = 0', type: 'READONLY' },
  ];
  for (const { what, role, sql, type } of statements) {
    it(`refuses ${what} from ${role}`, async () => {
      const error = await refusal(endpoint.client(role).command({ query: sql }));
      expect(error.type).toBe(type);
      await expectNothingWrittenAndHealthy();
    });
  }

  it('refuses raising a limit, or the read-only mode, by URL', async () => {
    for (const settings of [
      { max_result_rows: '0' },
      { max_execution_time: '3600' },
      { readonly: '0' },
      { result_overflow_mode: 'break' },
    ]) {
      const error = await refusal(
        endpoint
          .client('analyst')
          .query({ query: 'SELECT number FROM numbers(5000)', format: 'JSONEachRow', clickhouse_settings: settings as never }),
      );
      expect(error.type).toBe('READONLY');
    }
    await expectNothingWrittenAndHealthy();
  });

  it('refuses a wrong password (403) and no credentials (401)', async () => {
    const wrong: ClickHouseClient = createClient({
      url: endpoint.url,
      username: 'analyst',
      password: 'not-the-password',
      log: { level: ClickHouseLogLevel.OFF },
    });
    const error = await refusal(wrong.query({ query: 'SELECT 1' }));
    await wrong.close();
    expect(error.type).toBe('AUTHENTICATION_FAILED');
    const unknownUser = await rawQuery(endpoint.url, 'SELECT 1', { user: 'mallory', password: PASSWORDS.admin });
    expect(unknownUser.status).toBe(403);
    const anonymous = await rawQuery(endpoint.url, 'SELECT 1');
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('x-clickhouse-exception-code')).toBe('194');
    expect(anonymous.text).toMatch(/^Code: 194\. DB::Exception: .*\(REQUIRED_PASSWORD\)/);
    await expectNothingWrittenAndHealthy();
  });

  it('stops a query at the row limit', async () => {
    const error = await refusal(endpoint.client('analyst').query({ query: 'SELECT number FROM numbers(5000)', format: 'JSONEachRow' }));
    expect(error.type).toBe('TOO_MANY_ROWS_OR_BYTES');
    await expectNothingWrittenAndHealthy();
  });

  it('stops a query at the time limit', async () => {
    const error = await refusal(
      endpoint
        .client('analyst')
        .query({ query: 'SELECT count() FROM numbers(100000000000) WHERE NOT ignore(sipHash64(number))', format: 'JSONEachRow' }),
    );
    expect(error.type).toBe('TIMEOUT_EXCEEDED');
    await expectNothingWrittenAndHealthy();
  });

  it('stops a query at the memory limit', async () => {
    const error = await refusal(
      endpoint.client('analyst').query({ query: 'SELECT length(groupArray(number)) FROM numbers(50000000)', format: 'JSONEachRow' }),
    );
    expect(error.type).toBe('MEMORY_LIMIT_EXCEEDED');
    await expectNothingWrittenAndHealthy();
  });

  it('answers 429 over the per-user concurrency cap', async () => {
    const slow = endpoint.client('analyst').query({ query: 'SELECT sleep(1.5) AS slept', format: 'JSONEachRow' });
    const deadline = Date.now() + 5_000;
    while (endpoint.activeQueries('analyst') < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(endpoint.activeQueries('analyst')).toBe(1);
    const over = await rawQuery(endpoint.url, 'SELECT 1', { user: 'analyst', password: PASSWORDS.analyst });
    expect(over.status).toBe(429);
    expect(over.text).toMatch(/\(TOO_MANY_SIMULTANEOUS_QUERIES\)/);
    // Another user is not held back by analyst's cap.
    const other = await rawQuery(endpoint.url, 'SELECT 2', { user: 'offers', password: PASSWORDS.offers });
    expect(other.text).toBe('2\n');
    expect(await (await slow).json()).toEqual([{ slept: 0 }]);
    await expectNothingWrittenAndHealthy();
  });
});
