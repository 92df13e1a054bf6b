// The events the insights are written against (analytics/SCHEMA.md): the attempt stamped when the request
// arrived, offer_id wherever the shopper has an offer, a queue join refused as sold out recorded, and one
// rejection vocabulary. Read back from the test's own Kafka topics.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PURCHASE_REFUSALS, QUEUE_REFUSALS, rejectReason, type SaleErrorCode } from '../../sale-core/errors.js';
import { writeOffer } from '../../sale-core/offers.js';
import {
  ADMIN,
  createSale,
  OPEN_LIMITS,
  purchase,
  readTopic,
  type Shopper,
  shopper,
  startTestSaleCore,
  type TestSaleCore,
  ticketFor,
} from './support.js';

const SCHEMA_MD = readFileSync(join(import.meta.dirname, '..', '..', 'analytics', 'SCHEMA.md'), 'utf8');

/** The reasons SCHEMA.md lists in its "Rejection reasons" paragraph. */
function documentedReasons(): Set<string> {
  const paragraph = SCHEMA_MD.split('Rejection reasons (`reject_reason`)')[1]?.split('\n\n')[0] ?? '';
  const listed = paragraph.split(':').slice(1).join(':').split('. A ')[0] ?? '';
  return new Set([...listed.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!));
}

let core: TestSaleCore;
beforeAll(async () => {
  core = await startTestSaleCore({ settings: OPEN_LIMITS });
});
afterAll(async () => {
  await core?.close();
});

const auth = (who: Shopper) => ({ authorization: `Bearer ${who.token}` });
const join_ = (saleId: string, who: Shopper) => core.app.inject({ method: 'POST', url: `/sales/${saleId}/queue`, headers: auth(who) });
type Event = Record<string, unknown>;

async function clickstreamOf(saleIds: string[], expected: number): Promise<Event[]> {
  const all = (await readTopic(core.topics.clickstream, { expected })).map((e) => e.value);
  return all.filter((e) => saleIds.includes(String(e.sale_id)));
}

describe('rejection vocabulary', () => {
  it('maps every code a purchase or the queue refuses with to a documented lower-snake-case reason', () => {
    const documented = documentedReasons();
    expect(documented.size).toBeGreaterThanOrEqual(10);
    for (const code of new Set<SaleErrorCode>([...PURCHASE_REFUSALS, ...QUEUE_REFUSALS])) {
      const reason = rejectReason(code);
      expect(reason).toMatch(/^[a-z][a-z_]*$/);
      expect(reason.startsWith('sale_')).toBe(false);
      expect([code, documented.has(reason)]).toEqual([code, true]);
    }
    expect(rejectReason('SALE_SOLD_OUT')).toBe('sold_out');
    expect(rejectReason('IDEMPOTENCY_KEY_CONFLICT')).toBe('idempotency_key_conflict');
  });
});

