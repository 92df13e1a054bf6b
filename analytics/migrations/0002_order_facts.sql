-- What happened to orders, one row per order event (topic orders.v1): reserved, then paid or expired.
-- The order store in PostgreSQL is the system of record for an order's state; this is its history for
-- analysis. Same dedup scheme as clickstream_events.
CREATE TABLE IF NOT EXISTS order_facts
(
    event_id         UUID,
    type             LowCardinality(String),
    status           LowCardinality(String),
    ts               DateTime64(3, 'UTC'),
    order_id         String,
    sale_id          LowCardinality(String),
    user_id          Nullable(String),
    anon_id          String,
    shopper_id       String,
    session_id       String,
    sku              LowCardinality(String),
    channel          LowCardinality(String),
    device           LowCardinality(String),
    offer_id         LowCardinality(Nullable(String)),
    bot_signals      Array(LowCardinality(String)),
    price_cents      UInt64,
    qty              UInt16,
    amount_cents     UInt64,
    expires_at       Nullable(DateTime64(3, 'UTC')),
    kafka_partition  UInt16,
    kafka_offset     UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (sale_id, ts, order_id, event_id)
TTL toDateTime(ts) + INTERVAL 25 MONTH
SETTINGS non_replicated_deduplication_window = 10000;
