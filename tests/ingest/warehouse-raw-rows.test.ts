// The warehouse sink writes a clickstream event's own bytes (Kafka lineage spliced in) instead of a row
// built in JS. Checked on the real chdb: both ways store exactly the same row for every event kind, a
// batch the raw insert refuses still lands (re-encoded, same token), and a replay is dropped either way.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClickstreamEvent, decodeEvent, encodeEvent } from '../../common/events.js';
import type { Logger } from '../../common/logger.js';
import type { SinkBatch, SourcedEvent } from '../../ingest/sink.js';
import { createWarehouseSink } from '../../ingest/warehouse-sink.js';
import { clickEvent, uniqueSale } from './support/events.js';
import { countOf, openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

const STORED_COLUMNS = `toString(event_id) AS event_id, type, toUnixTimestamp64Milli(ts) AS ts, user_id, anon_id, shopper_id,
  session_id, sku, channel, device, ip_hash, offer_id, bot_signals, path, price_cents, qty, queue_position, reject_reason,
  kafka_partition, kafka_offset`;

function batchOf(first: number, messages: Buffer[], withBytes: boolean): SinkBatch {
  const events: SourcedEvent[] = messages.map((raw, i) => ({
    event: decodeEvent(raw.toString('utf8')),
    partition: 3,
    offset: String(first + i),
    ...(withBytes ? { raw } : {}),
  }));
  return {
    topic: 'clicks',
    partition: 3,
    firstOffset: String(first),
    lastOffset: String(first + messages.length - 1),
    events,
    replay: false,
  };
}

describe('warehouse sink: raw clickstream bytes', () => {
  let test: TestWarehouse;
  beforeAll(async () => {
    test = await openTestWarehouse();
  });
  afterAll(async () => test?.dispose());

  const stored = (sale: string) =>
    test.warehouse.query<Record<string, unknown>>(
      `SELECT ${STORED_COLUMNS} FROM clickstream_events WHERE sale_id = {sale:String} ORDER BY kafka_offset`,
      { sale },
    );

  it('stores the same row from the bytes as from the decoded event, for every kind', async () => {
    const [rawSale, rowSale] = [uniqueSale('raw'), uniqueSale('rows')];
    const kinds = (sale: string) =>
      Array.from({ length: 24 }, (_, i) => {
        const event = clickEvent(sale, i) as ClickstreamEvent & Record<string, unknown>;
        // Optional envelope fields both present and absent, and bytes with surrounding whitespace.
        if (i % 3 === 0) Object.assign(event, { offer_id: `offer-${i}`, bot_signals: ['headless', 'fast'] });
        return event;
      });
    const rawEvents = kinds(rawSale);
    const rowEvents = rawEvents.map((event) => ({ ...event, sale_id: rowSale }));
    const bytes = (events: ClickstreamEvent[]) =>
      events.map((event, i) => (i % 5 === 4 ? Buffer.from(` \n${encodeEvent(event).toString()}\n `) : encodeEvent(event)));
    const sink = createWarehouseSink(test.warehouse);
    await sink.write(batchOf(0, bytes(rawEvents), true));
    await sink.write(batchOf(1000, bytes(rowEvents), false));

    const [fromBytes, fromRows] = [await stored(rawSale), await stored(rowSale)];
    expect(fromBytes).toHaveLength(24);
    expect(new Set(fromBytes.map((row) => row.type)).size).toBeGreaterThanOrEqual(8);
    const comparable = (rows: Record<string, unknown>[]) =>
      rows.map(({ sale_id: _, kafka_offset, ...row }) => ({ ...row, kafka_offset: Number(kafka_offset) % 1000 }));
    expect(comparable(fromBytes)).toEqual(comparable(fromRows));
  });

  it('writes re-encoded rows when ClickHouse refuses the bytes, and drops the replay of either', async () => {
    const sale = uniqueSale('raw-refused');
    const good = Array.from({ length: 10 }, (_, i) => encodeEvent(clickEvent(sale, i)));
    // JSON.parse keeps the last of a repeated key; ClickHouse refuses the row.
    const text = good[4]!.toString();
    good[4] = Buffer.from(text.replace('{', `{"device":"x",`));
    const refusals: unknown[] = [];
    const log = { warn: (details: unknown) => refusals.push(details) } as unknown as Logger;
    const sink = createWarehouseSink(test.warehouse, log);
    await sink.write(batchOf(0, good, true));
    expect(refusals).toHaveLength(1);
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM clickstream_events WHERE sale_id = {sale:String}', { sale })).toBe(10);

    await sink.write(batchOf(0, good, true));
    await sink.write(batchOf(0, good, false));
    expect(await countOf(test.warehouse, 'SELECT count() AS n FROM clickstream_events WHERE sale_id = {sale:String}', { sale })).toBe(10);
    expect(
      await countOf(test.warehouse, 'SELECT sum(events) AS n FROM funnel_stages_per_minute WHERE sale_id = {sale:String}', { sale }),
    ).toBe(10);
  });
});
