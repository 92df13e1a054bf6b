// The dashboards' refusals and the notebooks' server side, over real HTTP against a real PostgreSQL and
// a private warehouse behind the warehouse endpoint: no session, wrong role, no CSRF token, wrong
// password (limited per account and per address), notebook queries bound and refused by the endpoint; and
// every page's numbers over a small history whose numbers are known by hand.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertHistory, NEXT, SALE } from './history.js';
import {
  ADMIN,
  ANALYST,
  MARKETER,
  type PrivateWarehouse,
  startPrivateWarehouse,
  startTestDashboards,
  type TestDashboards,
  until,
  Visitor,
} from './support.js';

let warehouse: PrivateWarehouse;
let dashboards: TestDashboards;
const LIMITS = { failuresPerAccount: 3, failuresPerIp: 8, windowSeconds: 600 };

beforeAll(async () => {
  warehouse = await startPrivateWarehouse();
  await insertHistory(warehouse.warehouse);
  // No sale core here: the Sales page's calls are the browser test's.
  dashboards = await startTestDashboards({ reader: warehouse.reader, saleUrl: 'http://127.0.0.1:9', signin: LIMITS });
});

afterAll(async () => {
  await dashboards?.dispose();
  await warehouse?.close();
});

describe('without a session', () => {
  it('sends every page to the sign-in page and answers every API call 401', async () => {
    const stranger = new Visitor(dashboards.url);
    const page = await stranger.request('GET', '/');
    expect(page.status).toBe(302);
    expect(page.headers.get('location')).toBe('/signin?next=%2F');
    for (const path of [
      '/api/me',
      '/api/sale-list',
      '/api/funnel/any-sale',
      '/api/notebooks',
      '/api/admin/accounts',
      '/api/live/any-sale/stream',
    ]) {
      const answer = await stranger.request('GET', path);
      expect(answer.status, path).toBe(401);
      expect((answer.json.error as { code: string }).code, path).toBe('SIGNIN_REQUIRED');
    }
    const signinPage = await stranger.request('GET', '/signin');
    expect(signinPage.status).toBe(200);
    expect(signinPage.text).toContain('/assets/app.js');
  });

  it('serves pages with a content security policy and the other security headers', async () => {
    const answer = await new Visitor(dashboards.url).request('GET', '/signin');
    const csp = answer.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("object-src 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(answer.headers.get('x-content-type-options')).toBe('nosniff');
    expect(answer.headers.get('x-frame-options')).toBe('SAMEORIGIN');
  });
});

describe('signed in', () => {
  const marketer = () => new Visitor(dashboards.url);

  it('sets an HttpOnly, SameSite=Strict session cookie that opens the app', async () => {
    const visitor = new Visitor(dashboards.url);
    await visitor.request('GET', '/api/csrf');
    const res = await fetch(`${dashboards.url}/api/signin`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-csrf-token': visitor.csrf ?? '',
        cookie: `flashsale_dashboards=${visitor.cookieHeader()}`,
      },
      body: JSON.stringify(MARKETER),
    });
    // Without the token of that very session the sign-in itself is refused.
    expect(res.status).toBe(403);
    const answer = await visitor.signIn(MARKETER.email, MARKETER.password);
    expect(answer.status).toBe(200);
    const cookie = answer.headers.getSetCookie().find((line) => line.startsWith('flashsale_dashboards='))!;
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Strict/i);
    expect(cookie).toMatch(/Path=\//);
    expect((await visitor.request('GET', '/')).status).toBe(200);
    expect((await visitor.request('GET', '/api/me')).json.account).toMatchObject({ email: MARKETER.email, role: 'marketer' });
  });

  it('refuses a state-changing request without the CSRF token (403) and changes nothing', async () => {
    const analyst = new Visitor(dashboards.url);
    expect((await analyst.signIn(ANALYST.email, ANALYST.password)).status).toBe(200);
    const body = { title: 'forged', cells: [], params: {} };
    const forged = await analyst.request('POST', '/api/notebooks', body);
    expect(forged.status).toBe(403);
    expect((forged.json.error as { code: string }).code).toBe('CSRF_INVALID');
    const wrongToken = await analyst.request('POST', '/api/notebooks', body, { 'x-csrf-token': 'not-the-token' });
    expect(wrongToken.status).toBe(403);
    expect((await analyst.request('GET', '/api/notebooks')).json.notebooks).toEqual([]);
    // The same request with the token goes through.
    expect((await analyst.send('POST', '/api/notebooks', body)).status).toBe(201);
    expect((await analyst.request('GET', '/api/notebooks')).json.notebooks).toHaveLength(1);
  });

  it('refuses a marketer an admin action (403) and the notebooks, and lets the admin in', async () => {
    const m = marketer();
    await m.signIn(MARKETER.email, MARKETER.password);
    const attempt = await m.send('POST', '/api/admin/accounts', {
      email: 'new@test.local',
      name: 'New',
      role: 'admin',
      password: 'long-enough-password',
    });
    expect(attempt.status).toBe(403);
    expect((attempt.json.error as { code: string }).code).toBe('ROLE_REQUIRED');
    expect((await m.request('GET', '/api/admin/accounts')).status).toBe(403);
    expect((await m.send('POST', '/api/notebooks/run', { sql: 'SELECT 1', params: {} })).status).toBe(403);

    const admin = new Visitor(dashboards.url);
    await admin.signIn(ADMIN.email, ADMIN.password);
    const created = await admin.send('POST', '/api/admin/accounts', {
      email: 'new@test.local',
      name: 'New',
      role: 'marketer',
      password: 'long-enough-password',
    });
    expect(created.status).toBe(201);
    const accounts = (await admin.request('GET', '/api/admin/accounts')).json.accounts as { email: string }[];
    expect(accounts.map((a) => a.email)).toEqual(expect.arrayContaining([ADMIN.email, MARKETER.email, ANALYST.email, 'new@test.local']));
    expect(accounts.some((a) => a.email === 'new@test.local' && JSON.stringify(a).includes('hash'))).toBe(false);
  });
});

