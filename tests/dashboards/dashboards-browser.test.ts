// The dashboards in headless Chromium (Debian's, never a downloaded browser) against the whole pipeline
// in this process: sale-core on its own topics → Kafka → ingest → a private chdb warehouse → the warehouse
// endpoint → the dashboards. The shopper simulator runs a sale while the live page is open; then every
// page is opened and checked against numbers from the sale core and the warehouse, a CSV is downloaded,
// a sale is created from the Sales page, and an analyst runs notebook cells. Screenshots of every page
// and the measured load times go to tests/artifacts/ (git-ignored).
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWarehouseReader } from '../../analytics/reader.js';
import { runShopperJourneys } from '../../bench/shopper-simulator.js';
import { createKafka } from '../../common/kafka.js';
import { createRedis } from '../../common/redis.js';
import { BUILD_DIR } from '../../dashboards/build.js';
import { offerJobsFromAnalytics } from '../../dashboards/offer-jobs.js';
import { type Ingest, startIngest } from '../../ingest/index.js';
import { OPEN_LIMITS, ADMIN as SALE_ADMIN_TOKEN, startTestSaleCore, type TestSaleCore } from '../sale-core/support.js';
import { createTestTopic, deleteTopics } from '../support/kafka.js';
import {
  ANALYST,
  MARKETER,
  OFFERS_PASSWORD,
  type PrivateWarehouse,
  startPrivateWarehouse,
  startTestDashboards,
  type TestDashboards,
  until,
} from './support.js';

const ARTIFACTS = join(import.meta.dirname, '..', 'artifacts');
const CHROMIUM = '/usr/bin/chromium';

let kafka: Kafka;
let topics: { clickstream: string; orders: string; deadLetters: string };
let warehouse: PrivateWarehouse;
let ingest: Ingest;
let sale: TestSaleCore;
let dashboards: TestDashboards;
let offersReader: ClickHouseClient;
let redis: Redis;
let browser: Browser;
let userDataDir: string;
let simulation: Promise<Awaited<ReturnType<typeof runShopperJourneys>>>;
const metrics: Record<string, unknown> = {};
const cspViolations: string[] = [];
const screenshots: string[] = [];

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  kafka = createKafka('dashboards-browser-test');
  const [clickstream, orders, deadLetters] = await Promise.all([
    createTestTopic('clickstream.v1', 3, kafka),
    createTestTopic('orders.v1', 3, kafka),
    createTestTopic('dlq.v1', 1, kafka),
  ]);
  topics = { clickstream, orders, deadLetters };
  warehouse = await startPrivateWarehouse();
  const run = randomUUID().slice(0, 8);
  ingest = await startIngest({
    warehouse: warehouse.warehouse,
    kafka,
    topics,
    groupIds: { warehouse: `dashboards-warehouse-${run}`, orderStore: `dashboards-orders-${run}` },
    limits: { lingerMs: 50, maxRows: 2000 },
  });
  sale = await startTestSaleCore({ kafka, topics: { orders, clickstream }, settings: { ...OPEN_LIMITS, clickstreamLingerMs: 20 } });
  // Offer jobs run from the Offers page as the warehouse's `offers` role, writing offers to Redis.
  offersReader = createWarehouseReader({ url: warehouse.url, username: 'offers', password: OFFERS_PASSWORD });
  redis = createRedis();
  dashboards = await startTestDashboards({
    reader: warehouse.reader,
    saleUrl: sale.url,
    saleAdminToken: SALE_ADMIN_TOKEN,
    offerJobs: offerJobsFromAnalytics({ reader: offersReader, redis }),
  });
  userDataDir = mkdtempSync(join(tmpdir(), 'dashboards-chromium-'));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    // Playwright starts Chromium on a fresh temporary --user-data-dir of its own (it refuses the flag
    // here); TMPDIR points it into this test's folder, removed afterwards.
    env: { ...process.env, TMPDIR: userDataDir },
  });
}, 180_000);

