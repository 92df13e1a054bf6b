// What the replay protection rests on, checked on the real chdb: a batch re-inserted with the same
// source range is dropped by the raw table and by every rollup, even when its rows differ or span months.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FlashSaleEvent } from '../../common/events.js';
import type { SinkBatch } from '../../ingest/sink.js';
import { createWarehouseSink } from '../../ingest/warehouse-sink.js';
import { clickEvent, orderEvent, uniqueSale } from './support/events.js';
import { countOf, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

const batchOf = (topic: string, first: number, events: FlashSaleEvent[]): SinkBatch => ({
  topic,
  partition: 0,
  firstOffset: String(first),
  lastOffset: String(first + events.length - 1),
  events: events.map((event, i) => ({ event, partition: 0, offset: String(first + i) })),
  replay: false,
});

describe('warehouse sink deduplication', () => {
  let test: TestWarehouse;
  beforeAll(async () => {
    test = await openTestWarehouse();
  });
  afterAll(async () => test?.dispose());

  const counts = async (sale: string) => ({
    rows: await countOf(test.warehouse, 'SELECT count() AS n FROM clickstream_events WHERE sale_id = {sale:String}', { sale }),
    funnel: await countOf(test.warehouse, 'SELECT sum(events) AS n FROM funnel_stages_per_minute WHERE sale_id = {sale:String}', { sale }),
  });

  it('drops a re-inserted batch in the raw table and the rollups, even with other rows or months', async () => {
    const sale = uniqueSale('dedup');
    const sink = createWarehouseSink(test.warehouse);
    const november = Date.UTC(2026, 10, 30, 23, 59, 59);
    const december = Date.UTC(2026, 11, 1, 0, 0, 1);
    const events = [
      ...Array.from({ length: 50 }, (_, i) => clickEvent(sale, i, november)),
      ...Array.from({ length: 50 }, (_, i) => clickEvent(sale, 50 + i, december)),
    ];
    await sink.write(batchOf('clicks', 0, events));
    expect(await counts(sale)).toEqual({ rows: 100, funnel: 100 });

    await sink.write(batchOf('clicks', 0, events));
    // The same range decoded differently (say, after a contract change) is still the same batch.
    await sink.write({ ...batchOf('clicks', 0, events.slice(0, 60)), lastOffset: '99' });
    expect(await counts(sale)).toEqual({ rows: 100, funnel: 100 });

    // The next range is new data.
    await sink.write(batchOf('clicks', 100, [clickEvent(sale, 100, december)]));
    expect(await counts(sale)).toEqual({ rows: 101, funnel: 101 });
  });

  it('drops order events already stored, so a producer re-send reserves stock once', async () => {
    const sale = uniqueSale('dedup-orders');
    const sink = createWarehouseSink(test.warehouse);
    const reserved = orderEvent(sale, `order-${sale}`, 'reserved', 1);
    await sink.write(batchOf('orders', 0, [reserved, reserved]));
    await sink.write(batchOf('orders', 2, [reserved]));
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM order_facts WHERE sale_id = {sale:String}', { sale })).toBe(1);
    expect(
      await countOf(test.warehouse, 'SELECT sum(units_reserved) AS n FROM sales_velocity_per_second WHERE sale_id = {sale:String}', {
        sale,
      }),
    ).toBe(1);
  });
});
