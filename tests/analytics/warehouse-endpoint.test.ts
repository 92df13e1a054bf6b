// The endpoint driven by @clickhouse/client itself, as every reader of the warehouse will drive it.
import { gunzipSync } from 'node:zlib';
import { type ClickHouseClient, ClickHouseError, createClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORDS, rawQuery, startTestEndpoint, type TestEndpoint } from './warehouse-endpoint-support.js';

let endpoint: TestEndpoint;
const clients: ClickHouseClient[] = [];

beforeAll(async () => {
  endpoint = await startTestEndpoint();
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await endpoint?.dispose();
});

async function queryLogRows(where: string, params: Record<string, unknown>) {
  // The log is written about once a second: poll until the row is there.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = await endpoint.test.warehouse.query<Record<string, string | number>>(
      `SELECT user_name, role, on_behalf_of, statement, status, error_code, result_rows, written_rows, format FROM warehouse_query_log WHERE ${where}`,
      params,
    );
    if (rows.length > 0 || Date.now() > deadline) return rows;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('the warehouse endpoint through @clickhouse/client', () => {
  it('answers ping', async () => {
    const result = await endpoint.client('analyst').ping();
    expect(result.success).toBe(true);
  });

  it('binds query_params of String, UInt64, DateTime64 and Array types in the engine', async () => {
    const result = await endpoint.client('analyst').query({
      query: `SELECT {shopper:String} AS shopper, {units:UInt64} AS units, {at:DateTime64(3, 'UTC')} AS at,
                     {skus:Array(String)} AS skus, toTypeName({units:UInt64}) AS units_type, length({skus:Array(String)}) AS n`,
      query_params: {
        shopper: "o'brien\\ \t'); DROP TABLE order_facts; --",
        units: '18446744073709551615',
        at: '2026-11-27 10:15:30.123',
        skus: ['sku-1', "sku-'2'", 'sku,3'],
      },
      format: 'JSONEachRow',
    });
    expect(await result.json()).toEqual([
      {
        shopper: "o'brien\\ \t'); DROP TABLE order_facts; --",
        units: '18446744073709551615',
        at: '2026-11-27 10:15:30.123',
        skus: ['sku-1', "sku-'2'", 'sku,3'],
        units_type: 'UInt64',
        n: '3',
      },
    ]);
    // The text above was bound, not run: the table is still there.
    expect(await endpoint.test.warehouse.query('EXISTS TABLE order_facts')).toEqual([{ result: 1 }]);
  });

  it('returns JSON with meta and rows to resultSet.json()', async () => {
    const result = await endpoint
      .client('analyst')
      .query({ query: 'SELECT number AS n, toString(number) AS s FROM numbers(3)', format: 'JSON' });
    const body = await result.json<{ n: string; s: string }>();
    expect(body.meta).toEqual([
      { name: 'n', type: 'UInt64' },
      { name: 's', type: 'String' },
    ]);
    expect(body.data).toEqual([
      { n: '0', s: '0' },
      { n: '1', s: '1' },
      { n: '2', s: '2' },
    ]);
    expect(body.rows).toBe(3);
  });

  it('streams a 1,000,000-row result with bounded memory', async () => {
    const client = endpoint.client('analyst');
    // ~330 bytes a row: about 330 MB of result, far more than the bound below if anything buffered it whole.
    const result = await client.query({
      query: "SELECT number AS n, repeat('x', 300) AS pad FROM numbers(1000000)",
      format: 'JSONCompactEachRow',
    });
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    let rows = 0;
    let lastN = -1;
    let ordered = true;
    for await (const batch of result.stream()) {
      for (const row of batch) {
        const [n] = row.json<[string, string]>();
        if (Number(n) !== lastN + 1) ordered = false;
        lastN = Number(n);
        rows++;
      }
      peak = Math.max(peak, process.memoryUsage().rss);
    }
    expect(rows).toBe(1_000_000);
    expect(ordered).toBe(true);
    // Engine, endpoint and client share this process: the engine's read-ahead (a few dozen 8,192-row
    // blocks), socket buffers and the client's parse garbage. Measured ~110 MiB for 1,000,000 rows and the
    // same for 2,500,000 (825 MB): bounded, not proportional. Buffering the 330 MB whole would break 160.
    expect((peak - before) / 2 ** 20).toBeLessThan(160);
  }, 180_000);

  it('runs exec and command', async () => {
    const exec = await endpoint.client('analyst').exec({ query: 'SELECT 40 + 2 FORMAT TabSeparated' });
    let text = '';
    for await (const chunk of exec.stream) text += chunk.toString();
    expect(text).toBe('42\n');
    const admin = endpoint.client('admin');
    await admin.command({ query: 'CREATE TABLE IF NOT EXISTS endpoint_scratch (id UInt32) ENGINE = MergeTree ORDER BY id' });
    await admin.command({ query: 'INSERT INTO endpoint_scratch VALUES (1), (2)' });
    expect(await endpoint.test.warehouse.query('SELECT count() AS n FROM endpoint_scratch')).toEqual([{ n: 2 }]);
  });

  it('refuses an insert from analyst and accepts one from offers into an offer table only', async () => {
    const row = {
      run_id: 'endpoint-run',
      step: 'started',
      from_sales: ['s1'],
      for_sale: 's2',
      holdout_share: 0.1,
      rules_digest: 'd',
      shoppers: 3,
    };
    const refused = await endpoint
      .client('analyst')
      .insert({ table: 'offer_runs', values: [row], format: 'JSONEachRow' })
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ClickHouseError);
    expect((refused as ClickHouseError).type).toBe('READONLY');
    expect(await endpoint.test.warehouse.query("SELECT count() AS n FROM offer_runs WHERE run_id = 'endpoint-run'")).toEqual([{ n: 0 }]);

    const offers = endpoint.client('offers');
    await offers.insert({ table: 'offer_runs', values: [row], format: 'JSONEachRow' });
    expect(await endpoint.test.warehouse.query("SELECT step, shoppers FROM offer_runs WHERE run_id = 'endpoint-run'")).toEqual([
      { step: 'started', shoppers: 3 },
    ]);

    const elsewhere = await offers
      .insert({ table: 'order_facts', values: [{ order_id: 'forged' }], format: 'JSONEachRow' })
      .catch((error: unknown) => error);
    expect((elsewhere as ClickHouseError).type).toBe('READONLY');
    expect(await endpoint.test.warehouse.query("SELECT count() AS n FROM order_facts WHERE order_id = 'forged'")).toEqual([{ n: 0 }]);
  });

  it('raises a typed ClickHouseError on a bad query', async () => {
    const error = await endpoint
      .client('analyst')
      .query({ query: 'SELECT no_such_column FROM clickstream_events' })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ClickHouseError);
    expect((error as ClickHouseError).code).toBe('47');
    expect((error as ClickHouseError).type).toBe('UNKNOWN_IDENTIFIER');
    const syntax = await endpoint
      .client('analyst')
      .query({ query: 'SELEC 1' })
      .catch((e: unknown) => e);
    expect((syntax as ClickHouseError).type).toBe('SYNTAX_ERROR');
  });

  it('compresses with gzip when asked, and not otherwise', async () => {
    const sql = 'SELECT number FROM numbers(100000) FORMAT TabSeparated';
    const expected = Array.from({ length: 100_000 }, (_, i) => `${i}\n`).join('');
    for (const response of [true, false]) {
      const client = createClient({ url: endpoint.url, username: 'analyst', password: PASSWORDS.analyst, compression: { response } });
      clients.push(client);
      const result = await client.query({ query: 'SELECT number FROM numbers(100000)', format: 'TabSeparated' });
      expect(await result.text()).toBe(expected);
    }
    const target = new URL(endpoint.url);
    target.searchParams.set('query', sql);
    target.searchParams.set('enable_http_compression', '1');
    const auth = { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': PASSWORDS.analyst };
    const gzipped = await import('node:http').then(
      (http) =>
        new Promise<{ encoding?: string; body: Buffer }>((resolve, reject) => {
          const request = http.request(target, { method: 'POST', headers: { ...auth, 'Accept-Encoding': 'gzip' } }, (response) => {
            const chunks: Buffer[] = [];
            response.on('data', (chunk: Buffer) => chunks.push(chunk));
            response.on('end', () => resolve({ encoding: response.headers['content-encoding'], body: Buffer.concat(chunks) }));
          });
          request.on('error', reject);
          request.end();
        }),
    );
    expect(gzipped.encoding).toBe('gzip');
    expect(gzipped.body.length).toBeLessThan(expected.length / 2);
    expect(gunzipSync(gzipped.body).toString()).toBe(expected);
    const plain = await rawQuery(endpoint.url, sql, {
      user: 'analyst',
      password: PASSWORDS.analyst,
      headers: { 'Accept-Encoding': 'gzip' },
    });
    expect(plain.headers.get('content-encoding')).toBeNull();
    expect(plain.text).toBe(expected);
  });

  it('sends the headers clients read, and the error shape they parse', async () => {
    const ok = await rawQuery(endpoint.url, 'SELECT 1 FORMAT JSONEachRow', {
      user: 'analyst',
      password: PASSWORDS.analyst,
      params: { query_id: 'q-headers' },
    });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('x-clickhouse-format')).toBe('JSONEachRow');
    expect(ok.headers.get('x-clickhouse-query-id')).toBe('q-headers');
    expect(ok.headers.get('x-clickhouse-timezone')).toMatch(/UTC/);
    expect(JSON.parse(ok.headers.get('x-clickhouse-summary')!)).toMatchObject({ result_rows: '1' });
    const bad = await rawQuery(endpoint.url, 'SELECT * FROM no_such_table', { user: 'analyst', password: PASSWORDS.analyst });
    expect(bad.status).toBe(404);
    expect(bad.headers.get('x-clickhouse-exception-code')).toBe('60');
    expect(bad.text).toMatch(/^Code: 60\. DB::Exception: .*\(UNKNOWN_TABLE\)/);
  });

  it('serves every listed format, streamed formats byte-equal to the engine answering whole', async () => {
    const sql =
      "SELECT number AS n, toString(number) AS s, [number, 1] AS a, toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + number AS t FROM numbers(200000)";
    const formats = [
      'JSON',
      'JSONEachRow',
      'JSONCompactEachRow',
      'JSONCompactEachRowWithNamesAndTypes',
      'CSVWithNames',
      'TabSeparatedWithNames',
      'RowBinaryWithNamesAndTypes',
      'Native',
      'Arrow',
      'ArrowStream',
      'Parquet',
    ];
    for (const format of formats) {
      const target = new URL(endpoint.url);
      target.searchParams.set('query', `${sql} FORMAT ${format}`);
      const response = await fetch(target, {
        method: 'POST',
        headers: { 'X-ClickHouse-User': 'analyst', 'X-ClickHouse-Key': PASSWORDS.analyst },
      });
      expect(response.status, format).toBe(200);
      expect(response.headers.get('x-clickhouse-format')).toBe(format);
      const served = Buffer.from(await response.arrayBuffer());
      const direct = Buffer.from(
        (
          await (
            endpoint.test.warehouse as unknown as {
              openEngineConnection(): Promise<{ run(sql: string, format: string): Promise<{ bytes: Uint8Array }>; close(): void }>;
            }
          )
            .openEngineConnection()
            .then(async (connection) => {
              try {
                // The endpoint's connections cut blocks at 8,192 rows; Native, Arrow and Parquet show block boundaries.
                await connection.run('SET output_format_json_quote_64bit_integers = 1, max_block_size = 8192', 'TSV');
                return await connection.run(sql, format);
              } finally {
                connection.close();
              }
            })
        ).bytes,
      );
      // JSON carries the elapsed time in its statistics; everything else must match to the byte.
      if (format === 'JSON') expect(JSON.parse(served.toString()).data).toEqual(JSON.parse(direct.toString()).data);
      else expect(served.equals(direct), format).toBe(true);
    }
  }, 180_000);

  it("leaves nothing of one query's parameters or settings on the connection the next query gets", async () => {
    const auth = { user: 'analyst', password: PASSWORDS.analyst };
    const first = await rawQuery(endpoint.url, 'SELECT {secret:String} AS v, toUInt64(1) AS n FORMAT JSONEachRow', {
      ...auth,
      params: { param_secret: 's3cr3t', output_format_json_quote_64bit_integers: '0' },
    });
    expect(first.text).toBe('{"v":"s3cr3t","n":1}\n');
    // Sequential queries take the pooled connection the first one gave back.
    for (let i = 0; i < 3; i++) {
      const next = await rawQuery(endpoint.url, 'SELECT {secret:String} AS v, toUInt64(1) AS n FORMAT JSONEachRow', auth);
      expect(next.text).not.toContain('s3cr3t');
      const quoted = await rawQuery(endpoint.url, 'SELECT toUInt64(1) AS n FORMAT JSONEachRow', auth);
      expect(quoted.text).toBe('{"n":"1"}\n');
    }
  });

  it('records who asked, on whose behalf, and what came back in the query log', async () => {
    // A service querying for a person names them in log_comment; it lifts no limit.
    const client = createClient({
      url: endpoint.url,
      username: 'analyst',
      password: PASSWORDS.analyst,
      clickhouse_settings: { log_comment: 'marketer:ana@shop.example' },
    });
    clients.push(client);
    await (await client.query({ query: 'SELECT number FROM numbers(7)', format: 'JSONEachRow', query_id: 'q-logged' })).json();
    const rows = await queryLogRows('query_id = {id:String}', { id: 'q-logged' });
    expect(rows).toEqual([
      {
        user_name: 'analyst',
        role: 'analyst',
        on_behalf_of: 'marketer:ana@shop.example',
        statement: 'select',
        status: 'ok',
        error_code: 0,
        result_rows: 7,
        written_rows: 0,
        format: 'JSONEachRow',
      },
    ]);
  });
});