afterAll(async () => {
  writeFileSync(join(ARTIFACTS, 'dashboards-metrics.json'), `${JSON.stringify({ ...metrics, screenshots }, null, 2)}\n`);
  await browser?.close();
  await simulation?.catch(() => {});
  await dashboards?.dispose();
  await offersReader?.close();
  redis?.disconnect();
  await sale?.close();
  await ingest?.close();
  await warehouse?.close();
  await deleteTopics(Object.values(topics ?? {}), kafka).catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
}, 60_000);

async function signedInPage(email: string, password: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => {
    throw error;
  });
  // The strict CSP (no inline script or style) must not break anything the pages do.
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
  });
  await page.goto(`${dashboards.url}/`);
  // No session: the app sends the browser to the sign-in page.
  expect(new URL(page.url()).pathname).toBe('/signin');
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', password);
  await page.click('[data-action=sign-in]');
  await page.waitForSelector('nav [data-nav=live]');
  return { context, page };
}

async function screenshot(page: Page, name: string): Promise<void> {
  const file = `dashboards-${name}.png`;
  await page.screenshot({ path: join(ARTIFACTS, file), fullPage: true });
  screenshots.push(file);
}

/** Opens a page from the navigation and returns how long until `ready` showed (ms). */
async function openPage(page: Page, nav: string, ready: string): Promise<number> {
  const started = Date.now();
  await page.click(`[data-nav=${nav}]`);
  await page.waitForSelector(ready, { timeout: 30_000 }).catch(async (error: Error) => {
    await screenshot(page, `failed-${nav}`);
    throw error;
  });
  return Date.now() - started;
}

const statValue = async (page: Page, id: string) =>
  Number(((await page.textContent(`[data-stat=${id}] .value`)) ?? '').replace(/[^0-9.]/g, ''));

