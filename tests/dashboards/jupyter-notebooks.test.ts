// The Jupyter notebooks in analytics/notebooks run top to bottom (nbclient, in the stack's Python) against
// the warehouse endpoint over a private chdb folder holding a small synthetic history, and print the
// numbers this test computed from that history by hand.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertHistory, NEXT, SALE } from './history.js';
import { ANALYST_PASSWORD, type PrivateWarehouse, startPrivateWarehouse } from './support.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..', '..');
const NOTEBOOKS = join(ROOT, 'analytics', 'notebooks');
const ARTIFACTS = join(ROOT, 'tests', 'artifacts');
const PYTHON = join(process.env.STACK_DIR ?? join(ROOT, '.stack'), 'venv', 'bin', 'python');

let warehouse: PrivateWarehouse;

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  warehouse = await startPrivateWarehouse();
  await insertHistory(warehouse.warehouse);
}, 120_000);

afterAll(async () => {
  await warehouse?.close();
});

/** Executes one notebook with nbclient and returns its SUMMARY line (the notebook's own output). */
async function execute(notebook: string, env: Record<string, string>): Promise<Record<string, unknown>> {
  const script = [
    'import sys, nbformat',
    'from nbclient import NotebookClient',
    'nb = nbformat.read(sys.argv[1], as_version=4)',
    "NotebookClient(nb, timeout=120, kernel_name='python3', resources={'metadata': {'path': sys.argv[3]}}).execute()",
    'nbformat.write(nb, sys.argv[2])',
    "print('\\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.get('name') == 'stdout'))",
    "print('images', sum(1 for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'image/png' in o.get('data', {})))",
  ].join('\n');
  const out = join(ARTIFACTS, notebook.replace('.ipynb', '.executed.ipynb'));
  const { stdout } = await run(PYTHON, ['-c', script, join(NOTEBOOKS, notebook), out, NOTEBOOKS], {
    env: {
      ...process.env,
      WAREHOUSE_HTTP_URL: warehouse.url,
      WAREHOUSE_USER: 'analyst',
      WAREHOUSE_ANALYST_PASSWORD: ANALYST_PASSWORD,
      MPLBACKEND: 'module://matplotlib_inline.backend_inline',
      ...env,
    },
    timeout: 180_000,
    maxBuffer: 16 << 20,
  });
  const summary = stdout.split('\n').find((line) => line.startsWith('SUMMARY '));
  expect(summary, stdout).toBeDefined();
  // Every notebook draws its chart (an image output) as it runs.
  expect(Number(/images (\d+)/.exec(stdout)?.[1])).toBeGreaterThanOrEqual(1);
  return JSON.parse(summary!.slice('SUMMARY '.length));
}

describe('the Jupyter notebooks', () => {
  it('finds the stack Python with nbclient', () => {
    expect(existsSync(PYTHON), `${PYTHON} (made by stack/prepare.sh)`).toBe(true);
  });

  it('funnel: shoppers per step of the sale', async () => {
    const summary = await execute('funnel.ipynb', { SALE_ID: SALE });
    expect(summary).toEqual({
      notebook: 'funnel',
      sale: SALE,
      steps: { page_view: 10, product_view: 10, add_to_cart: 8, queue_joined: 5, admitted: 5, purchase_attempt: 5, reserved: 4, paid: 3 },
    });
  }, 200_000);

  it('missed-out shoppers: refused for stock, nothing reserved', async () => {
    const summary = await execute('missed-out-shoppers.ipynb', { SALE_ID: SALE });
    expect(summary).toEqual({ notebook: 'missed-out', sale: SALE, missed_out: 4, units_reserved: 4, shoppers: ['u5', 'u6', 'u7', 'u8'] });
  }, 200_000);

  it('offer uplift: offered vs hold-out conversion with an interval', async () => {
    const summary = await execute('offer-uplift.ipynb', {});
    const rule = (summary.rules as Record<string, Record<string, number>>)['missed-out-discount']!;
    expect(summary.sale).toBe(NEXT);
    expect(rule).toMatchObject({ offered: 3, holdout: 1, holdout_conversion: 0 });
    expect(rule.offered_conversion).toBeCloseTo(2 / 3, 5);
    expect(rule.uplift).toBeCloseTo(2 / 3, 5);
    // p = 2/3 over 3 offered, 0 over 1 held out: se = sqrt((2/3)(1/3)/3).
    const se = Math.sqrt(((2 / 3) * (1 / 3)) / 3);
    expect(rule.ci_low).toBeCloseTo(2 / 3 - 1.96 * se, 5);
    expect(rule.ci_high).toBeCloseTo(2 / 3 + 1.96 * se, 5);
    expect(readFileSync(join(ARTIFACTS, 'offer-uplift.executed.ipynb'), 'utf8')).toContain('image/png');
  }, 200_000);
});