describe('SQL notebooks through the warehouse endpoint', () => {
  let analyst: Visitor;
  beforeAll(async () => {
    analyst = new Visitor(dashboards.url);
    await analyst.signIn(ANALYST.email, ANALYST.password);
  });

  it('runs a cell with bound parameters and keeps it in the history', async () => {
    const answer = await analyst.send('POST', '/api/notebooks/run', {
      sql: 'SELECT number * {factor:UInt32} AS n, {label:String} AS label FROM numbers(3)',
      params: { factor: '7', label: "it's <b>bold</b>" },
    });
    expect(answer.status).toBe(200);
    expect(answer.json.columns).toEqual([
      { name: 'n', type: 'UInt64' },
      { name: 'label', type: 'String' },
    ]);
    expect(answer.json.rows).toEqual([0, 7, 14].map((n) => ({ n: String(n), label: "it's <b>bold</b>" })));
    const history = (await analyst.request('GET', '/api/notebooks/history')).json.history as {
      sql: string;
      row_count: number;
      error: string | null;
    }[];
    expect(history[0]).toMatchObject({ row_count: 3, error: null });
    expect(history[0]!.sql).toContain('{factor:UInt32}');
    // The endpoint's own log names the person the query ran for (log_comment), under the analyst user.
    const logged = await until('the endpoint to log the query', async () => {
      const rows = await warehouse.warehouse.query<{ user_name: string; on_behalf_of: string }>(
        "SELECT user_name, on_behalf_of FROM warehouse_query_log WHERE query LIKE '%{factor:UInt32}%' LIMIT 1",
      );
      return rows[0];
    });
    expect(logged).toEqual({ user_name: 'analyst', on_behalf_of: `dashboards:${ANALYST.email}` });
  });

  it('never splices a parameter: a value that is SQL stays a value', async () => {
    const answer = await analyst.send('POST', '/api/notebooks/run', {
      sql: 'SELECT {label:String} AS label',
      params: { label: "x'; DROP TABLE order_facts; --" },
    });
    expect(answer.status).toBe(200);
    expect(answer.json.rows).toEqual([{ label: "x'; DROP TABLE order_facts; --" }]);
    const typed = await analyst.send('POST', '/api/notebooks/run', { sql: 'SELECT {n:UInt8} AS n', params: { n: '1 OR 1=1' } });
    expect(typed.status).toBe(400);
    expect((typed.json.error as { code: string }).code).toBe('WAREHOUSE_REFUSED');
  });

  it("shows the endpoint's refusal of a write query, and nothing is written", async () => {
    const before = await warehouse.warehouse.query<{ n: string }>('SELECT count() AS n FROM order_facts');
    const answer = await analyst.send('POST', '/api/notebooks/run', {
      sql: "INSERT INTO order_facts (event_id, type, status, ts, order_id, sale_id, anon_id, session_id) VALUES (generateUUIDv4(), 'order_paid', 'paid', now64(3), 'o', 's', 'a', 'x')",
      params: {},
    });
    expect(answer.status).toBe(400);
    const error = answer.json.error as { code: string; message: string };
    expect(error.code).toBe('WAREHOUSE_REFUSED');
    expect(error.message).toMatch(/readonly|read-only|not allowed|Cannot execute/i);
    expect(await warehouse.warehouse.query<{ n: string }>('SELECT count() AS n FROM order_facts')).toEqual(before);
    const history = (await analyst.request('GET', '/api/notebooks/history')).json.history as { error: string | null }[];
    expect(history[0]!.error).toBe(error.message);
  });

  it('lists tables, columns and types with the descriptions from SCHEMA.md', async () => {
    const { tables } = (await analyst.request('GET', '/api/notebooks/schema')).json as {
      tables: { table: string; description: string | null; columns: { name: string; type: string; description: string | null }[] }[];
    };
    const clicks = tables.find((t) => t.table === 'clickstream_events')!;
    expect(clicks.description).toMatch(/What shoppers do during a sale/);
    expect(clicks.columns.find((c) => c.name === 'event_id')).toEqual({
      name: 'event_id',
      type: 'UUID',
      description: expect.stringMatching(/UUIDv7/),
    });
    expect(tables.map((t) => t.table)).toEqual(expect.arrayContaining(['order_facts', 'sales_velocity_per_second']));
  });

  it("keeps each analyst's notebooks to themselves", async () => {
    const mine = await analyst.send('POST', '/api/notebooks', {
      title: 'Mine',
      cells: [{ id: 'c1', sql: 'SELECT 1' }],
      params: { a: '1' },
    });
    expect(mine.status).toBe(201);
    const id = Number(mine.json.id);
    const saved = await analyst.send('PUT', `/api/notebooks/${id}`, {
      title: 'Mine, renamed',
      cells: [{ id: 'c1', sql: 'SELECT 2' }],
      params: {},
    });
    expect(saved.json).toMatchObject({ title: 'Mine, renamed', cells: [{ id: 'c1', sql: 'SELECT 2' }] });
    const admin = new Visitor(dashboards.url);
    await admin.signIn(ADMIN.email, ADMIN.password);
    expect((await admin.request('GET', `/api/notebooks/${id}`)).status).toBe(404);
    expect(((await admin.request('GET', '/api/notebooks')).json.notebooks as unknown[]).length).toBe(0);
    expect((await analyst.request('GET', `/api/notebooks/${id}`)).json.title).toBe('Mine, renamed');
  });
});

