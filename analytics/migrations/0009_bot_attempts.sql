-- Purchase attempts per minute and bot signal, for the live sale's "bot-flagged attempts": a live dashboard
-- reads a few hundred rollup rows instead of every attempt of the sale. signal '' counts every attempt, '*'
-- the attempts flagged by any signal, and each signal its own. AggregatingMergeTree: read with sum(attempts)
-- and uniqExactMerge(shoppers) ... GROUP BY.
CREATE TABLE IF NOT EXISTS bot_attempts_per_minute
(
    sale_id          LowCardinality(String),
    signal           LowCardinality(String),
    minute           DateTime('UTC'),
    attempts         SimpleAggregateFunction(sum, UInt64),
    shoppers         AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (sale_id, signal, minute)
TTL minute + INTERVAL 25 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS bot_attempts_per_minute_mv TO bot_attempts_per_minute AS
SELECT
    sale_id,
    signal,
    toStartOfMinute(ts) AS minute,
    count() AS attempts,
    uniqExactStateIf(shopper_id, signal != '') AS shoppers
FROM clickstream_events
ARRAY JOIN arrayConcat([''], if(empty(bot_signals), [], arrayConcat(['*'], arrayDistinct(CAST(bot_signals, 'Array(String)'))))) AS signal
WHERE type = 'purchase_attempt'
GROUP BY sale_id, signal, minute;

-- The sales already in the warehouse (the view only sees inserts from now on). A row ingested in the moment
-- between the view's creation and this backfill would count twice; migrations run when ingest is stopped.
INSERT INTO bot_attempts_per_minute
SELECT
    sale_id,
    signal,
    toStartOfMinute(ts) AS minute,
    count() AS attempts,
    uniqExactStateIf(shopper_id, signal != '') AS shoppers
FROM clickstream_events
ARRAY JOIN arrayConcat([''], if(empty(bot_signals), [], arrayConcat(['*'], arrayDistinct(CAST(bot_signals, 'Array(String)'))))) AS signal
WHERE type = 'purchase_attempt'
GROUP BY sale_id, signal, minute;
