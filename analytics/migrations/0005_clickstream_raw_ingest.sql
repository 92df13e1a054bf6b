-- Lets ingest insert a clickstream event's own JSON bytes (plus its Kafka partition and offset) instead of
-- re-encoding every event as a row: the event's field names become insertable columns. `price`,
-- `position` and `reason` are EPHEMERAL (accepted on insert, never stored) and feed the stored columns
-- through their defaults; shopper_id is derived the same way. Rows written with every column given
-- (order of the old path, tests, backfills) are unchanged: a default applies only to an omitted column.
ALTER TABLE clickstream_events
    ADD COLUMN IF NOT EXISTS price Nullable(UInt64) EPHEMERAL NULL AFTER path,
    ADD COLUMN IF NOT EXISTS position Nullable(UInt32) EPHEMERAL NULL AFTER price,
    ADD COLUMN IF NOT EXISTS reason Nullable(String) EPHEMERAL NULL AFTER position,
    MODIFY COLUMN shopper_id String DEFAULT ifNull(user_id, anon_id),
    MODIFY COLUMN price_cents Nullable(UInt64) DEFAULT price,
    MODIFY COLUMN queue_position Nullable(UInt32) DEFAULT position,
    MODIFY COLUMN reject_reason LowCardinality(Nullable(String)) DEFAULT reason;
