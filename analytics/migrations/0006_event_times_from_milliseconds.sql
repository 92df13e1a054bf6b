-- Event times are epoch milliseconds in the contract. How ClickHouse reads a JSON *number* into a
-- DateTime64(3) column depends on its version (26.7 takes milliseconds, 26.9 seconds, storing
-- 9999-12-31), so ingest never lets it guess: the raw-bytes clickstream insert sends the event's `ts` as
-- `ts_ms`, an EPHEMERAL Int64 (an integer reads the same in every version) that fills `ts` through
-- fromUnixTimestamp64Milli. Writers that give `ts` itself (rows, tests, backfills) are unchanged: a
-- default applies only to an omitted column. Row inserts send `ts` as DateTime64 text instead.
ALTER TABLE clickstream_events
    ADD COLUMN IF NOT EXISTS ts_ms Int64 EPHEMERAL 0 AFTER reason,
    MODIFY COLUMN ts DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(ts_ms, 'UTC');
