// The endpoint from Python's clickhouse-connect (the data scientists' and Jupyter's client), from the
// stack's virtual environment: query, query_df with parameters and query_arrow, each equal to what chdb
// answers directly for the same SQL.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORDS, startTestEndpoint, type TestEndpoint } from './warehouse-endpoint-support.js';

const python = join(process.env.STACK_DIR ?? join(import.meta.dirname, '..', '..', '.stack'), 'venv', 'bin', 'python');

const SCRIPT = `
import json, os, sys
import clickhouse_connect
url = os.environ['ENDPOINT_URL']
host, port = url.split('//')[1].split(':')
client = clickhouse_connect.get_client(host=host, port=int(port), username='analyst', password=os.environ['ENDPOINT_PASSWORD'], database='flashsale')
by_sale = os.environ['BY_SALE_SQL']
per_order = os.environ['PER_ORDER_SQL']
params = {'sale': 'sale-py', 'min_qty': 2}
out = {}
out['query'] = [list(row) for row in client.query(by_sale, parameters=params).result_rows]
df = client.query_df(per_order, parameters=params)
out['df_columns'] = list(df.columns)
out['df'] = json.loads(df.to_json(orient='records'))
table = client.query_arrow(per_order, parameters=params)
out['arrow_schema'] = [f.name for f in table.schema]
out['arrow'] = table.to_pylist()
try:
    client.command('DROP TABLE order_facts')
    out['drop'] = 'accepted'
except Exception as error:
    out['drop'] = type(error).__name__ + ': ' + str(error)[:300]
print(json.dumps(out))
`;

const BY_SALE_SQL = `SELECT sale_id, count() AS orders, sum(amount_cents) AS cents FROM order_facts
  WHERE sale_id = {sale:String} AND qty >= {min_qty:UInt16} GROUP BY sale_id`;
const PER_ORDER_SQL = `SELECT order_id, sku, qty, amount_cents, toString(ts) AS at FROM order_facts
  WHERE sale_id = {sale:String} AND qty >= {min_qty:UInt16} ORDER BY order_id`;

let endpoint: TestEndpoint;

beforeAll(async () => {
  endpoint = await startTestEndpoint();
  await endpoint.test.warehouse.command(
    `INSERT INTO order_facts (event_id, type, status, ts, order_id, sale_id, anon_id, shopper_id, session_id, sku, channel, device,
                              price_cents, qty, amount_cents, kafka_partition, kafka_offset)
     SELECT generateUUIDv4(), 'order_paid', 'paid', toDateTime64('2026-11-27 10:00:00', 3, 'UTC') + number, concat('o', leftPad(toString(number), 3, '0')),
            if(number % 3 = 0, 'sale-other', 'sale-py'), 'anon', 'anon', 's', concat('sku-', toString(number % 4)), 'web', 'desktop',
            1999, 1 + number % 3, 1999 * (1 + number % 3), 0, number
     FROM numbers(60)`,
  );
});
afterAll(async () => endpoint?.dispose());

describe('clickhouse-connect against the endpoint', () => {
  it('has the stack venv with clickhouse-connect', () => {
    expect(existsSync(python), `${python} (run stack/prepare.sh)`).toBe(true);
  });

  it('answers query, query_df and query_arrow with parameters as chdb does directly, and refuses DDL', async () => {
    // Asynchronously: the endpoint answering Python runs in this very process.
    const run = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        python,
        ['-c', SCRIPT],
        {
          env: { ...process.env, ENDPOINT_URL: endpoint.url, ENDPOINT_PASSWORD: PASSWORDS.analyst, BY_SALE_SQL, PER_ORDER_SQL },
          timeout: 60_000,
        },
        (error, stdout, stderr) => resolve({ status: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(run.status, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as {
      query: unknown[][];
      df_columns: string[];
      df: Record<string, unknown>[];
      arrow_schema: string[];
      arrow: Record<string, unknown>[];
      drop: string;
    };
    const params = { sale: 'sale-py', min_qty: 2 };
    const direct = await endpoint.test.warehouse.query<Record<string, unknown>>(BY_SALE_SQL, params);
    expect(direct).toHaveLength(1);
    expect(out.query).toEqual(direct.map((row) => [row.sale_id, Number(row.orders), Number(row.cents)]));

    const perOrder = (await endpoint.test.warehouse.query<Record<string, unknown>>(PER_ORDER_SQL, params)).map((row) => ({
      order_id: row.order_id,
      sku: row.sku,
      qty: Number(row.qty),
      amount_cents: Number(row.amount_cents),
      at: row.at,
    }));
    expect(perOrder.length).toBeGreaterThan(20);
    expect(out.df_columns).toEqual(['order_id', 'sku', 'qty', 'amount_cents', 'at']);
    expect(out.df).toEqual(perOrder);
    expect(out.arrow_schema).toEqual(['order_id', 'sku', 'qty', 'amount_cents', 'at']);
    // Arrow strings may come back as bytes-decoded str; compare values.
    expect(out.arrow.map((row) => ({ ...row, qty: Number(row.qty), amount_cents: Number(row.amount_cents) }))).toEqual(perOrder);
    expect(out.drop).toMatch(/READONLY|readonly/);
    expect(await endpoint.test.warehouse.query('EXISTS TABLE order_facts')).toEqual([{ result: 1 }]);
  });
});
