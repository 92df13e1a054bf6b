-- Funnel stage counts per minute: how many events and distinct shoppers reached each stage.
-- AggregatingMergeTree: read with sum(events) and uniqMerge(shoppers) ... GROUP BY.
CREATE TABLE IF NOT EXISTS funnel_stages_per_minute
(
    sale_id          LowCardinality(String),
    stage            LowCardinality(String),
    channel          LowCardinality(String),
    minute           DateTime('UTC'),
    events           SimpleAggregateFunction(sum, UInt64),
    shoppers         AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (sale_id, stage, channel, minute)
TTL minute + INTERVAL 25 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS funnel_stages_per_minute_mv TO funnel_stages_per_minute AS
SELECT
    sale_id,
    type AS stage,
    channel,
    toStartOfMinute(ts) AS minute,
    count() AS events,
    uniqState(shopper_id) AS shoppers
FROM clickstream_events
GROUP BY sale_id, stage, channel, minute;

-- Why purchases were turned away, per minute and SKU.
CREATE TABLE IF NOT EXISTS rejection_reasons_per_minute
(
    sale_id          LowCardinality(String),
    sku              LowCardinality(String),
    reason           LowCardinality(String),
    minute           DateTime('UTC'),
    rejections       UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (sale_id, reason, sku, minute)
TTL minute + INTERVAL 25 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS rejection_reasons_per_minute_mv TO rejection_reasons_per_minute AS
SELECT
    sale_id,
    ifNull(sku, '') AS sku,
    ifNull(reject_reason, '') AS reason,
    toStartOfMinute(ts) AS minute,
    count() AS rejections
FROM clickstream_events
WHERE type = 'purchase_rejected'
GROUP BY sale_id, sku, reason, minute;
