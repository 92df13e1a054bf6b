-- What shoppers do, one row per clickstream event (topic clickstream.v1), written only by ingest.
-- ReplacingMergeTree with event_id last in the sorting key: a producer re-send (same event_id, same
-- ts) collapses into one row on merge, and `FINAL` hides it before the merge. Replayed ingest batches
-- never reach the table at all (insert deduplication token, see ingest/README.md), hence the window.
CREATE TABLE IF NOT EXISTS clickstream_events
(
    event_id         UUID,
    type             LowCardinality(String),
    ts               DateTime64(3, 'UTC'),
    sale_id          LowCardinality(String),
    user_id          Nullable(String),
    anon_id          String,
    shopper_id       String,
    session_id       String,
    sku              LowCardinality(Nullable(String)),
    channel          LowCardinality(String),
    device           LowCardinality(String),
    ip_hash          String,
    offer_id         LowCardinality(Nullable(String)),
    bot_signals      Array(LowCardinality(String)),
    path             Nullable(String),
    price_cents      Nullable(UInt64),
    qty              Nullable(UInt16),
    queue_position   Nullable(UInt32),
    reject_reason    LowCardinality(Nullable(String)),
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (sale_id, type, ts, event_id)
TTL toDateTime(ts) + INTERVAL 13 MONTH
SETTINGS non_replicated_deduplication_window = 10000;