describe("the marketer pages' numbers", () => {
  let marketer: Visitor;
  beforeAll(async () => {
    marketer = new Visitor(dashboards.url);
    await marketer.signIn(MARKETER.email, MARKETER.password);
  });
  const get = async (path: string) => {
    const answer = await marketer.request('GET', path);
    expect(answer.status, `${path}: ${answer.text}`).toBe(200);
    // biome-ignore lint/suspicious/noExplicitAny: JSON answers, read field by field and checked by the assertions
    return answer.json as Record<string, any>;
  };

  it('lists the sales the warehouse has seen', async () => {
    expect((await get('/api/sale-list')).sales.map((s: { sale_id: string }) => s.sale_id)).toEqual([NEXT, SALE]);
  });

  it('answers the funnel per stage and by channel', async () => {
    const funnel = await get(`/api/funnel/${SALE}?by=channel`);
    expect(Object.fromEntries(funnel.overall.map((r: { stage: string; shoppers: number }) => [r.stage, r.shoppers]))).toEqual({
      page_view: 10,
      product_view: 10,
      add_to_cart: 8,
      queue_joined: 5,
      admitted: 5,
      purchase_attempt: 5,
      reserved: 4,
      paid: 3,
    });
    // u2 and u9 came by app: u2 paid, u9 only looked.
    expect(funnel.breakdown.find((r: { key: string }) => r.key === 'app')).toMatchObject({ page_view: 2, add_to_cart: 1, paid: 1 });
    expect(funnel.breakdown.find((r: { key: string }) => r.key === 'web')).toMatchObject({ page_view: 8, paid: 2 });
    expect((await marketer.request('GET', `/api/funnel/${SALE}?by=weather`)).status).toBe(400);
    // No offer was carried and no offer run segmented anyone: one group each, the whole funnel.
    expect((await get(`/api/funnel/${SALE}?by=offer`)).breakdown).toEqual([
      {
        key: 'none',
        page_view: 10,
        product_view: 10,
        add_to_cart: 8,
        queue_joined: 5,
        admitted: 5,
        purchase_attempt: 5,
        reserved: 4,
        paid: 3,
      },
    ]);
    expect((await get(`/api/funnel/${SALE}?by=segment`)).breakdown.map((r: { key: string }) => r.key)).toEqual(['unsegmented']);
    expect((await get(`/api/funnel/${SALE}?by=device`)).breakdown).toMatchObject([{ key: 'desktop', page_view: 10, paid: 3 }]);
  });

  it('answers the shoppers page: new shoppers and who missed out', async () => {
    const shoppers = await get(`/api/shoppers/${SALE}`);
    expect(shoppers.new_vs_returning).toEqual([{ kind: 'new', shoppers: 10 }]);
    expect(shoppers.missed_out.map((m: { shopper_id: string }) => m.shopper_id)).toEqual(['u5', 'u6', 'u7', 'u8']);
    expect(shoppers.missed_out_summary).toEqual([{ reason: 'queued past the last unit', shoppers: 4 }]);
    expect(shoppers.repeat_buyers).toEqual([]);
  });

  it('answers the offers page: uplift against the hold-out with an interval and a small-sample warning', async () => {
    const offers = await get(`/api/offers/${NEXT}`);
    const [rule] = offers.uplift;
    expect(rule).toMatchObject({ rule_id: 'missed-out-discount', offered: 3, holdout: 1, holdout_conversion: 0 });
    expect(rule.difference).toBeCloseTo(2 / 3, 6);
    const se = Math.sqrt(((2 / 3) * (1 / 3)) / 3);
    expect(rule.ci_low).toBeCloseTo(2 / 3 - 1.96 * se, 6);
    expect(rule.ci_high).toBeCloseTo(2 / 3 + 1.96 * se, 6);
    expect(rule.warning).toMatch(/Too few shoppers/);
    expect(offers.offers).toHaveLength(4);
  });

  it('compares past sales', async () => {
    const { sales } = await get('/api/sales/compare');
    expect(sales.find((s: { sale_id: string }) => s.sale_id === SALE)).toMatchObject({
      orders_reserved: 4,
      orders_paid: 3,
      units_paid: 3,
      revenue_cents: 30_000,
    });
    expect(sales.find((s: { sale_id: string }) => s.sale_id === NEXT)).toMatchObject({ orders_paid: 2, revenue_cents: 20_000 });
  });

  it('pushes live snapshots over server-sent events', async () => {
    const res = await fetch(`${dashboards.url}/api/live/${SALE}/stream`, {
      headers: { cookie: `flashsale_dashboards=${marketer.cookieHeader()}` },
    });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = res.body!.getReader();
    let text = '';
    while (!/event: snapshot\ndata: .*\n\n/.test(text)) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    const snapshot = JSON.parse(/event: snapshot\ndata: (.*)\n\n/.exec(text)![1]!);
    expect(snapshot.totals).toMatchObject({ orders_reserved: 4, orders_paid: 3, orders_expired: 1, revenue_cents: 30_000 });
    expect(snapshot.rejections).toEqual(
      expect.arrayContaining([
        { reason: 'sold_out', rejections: 1 },
        { reason: 'sold_out (at the queue)', rejections: 3 },
      ]),
    );
    expect(snapshot.waiting_room).toMatchObject({ joined: 5, admitted: 5, refused: 3 });
  });
});