describe('the dashboards in a browser, during and after a real sale', () => {
  let marketer: Page;
  let saleId: string;

  it('shows the live sale moving while the shopper simulator runs it', async () => {
    ({ page: marketer } = await signedInPage(MARKETER.email, MARKETER.password));
    const nav = await marketer.evaluate(() => {
      const [entry] = performance.getEntriesByType('navigation') as PerformanceNavigationTiming[];
      return { domContentLoaded: entry?.domContentLoadedEventEnd, load: entry?.loadEventEnd };
    });
    metrics.appLoadMs = nav;

    simulation = runShopperJourneys({
      url: sale.url,
      adminToken: SALE_ADMIN_TOKEN,
      shoppers: 160,
      stock: 40,
      botShare: 0.1,
      // The payment window is at least a minute: everybody pays within it (a lapse would keep the
      // waiting shoppers polling for a minute), so the sale is over in well under one.
      latePayShare: 0,
      neverPayShare: 0,
      arrivalSpreadMs: 6000,
      paymentWindowMinutes: 1,
      // Four shoppers admitted a second: the 40 units sell over ten seconds or more, not in one burst
      // before the page has opened, so the page has a climb to show.
      admissionRate: 4,
    });
    // The warehouse learns of the sale from its first events; the page then watches it.
    const failed = simulation.then(() => new Promise<never>(() => {}));
    saleId = await Promise.race([
      failed,
      until(
        'the sale in the warehouse',
        async () => {
          const list = await marketer.evaluate(
            async () => (await (await fetch('/api/sale-list')).json()) as { sales: { sale_id: string }[] },
          );
          return list.sales[0]?.sale_id;
        },
        60_000,
      ),
    ]);
    sale.sales.add(saleId);
    await marketer.goto(`${dashboards.url}/#/live?sale=${saleId}`);
    await marketer.waitForSelector('[data-stat=orders-reserved]');
    // It moves: the orders counter climbs over successive pushes while shoppers buy.
    const seen = new Set<number>();
    await until(
      'the live page to show orders climbing',
      async () => {
        seen.add(await statValue(marketer, 'orders-reserved'));
        return seen.size >= 3 && Math.max(...seen) > 0 ? true : undefined;
      },
      60_000,
      { everyMs: 250 },
    );
    await screenshot(marketer, 'live-during-sale');

    const outcome = await simulation;
    metrics.simulation = outcome;
    const ledger = (await (
      await fetch(`${sale.url}/admin/sales/${saleId}`, { headers: { authorization: `Bearer ${SALE_ADMIN_TOKEN}` } })
    ).json()) as {
      ledger: { sold: Record<string, number>; initial: Record<string, number> };
    };
    const sold = Object.values(ledger.ledger.sold).reduce((a, b) => a + b, 0);
    expect(sold).toBeGreaterThan(0);
    // The page settles on the sale core's own count of paid units (one unit per order here).
    await until(
      'the live page to show every paid order',
      async () => ((await statValue(marketer, 'orders-paid')) === sold ? true : undefined),
      60_000,
    );

    // Update latency in the browser: from the newest event of a push to the moment the page rendered it.
    const updates = await marketer.evaluate(() => window.__liveUpdates ?? []);
    const intervals = updates.slice(1).map((u, i) => u.rendered - updates[i]!.rendered);
    // Only pushes that brought new orders: for those, the newest event is the purchase the page just showed.
    const behind = updates
      .filter((u, i) => i > 0 && u.lastEventAt && u.ordersReserved > updates[i - 1]!.ordersReserved)
      .map((u) => u.rendered - u.lastEventAt!);
    const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
    metrics.liveUpdates = {
      pushes: updates.length,
      medianIntervalMs: sorted(intervals)[Math.floor(intervals.length / 2)],
      eventToScreenMs: {
        pushes: behind.length,
        min: sorted(behind)[0],
        median: sorted(behind)[Math.floor(behind.length / 2)],
        max: sorted(behind).at(-1),
      },
    };
    expect(updates.length).toBeGreaterThan(3);

    // Units left per SKU: the chart's CSV carries the sale core's numbers.
    const download = marketer.waitForEvent('download');
    await marketer.click('[data-csv=units-left]');
    const file = await (await download).path();
    const csv = readFileSync(file, 'utf8').trim().split('\n');
    expect(csv[0]).toBe('sku,available,reserved,sold,initial');
    const [sku, available, reserved, soldCsv, initial] = csv[1]!.split(',');
    expect(sku).toBe('SKU-1');
    expect(Number(initial)).toBe(ledger.ledger.initial['SKU-1']);
    expect(Number(soldCsv)).toBe(ledger.ledger.sold['SKU-1']);
    expect(Number(available) + Number(reserved) + Number(soldCsv)).toBe(40);
    await screenshot(marketer, 'live');
  }, 180_000);

  it('opens every marketer page with real numbers from that sale', async () => {
    const loads: Record<string, number> = {};
    loads.funnel = await openPage(marketer, 'funnel', '[data-table=funnel-table] tbody tr');
    const firstStage = await marketer.textContent('[data-table=funnel-table] tbody tr:first-child');
    const [pageViews] = await warehouse.warehouse.query<{ n: string }>(
      `SELECT toString(uniqExact(anon_id)) AS n FROM clickstream_events WHERE sale_id = {sale:String} AND type = 'page_view'`,
      { sale: saleId },
    );
    expect(firstStage).toContain('page_view');
    expect(firstStage).toContain(String(Number(pageViews!.n)));
    await screenshot(marketer, 'funnel');

    loads.shoppers = await openPage(marketer, 'shoppers', '[data-chart=new-vs-returning] canvas');
    const people = await marketer.evaluate(
      async (id) => (await (await fetch(`/api/shoppers/${id}`)).json()) as { new_vs_returning: { kind: string; shoppers: number }[] },
      saleId,
    );
    // A first sale in a fresh warehouse: every shopper is new.
    expect(people.new_vs_returning.map((r) => r.kind)).toEqual(['new']);
    expect(people.new_vs_returning[0]!.shoppers).toBeGreaterThanOrEqual(Number(pageViews!.n));
    await screenshot(marketer, 'shoppers');

    loads.offers = await openPage(marketer, 'offers', '[data-table=uplift-table]');
    await screenshot(marketer, 'offers');

    loads.sales = await openPage(marketer, 'sales', `[data-table=compare] tbody tr`);
    const row = await marketer.textContent('[data-table=compare] tbody tr:first-child');
    const [paid] = await warehouse.warehouse.query<{ n: string }>(
      `SELECT toString(uniqExact(order_id)) AS n FROM order_facts WHERE sale_id = {sale:String} AND status = 'paid'`,
      { sale: saleId },
    );
    expect(row).toContain(saleId);
    expect(row).toContain(String(Number(paid!.n)));
    await screenshot(marketer, 'sales');
    metrics.pageOpenMs = loads;
  }, 120_000);

  let followUp: string;

  it('creates a sale with its follow-up from the Sales page, through the sale core', async () => {
    const id = `dash-${randomUUID().slice(0, 8)}`;
    followUp = `${id}-next`;
    sale.sales.add(id).add(followUp);
    await marketer.fill('[data-form=create-sale] input[name=id]', id);
    await marketer.fill('[data-form=create-sale] input[name=title]', 'Spring drop');
    await marketer.fill('[data-form=create-sale] input[name=stock]', '25');
    await marketer.fill('[data-form=create-sale] input[name=f_id]', followUp);
    await marketer.fill('[data-form=create-sale] input[name=f_title]', 'Spring drop, second chance');
    await marketer.click('[data-action=create-sale]');
    await marketer.waitForSelector(`[data-created^="${id}"]`);
    const read = async (saleId: string) =>
      (await fetch(`${sale.url}/admin/sales/${saleId}`, { headers: { authorization: `Bearer ${SALE_ADMIN_TOKEN}` } })).json() as Promise<{
        title: string;
        ledger: { initial: Record<string, number> };
      }>;
    expect(await read(id)).toMatchObject({ title: 'Spring drop', ledger: { initial: { 'SKU-1': 25 } } });
    expect(await read(followUp)).toMatchObject({ title: 'Spring drop, second chance' });
    await marketer.waitForSelector(`[data-table=sales] tr[data-sale="${id}"]`);
    expect(await marketer.textContent(`[data-table=sales] tr[data-sale="${id}"]`)).toContain(followUp);
    // End it from the page: the sale core says ended.
    await marketer.click(`[data-end="${id}"]`);
    await until('the sale to end', async () =>
      (await marketer.textContent(`tr[data-sale="${id}"]`))?.includes('ended') ? true : undefined,
    );
    expect(
      (
        (await (await fetch(`${sale.url}/admin/sales/${id}`, { headers: { authorization: `Bearer ${SALE_ADMIN_TOKEN}` } })).json()) as {
          status: string;
        }
      ).status,
    ).toBe('ended');
    await screenshot(marketer, 'sales-created');
  }, 60_000);

  it('runs an offer job from the Offers page, shows its progress, then who got what', async () => {
    await marketer.goto(`${dashboards.url}/#/offers?sale=${saleId}`);
    await marketer.waitForSelector('[data-table=rules] tbody tr');
    await marketer.fill('[data-form=offer-run] input[name=from]', saleId);
    await marketer.fill('[data-form=offer-run] input[name=for]', followUp);
    await marketer.click('[data-form=offer-run] button[type=submit]');
    await marketer.waitForSelector('[data-job-step=done]', { timeout: 60_000 });
    const [made] = await warehouse.warehouse.query<{ n: string }>(
      'SELECT toString(count()) AS n FROM offers FINAL WHERE sale_id = {sale:String}',
      {
        sale: followUp,
      },
    );
    expect(Number(made!.n)).toBeGreaterThan(0);
    await marketer.goto(`${dashboards.url}/#/offers?sale=${followUp}`);
    // The page keeps the previous sale's table until the new one loads: wait for this sale's rows to show.
    const shown = Math.min(100, Number(made!.n));
    const rowsShown = () => marketer.$$eval('[data-table=offers-given] tbody tr', (rows) => rows.length);
    await until('the offers of the follow-up sale to show', async () => ((await rowsShown()) === shown ? true : undefined), 30_000);
    expect(await rowsShown()).toBe(shown);
    expect(await marketer.textContent('[data-table=runs] tbody')).toContain(followUp);
    await screenshot(marketer, 'offers-after-run');
  }, 90_000);

  it('lets an analyst run notebook cells: rows, a refused write, and markup shown as text', async () => {
    const { page } = await signedInPage(ANALYST.email, ANALYST.password);
    metrics.notebooksOpenMs = await openPage(page, 'notebooks', '[data-action=new-notebook]');
    await page.waitForSelector('[data-list=schema] summary');
    await page.click('[data-action=new-notebook]');
    await page.fill(
      '[data-sql="0"]',
      'SELECT sale_id, count() AS events FROM clickstream_events WHERE sale_id = {sale:String} GROUP BY sale_id',
    );
    await page.fill('[data-param=sale]', saleId);
    await page.click('[data-run="0"]');
    await page.waitForSelector('[data-table=result-0] tbody tr');
    const [events] = await warehouse.warehouse.query<{ n: string }>(
      'SELECT toString(count()) AS n FROM clickstream_events WHERE sale_id = {sale:String}',
      {
        sale: saleId,
      },
    );
    expect(await page.textContent('[data-table=result-0] tbody tr')).toBe(`${saleId}${Number(events!.n)}`);

    await page.click('[data-action=add-cell]');
    await page.fill('[data-sql="1"]', 'CREATE TABLE sneaky (x UInt8) ENGINE = Memory');
    await page.click('[data-run="1"]');
    const refusal = await (await page.waitForSelector('[data-cell-error="1"]')).textContent();
    expect(refusal).toMatch(/readonly|read-only|not allowed|Cannot execute/i);
    const [tables] = await warehouse.warehouse.query<{ n: string }>(
      "SELECT toString(count()) AS n FROM system.tables WHERE name = 'sneaky'",
    );
    expect(tables!.n).toBe('0');

    await page.click('[data-action=add-cell]');
    const markup = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>';
    await page.fill('[data-sql="2"]', `SELECT '${markup}' AS html`);
    await page.click('[data-run="2"]');
    const cell = await page.waitForSelector('[data-table=result-2] tbody td');
    expect(await cell.textContent()).toBe(markup);
    expect(await page.$$eval('[data-result="2"] img, [data-result="2"] script, [data-result="2"] b', (found) => found.length)).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();

    await page.click('[data-action=save]');
    await page.waitForSelector('[data-action=save]:disabled');
    await page.waitForSelector('[data-list=history] li.failed');
    await screenshot(page, 'notebooks');
  }, 90_000);

  it('reports the bundle size', () => {
    const js = readFileSync(join(BUILD_DIR, 'app.js'));
    const css = readFileSync(join(BUILD_DIR, 'app.css'));
    metrics.bundle = {
      jsBytes: statSync(join(BUILD_DIR, 'app.js')).size,
      jsGzipBytes: gzipSync(js).length,
      cssBytes: css.length,
      cssGzipBytes: gzipSync(css).length,
    };
    expect(js.length).toBeGreaterThan(10_000);
    expect(cspViolations).toEqual([]);
    expect(screenshots).toEqual(
      expect.arrayContaining([
        'dashboards-live.png',
        'dashboards-funnel.png',
        'dashboards-shoppers.png',
        'dashboards-offers.png',
        'dashboards-sales.png',
        'dashboards-notebooks.png',
      ]),
    );
  });
});
