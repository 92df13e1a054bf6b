// Issue 12, failure 13: event times are epoch milliseconds, and ClickHouse versions disagree on how a
// bare JSON number reads into DateTime64(3) (26.7: milliseconds; 26.9: seconds, stored as 9999-12-31).
// Ingest converts explicitly on every path; this reads back the stored year and milliseconds of a known
// time through each one, and checks no path hands the engine a bare number for a DateTime64 column.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClickstreamEvent, decodeEvent, encodeEvent, type FlashSaleEvent } from '../../common/events.js';
import type { SinkBatch } from '../../ingest/sink.js';
import { clickstreamJsonEachRow, clickstreamRow, orderFactRow } from '../../ingest/warehouse-rows.js';
import { createWarehouseSink } from '../../ingest/warehouse-sink.js';
import { clickEvent, orderEvent, uniqueSale } from './support/events.js';
import { openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

// 2026-03-04 05:06:07.089 UTC, and a reservation that expires 10 minutes later.
const KNOWN_TS = Date.UTC(2026, 2, 4, 5, 6, 7, 89);
const EXPIRES_AT = KNOWN_TS + 600_000;

function batchOf(events: FlashSaleEvent[], withBytes: boolean, first = 0): SinkBatch {
  return {
    topic: 'times',
    partition: 0,
    firstOffset: String(first),
    lastOffset: String(first + events.length - 1),
    replay: false,
    events: events.map((event, i) => {
      const raw = encodeEvent(event);
      return { event: decodeEvent(raw), partition: 0, offset: String(first + i), ...(withBytes ? { raw } : {}) };
    }),
  };
}

interface StoredTime {
  year: number;
  ms: string;
}

describe('event times: epoch ms are stored as that instant, whatever the engine version', () => {
  let test: TestWarehouse;
  beforeAll(async () => {
    test = await openTestWarehouse();
  });
  afterAll(async () => test?.dispose());

  const storedClicks = (sale: string) =>
    test.warehouse.query<StoredTime>(
      `SELECT toYear(ts) AS year, toString(toUnixTimestamp64Milli(ts)) AS ms FROM clickstream_events WHERE sale_id = {sale:String}`,
      { sale },
    );

  it('the raw-bytes clickstream insert: ts arrives as the integer ts_ms and is stored as that instant', async () => {
    const sale = uniqueSale('times-raw');
    const events = Array.from({ length: 8 }, (_, i) => clickEvent(sale, i, KNOWN_TS));
    const batch = batchOf(events, true);
    // Never a bare number for `ts`: the key is renamed to the EPHEMERAL Int64 column.
    const payload = clickstreamJsonEachRow(batch.events)!.toString();
    expect(payload).not.toContain('"ts":');
    expect(payload.match(new RegExp(`"ts_ms":${KNOWN_TS}[,}]`, 'g'))).toHaveLength(events.length);

    await createWarehouseSink(test.warehouse).write(batch);
    const stored = await storedClicks(sale);
    expect(stored).toHaveLength(events.length);
    for (const row of stored) expect(row).toEqual({ year: 2026, ms: String(KNOWN_TS) });
  });

  it('the row insert (the fallback path): ts is DateTime64 text and is stored as that instant', async () => {
    const sale = uniqueSale('times-rows');
    const events = Array.from({ length: 8 }, (_, i) => clickEvent(sale, i, KNOWN_TS));
    // Offsets of its own: the same range would carry the first test's deduplication token.
    const batch = batchOf(events, false, 10);
    expect(clickstreamRow(batch.events[0] as (typeof batch.events)[0] & { event: ClickstreamEvent }).ts).toBe('2026-03-04 05:06:07.089');

    await createWarehouseSink(test.warehouse).write(batch);
    const stored = await storedClicks(sale);
    expect(stored).toHaveLength(events.length);
    for (const row of stored) expect(row).toEqual({ year: 2026, ms: String(KNOWN_TS) });
  });

  it('order facts: ts and expires_at are stored as those instants', async () => {
    const sale = uniqueSale('times-orders');
    const reserved = orderEvent(sale, `order-${sale}`, 'reserved', 1, KNOWN_TS);
    expect(reserved.type === 'order_reserved' && reserved.expires_at).toBe(EXPIRES_AT);
    const batch = batchOf([reserved], true, 20);
    const row = orderFactRow(batch.events[0] as Parameters<typeof orderFactRow>[0]);
    expect(row).toMatchObject({ ts: '2026-03-04 05:06:07.089', expires_at: '2026-03-04 05:16:07.089' });

    await createWarehouseSink(test.warehouse).write(batch);
    const stored = await test.warehouse.query<StoredTime & { expires_year: number; expires_ms: string }>(
      `SELECT toYear(ts) AS year, toString(toUnixTimestamp64Milli(ts)) AS ms,
              toYear(assumeNotNull(expires_at)) AS expires_year, toString(toUnixTimestamp64Milli(assumeNotNull(expires_at))) AS expires_ms
       FROM order_facts WHERE sale_id = {sale:String}`,
      { sale },
    );
    expect(stored).toEqual([{ year: 2026, ms: String(KNOWN_TS), expires_year: 2026, expires_ms: String(EXPIRES_AT) }]);
  });

  it('a raw event whose ts key the byte copy cannot find for sure goes through rows, still exact', async () => {
    const sale = uniqueSale('times-odd');
    const event = clickEvent(sale, 0, KNOWN_TS);
    // Legal JSON that the key rename does not touch: a space before the colon.
    const raw = Buffer.from(encodeEvent(event).toString().replace('"ts":', '"ts" :'));
    const batch: SinkBatch = {
      topic: 'times',
      partition: 0,
      firstOffset: '100',
      lastOffset: '100',
      replay: false,
      events: [{ event: decodeEvent(raw), partition: 0, offset: '100', raw }],
    };
    expect(clickstreamJsonEachRow(batch.events)).toBeUndefined();
    await createWarehouseSink(test.warehouse).write(batch);
    expect(await storedClicks(sale)).toEqual([{ year: 2026, ms: String(KNOWN_TS) }]);
  });
});