// Last: these fill the failure counters of this file's one client address.
describe('failed sign-ins', () => {
  it('answers a wrong password 401, and after the per-account limit 429 even for the right one', async () => {
    const visitor = new Visitor(dashboards.url);
    for (let i = 0; i < LIMITS.failuresPerAccount; i++) {
      const wrong = await visitor.signIn(ANALYST.email, 'not-the-password');
      expect(wrong.status).toBe(401);
      expect((wrong.json.error as { code: string }).code).toBe('SIGNIN_FAILED');
    }
    const limited = await visitor.signIn(ANALYST.email, ANALYST.password);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe(String(LIMITS.windowSeconds));
    // Another account from the same address still signs in (below the address's limit).
    expect((await visitor.signIn(MARKETER.email, MARKETER.password)).status).toBe(200);
  });

  it('limits failures per client address across accounts', async () => {
    const visitor = new Visitor(dashboards.url);
    // The address has LIMITS.failuresPerAccount failures from the test before.
    let answers = 0;
    for (let i = 0; answers < LIMITS.failuresPerIp - LIMITS.failuresPerAccount; i++, answers++) {
      expect((await visitor.signIn(`nobody-${i}@test.local`, 'guess')).status).toBe(401);
    }
    const limited = await visitor.signIn(ADMIN.email, ADMIN.password);
    expect(limited.status).toBe(429);
    expect((limited.json.error as { code: string }).code).toBe('SIGNIN_LIMITED');
  });
});