describe('clickstream events', () => {
  it('stamps the attempt on arrival and carries the offer on catalog, queue, admission, attempt and rejection', async () => {
    const saleId = await createSale(core, { stock: 1, price: 5000 });
    const loyal = shopper(`${saleId}-loyal`);
    await writeOffer(core.context.redis, saleId, loyal.userId, {
      offer_id: 'offer-7',
      kind: 'price',
      sku: null,
      price: 4000,
      early_access_ms: null,
    });
    expect((await core.app.inject({ method: 'GET', url: `/sales/${saleId}/catalog`, headers: auth(loyal) })).json().offer.offer_id).toBe(
      'offer-7',
    );
    const admitted = (await join_(saleId, loyal)).json();
    expect(admitted.status).toBe('admitted');
    const order = await purchase(core, saleId, loyal, { ticket: admitted.ticket });
    expect(order.statusCode).toBe(202);
    // A second unit is over the shopper's limit: a rejection that knows the offer.
    const again = await purchase(core, saleId, loyal);
    expect(again.json().error.code).toBe('SALE_LIMIT_REACHED');
    // A shopper without an offer joins after the last unit went: refused as sold out (not final: unpaid).
    const late = shopper(`${saleId}-late`);
    const refused = await join_(saleId, late);
    expect([refused.statusCode, refused.json().error.code]).toEqual([409, 'SALE_SOLD_OUT']);

    expect(await core.context.relay.drained(10_000)).toBe(true);
    const orders = (await readTopic(core.topics.orders, { expected: 1 })).map((e) => e.value).filter((e) => e.sale_id === saleId);
    const reserved = orders.find((e) => e.type === 'order_reserved')!;
    expect(reserved.offer_id).toBe('offer-7');
    const events = await clickstreamOf([saleId], 7);
    const of = (type: string, who: Shopper) => events.filter((e) => e.type === type && e.user_id === who.userId);

    const shown = of('page_view', loyal);
    expect(shown.map((e) => [e.path, e.offer_id])).toEqual([[`/sales/${saleId}/catalog`, 'offer-7']]);
    expect(of('queue_joined', loyal).map((e) => e.offer_id)).toEqual(['offer-7']);
    expect(of('admitted', loyal).map((e) => e.offer_id)).toEqual(['offer-7']);
    const attempts = of('purchase_attempt', loyal).sort((a, b) => Number(a.ts) - Number(b.ts));
    expect(attempts.map((e) => e.offer_id)).toEqual(['offer-7', 'offer-7']);
    // Stamped when the request arrived, before the reservation it led to.
    expect(Number(attempts[0]!.ts)).toBeLessThanOrEqual(Number(reserved.ts));
    expect(of('purchase_rejected', loyal).map((e) => [e.reason, e.offer_id])).toEqual([['limit_reached', 'offer-7']]);
    // No offer, no offer_id; the refused join is an event of its own.
    expect(of('queue_refused', late).map((e) => [e.reason, e.offer_id ?? null])).toEqual([['sold_out', null]]);
  });

  it('records a join refused early (more shoppers ahead than units) with the place the shopper got', async () => {
    const saleId = await createSale(core, { stock: 1, admissionRate: 0.05, admissionBurst: 1, startsInMs: -10 });
    const [first, second, third] = ['a', 'b', 'c'].map((u) => shopper(`${saleId}-${u}`)) as [Shopper, Shopper, Shopper];
    expect((await join_(saleId, first)).json().status).toBe('admitted');
    expect((await join_(saleId, second)).json()).toMatchObject({ status: 'waiting', position: 2, ahead: 0 });
    const outnumbered = await join_(saleId, third);
    expect([outnumbered.statusCode, outnumbered.json().error.code]).toEqual([409, 'SALE_SOLD_OUT']);
    expect(Number(outnumbered.headers['retry-after'])).toBeGreaterThanOrEqual(1);

    const events = await clickstreamOf([saleId], 4);
    expect(events.filter((e) => e.type === 'queue_refused').map((e) => [e.user_id, e.reason, e.position])).toEqual([
      [third.userId, 'sold_out', 3],
    ]);
    // The shopper kept the place: joined and refused.
    expect(events.filter((e) => e.type === 'queue_joined').map((e) => e.user_id)).toContain(third.userId);
  });

  it('publishes each refusal of a purchase with its reason in the vocabulary', async () => {
    const saleId = await createSale(core, { stock: 1, limit: 2 });
    const ended = await createSale(core, { stock: 1 });
    await core.app.inject({ method: 'POST', url: `/admin/sales/${ended}/end`, headers: { authorization: `Bearer ${ADMIN}` } });
    const buyer = shopper(`${saleId}-buyer`);
    const other = shopper(`${saleId}-other`);
    const key = randomUUID();
    const answers = [
      await purchase(core, saleId, buyer, { sku: 'NOPE' }), // SKU_NOT_FOUND
      await purchase(core, saleId, buyer, { ticket: ticketFor(saleId, other.userId) }), // TICKET_INVALID: another shopper's
      await purchase(core, saleId, buyer, { qty: 2 }), // SALE_FEWER_LEFT
      await purchase(core, ended, buyer), // SALE_NOT_LIVE
      await purchase(core, saleId, buyer, { key }), // reserved
      await purchase(core, saleId, buyer, { key, qty: 2 }), // IDEMPOTENCY_KEY_CONFLICT
      await purchase(core, saleId, other), // SALE_SOLD_OUT
    ];
    const codes = answers.filter((a) => a.statusCode !== 202).map((a) => a.json().error.code as SaleErrorCode);
    expect(codes).toEqual([
      'SKU_NOT_FOUND',
      'TICKET_INVALID',
      'SALE_FEWER_LEFT',
      'SALE_NOT_LIVE',
      'IDEMPOTENCY_KEY_CONFLICT',
      'SALE_SOLD_OUT',
    ]);

    const documented = documentedReasons();
    const events = await clickstreamOf([saleId, ended], 14);
    const rejections = events.filter((e) => e.type === 'purchase_rejected').sort((a, b) => Number(a.ts) - Number(b.ts));
    expect(rejections.map((e) => e.reason)).toEqual(codes.map(rejectReason));
    for (const e of rejections) expect(documented.has(String(e.reason))).toBe(true);
  });
});
