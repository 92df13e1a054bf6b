// Every shopper route refuses a flood with 429 RATE_LIMITED and Retry-After, per client address and per
// shopper, with the default limits: 300 rapid requests from one address (or by one shopper from many
// addresses) are refused once the limit is spent.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { config } from '../../common/config.js';
import { createSale, shopper, startTestSaleCore, type TestSaleCore } from './support.js';

let core: TestSaleCore;
let saleId: string;
const { addressRequestsPerMinute, shopperRequestsPerMinute, ipBurst } = config().sale;

beforeAll(async () => {
  // The limits as configured by default: no test overrides.
  core = await startTestSaleCore();
  saleId = await createSale(core, { stock: 5 });
});
afterAll(async () => {
  await core?.close();
});

type Route = { method: 'GET' | 'POST'; url: () => string; payload?: object; anonymous?: boolean };
const orderId = () => `${saleId}.${randomUUID()}`;
const routes: Record<string, Route> = {
  'POST /session': { method: 'POST', url: () => '/session', anonymous: true },
  'POST /session/login': { method: 'POST', url: () => '/session/login', payload: { user_id: 'flood-login' } },
  'GET /orders/:id': { method: 'GET', url: () => `/orders/${orderId()}` },
  'POST /orders/:id/pay': { method: 'POST', url: () => `/orders/${orderId()}/pay`, payload: {} },
  'POST /sales/:id/events': { method: 'POST', url: () => `/sales/${saleId}/events`, payload: { type: 'page_view', path: '/sale' } },
  'GET /sales/:id/catalog': { method: 'GET', url: () => `/sales/${saleId}/catalog`, anonymous: true },
  'GET /sales/:id/stock': { method: 'GET', url: () => `/sales/${saleId}/stock`, anonymous: true },
};

/** Fires 300 requests one after another; returns the index of the first 429 and that answer. */
async function flood(route: Route, token: (i: number) => string | null, address: (i: number) => string) {
  let first: { index: number; status: number; code: string; retryAfter: number } | null = null;
  for (let i = 0; i < 300; i++) {
    const bearer = token(i);
    const res = await core.app.inject({
      method: route.method,
      url: route.url(),
      headers: bearer ? { authorization: `Bearer ${bearer}` } : {},
      remoteAddress: address(i),
      ...(route.payload ? { payload: route.payload } : {}),
    });
    if (res.statusCode === 429 && first === null) {
      first = { index: i, status: res.statusCode, code: res.json().error.code, retryAfter: Number(res.headers['retry-after']) };
    }
  }
  return first;
}

describe('rate limits', () => {
  it('the default limits refuse a 300-request flood', () => {
    expect(addressRequestsPerMinute).toBeLessThan(300);
    expect(shopperRequestsPerMinute).toBeLessThan(300);
  });

  it.each(Object.keys(routes))('%s: 300 rapid requests from one address are refused after the limit', async (name) => {
    const route = routes[name]!;
    const address = `10.7.${Object.keys(routes).indexOf(name)}.1`;
    // A different shopper each time, so only the address is counted.
    const first = await flood(
      route,
      (i) => (route.anonymous ? null : shopper(`flood-${name}-${i}`).token),
      () => address,
    );
    expect(first, 'no request was refused').not.toBeNull();
    // Payment also takes from the shared per-address bucket in Redis, whose burst may be spent first.
    expect(first!.index).toBeGreaterThanOrEqual(name === 'POST /orders/:id/pay' ? ipBurst : addressRequestsPerMinute);
    expect(first!.code).toBe('RATE_LIMITED');
    expect(first!.retryAfter).toBeGreaterThanOrEqual(1);
    expect(first!.retryAfter).toBeLessThanOrEqual(60);
  });

  it('IPv6 addresses count by their /64: cycling through one block of addresses buys nothing', async () => {
    const first = await flood(
      routes['GET /sales/:id/catalog']!,
      () => null,
      (i) => `2001:db8:77:1:${i.toString(16)}::${(i * 7).toString(16)}`,
    );
    expect(first, 'no request was refused').not.toBeNull();
    expect(first!.index).toBe(addressRequestsPerMinute);
    expect(first!.code).toBe('RATE_LIMITED');
  });

  it.each(['POST /session/login', 'GET /orders/:id', 'POST /sales/:id/events', 'POST /orders/:id/pay'])(
    '%s: 300 rapid requests by one shopper from many addresses are refused after the limit',
    async (name) => {
      const who = shopper(`flood-one-${randomUUID()}`);
      const first = await flood(
        routes[name]!,
        () => who.token,
        (i) => `10.8.${i >> 8}.${i & 255}`,
      );
      expect(first, 'no request was refused').not.toBeNull();
      expect(first!.index).toBeGreaterThanOrEqual(name === 'POST /orders/:id/pay' ? config().sale.shopperBurst : shopperRequestsPerMinute);
      expect(first!.code).toBe('RATE_LIMITED');
      expect(first!.retryAfter).toBeGreaterThanOrEqual(1);
    },
  );
});
