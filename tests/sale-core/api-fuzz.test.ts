// Property-based fuzzing of the whole sale API from its own OpenAPI document: schemathesis (the stack's
// Python environment) generates valid and invalid requests for every operation, with a shopper's session
// token and the admin token, and runs all its checks on every answer (no 5xx, only documented statuses,
// bodies and headers as documented, invalid input refused, valid input not refused, 405 with Allow for
// undeclared methods, authentication not ignored, …). Bounded: a fixed number of examples per operation
// and a time budget, so the run stays under two minutes.
//
// Three expectations are widened, each for a reason the server cannot change:
// - invalid data may also be refused with 413 (a body beyond the limit its schema needs, for example
//   more SKUs than maxItems) or 414 (a path parameter beyond the router's limit): both are documented,
//   coded refusals, just not on schemathesis's default list;
// - a sale definition that the schema accepts may still be refused with 400 SALE_INVALID, for the rules
//   JSON Schema cannot state across fields (ends_at after starts_at, at most 366 days ahead, at most 31
//   days long, each SKU once).
// - a payment with {"outcome": "decline"} is the simulated provider declining it: 402 PAYMENT_DECLINED is
//   the right answer to that valid request.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { config } from '../../common/config.js';
import { ADMIN, boundTicketFor, createSale, OPEN_LIMITS, purchase, shopper, startTestSaleCore, type TestSaleCore } from './support.js';

const SCHEMATHESIS = join(config().stack.dataDir, 'venv', 'bin', 'schemathesis');
const MAX_EXAMPLES = 15;
const MAX_SECONDS = 75;
// Fixed so a failure can be replayed; FUZZ_SEED explores other inputs.
const SEED = process.env.FUZZ_SEED ?? '20261201';

const NEGATIVE_REJECTED = ['400', '401', '403', '404', '405', '406', '409', '413', '414', '415', '422', '428', '429', '5xx'];
const POSITIVE_ACCEPTED = ['2xx', '3xx', '401', '403', '404', '409', '429', '5xx'];

let core: TestSaleCore;
let work: string;
let saleId: string;
let adminSaleId: string;
let orderId: string;
const buyer = shopper(`fuzz-${randomUUID().slice(0, 8)}`);

beforeAll(async () => {
  // No relay or sweeper: every sale the fuzzer creates stays in this test's active set, so all are removed after.
  core = await startTestSaleCore({ settings: OPEN_LIMITS, background: false });
  saleId = await createSale(core, { stock: 1000, limit: 100 });
  adminSaleId = await createSale(core, { stock: 10 });
  const bought = await purchase(core, saleId, buyer, { ticket: boundTicketFor(saleId, buyer) });
  if (bought.statusCode !== 202) throw new Error(`fixture purchase: ${bought.statusCode} ${bought.body}`);
  orderId = bought.json().order_id;
  work = await mkdtemp(join(tmpdir(), 'api-fuzz-'));
});

afterAll(async () => {
  if (core) {
    for (const id of await core.context.redis.smembers(core.activeSalesKey).catch(() => [] as string[])) core.sales.add(id);
    await core.close();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

function schemathesisConfig(): string {
  const list = (values: string[]) => `[${values.map((v) => JSON.stringify(v)).join(', ')}]`;
  return `
[auth.openapi.ShopperSession]
bearer = "\${FUZZ_SESSION_TOKEN}"

[auth.openapi.AdminToken]
bearer = "\${FUZZ_ADMIN_TOKEN}"

# Half of the generated ids name things that exist, so the runs reach past "not found".
[dictionaries.sales]
values = [${JSON.stringify(saleId)}]

[dictionaries.orders]
values = [${JSON.stringify(orderId)}]

[dictionaries.adminSales]
values = [${JSON.stringify(adminSaleId)}]

[parameters]
"path.saleId" = { dictionary = "sales", probability = 0.5 }
"path.orderId" = { dictionary = "orders", probability = 0.5 }

[checks.negative_data_rejection]
expected-statuses = ${list(NEGATIVE_REJECTED)}

# The admin routes end and read a sale of their own, so the shoppers' sale stays live.
[[operations]]
include-path-regex = "^/admin/"
parameters = { "path.saleId" = { dictionary = "adminSales", probability = 0.5 } }

[[operations]]
include-name = "POST /admin/sales"
checks = { positive_data_acceptance = { expected-statuses = ${list([...POSITIVE_ACCEPTED, '400'])} } }

[[operations]]
include-name = "POST /orders/{orderId}/pay"
checks = { positive_data_acceptance = { expected-statuses = ${list([...POSITIVE_ACCEPTED, '402'])} } }
`;
}

function runSchemathesis(args: string[], env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(SCHEMATHESIS, args, {
      cwd: work,
      env: { ...process.env, ...env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    // A hard stop well past the run's own budget, so a hung run fails the test instead of the suite.
    const stop = setTimeout(() => child.kill('SIGKILL'), (MAX_SECONDS + 60) * 1000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(stop);
      resolve({ code, output });
    });
  });
}

describe('the sale API under property-based fuzzing', () => {
  it('passes every schemathesis check', { timeout: (MAX_SECONDS + 90) * 1000 }, async () => {
    expect(existsSync(SCHEMATHESIS), `${SCHEMATHESIS} (run stack/prepare.sh)`).toBe(true);
    const configFile = join(work, 'schemathesis.toml');
    await writeFile(configFile, schemathesisConfig());
    const { code, output } = await runSchemathesis(
      [
        '--config-file',
        configFile,
        '--no-color',
        'run',
        `${core.url}/openapi.json`,
        '--checks',
        'all',
        '--max-examples',
        String(MAX_EXAMPLES),
        '--max-time',
        String(MAX_SECONDS),
        '--seed',
        SEED,
        '--workers',
        '1',
        '--request-timeout',
        '15',
        '--generation-database',
        'none',
      ],
      { FUZZ_SESSION_TOKEN: buyer.token, FUZZ_ADMIN_TOKEN: ADMIN },
    );
    const failures = output.slice(Math.max(0, output.indexOf('=== FAILURES') - 1)).slice(0, 20_000);
    expect(code, failures || output.slice(-5000)).toBe(0);
    // It did test every operation of the document, with requests generated by the hundred.
    const doc = (await core.app.inject({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, object> };
    const operations = Object.values(doc.paths).reduce((n, methods) => n + Object.keys(methods).length, 0);
    expect(output).toContain(`Tested: ${operations}`);
    const generated = Number(/(\d+) generated/.exec(output)?.[1] ?? 0);
    expect(generated).toBeGreaterThan(500);
  });
});
