-- Every query the warehouse endpoint (analytics/warehouse-endpoint) answered or refused: who, on whose
-- behalf, how long, how much, and the error. Written only by the endpoint, in batches about once a second.
CREATE TABLE IF NOT EXISTS warehouse_query_log
(
    started_at      DateTime64(3, 'UTC'),
    query_id        String,
    user_name       LowCardinality(String),
    role            LowCardinality(String),
    on_behalf_of    String,
    client_address  String,
    statement       LowCardinality(String),
    query           String,
    format          LowCardinality(String),
    status          LowCardinality(String),
    http_status     UInt16,
    error_code      Int32,
    error           String,
    duration_ms     UInt32,
    result_rows     UInt64,
    result_bytes    UInt64,
    written_rows    UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (started_at, user_name)
TTL toDateTime(started_at) + INTERVAL 13 MONTH;
