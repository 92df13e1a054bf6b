-- The offer loop's tables (analytics/offers, analytics/segments), written only by the offer jobs through the
-- warehouse endpoint's `offers` role (analytics/offers/tables.ts lists them). A run is identified by its
-- run id; every row carries it, so a rerun of the same run id can see what is already there.

-- What happened to each offer run, one row per step reached (started, segmented, offered, done):
-- the latest step of a run is argMax(step, at). A run whose last step is not `done` died midway.
CREATE TABLE IF NOT EXISTS offer_runs
(
    run_id           String,
    step             LowCardinality(String),
    from_sales       Array(String),
    for_sale         String,
    holdout_share    Float64,
    rules_digest     String,
    shoppers         UInt64,
    at               DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (run_id, at);

-- Each shopper's features over the run's past sales and the segment they fell in. ReplacingMergeTree on
-- (run_id, shopper_id): a rerun that writes a shopper again replaces the row rather than adding one, and
-- insert deduplication tokens drop a re-sent batch outright.
CREATE TABLE IF NOT EXISTS shopper_segments
(
    run_id              String,
    shopper_id          String,
    segment             LowCardinality(String),
    recency_score       UInt8,
    frequency_score     UInt8,
    monetary_score      UInt8,
    sales_seen          UInt32,
    sales_bought        UInt32,
    orders_paid         UInt32,
    spent_cents         UInt64,
    sales_since_last_buy UInt32,
    engaged_events      UInt32,
    missed_out          UInt32,
    abandoned           UInt32,
    price_offer_share   Float64,
    bot_events          UInt32,
    computed_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, shopper_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Offers made (and hold-outs drawn) for a sale: one row per shopper per sale per run. Hold-out rows name
-- the rule the shopper would have got, with no offer id: nothing was written to Redis for them.
CREATE TABLE IF NOT EXISTS offers
(
    run_id           String,
    sale_id          LowCardinality(String),
    shopper_id       String,
    rule_id          LowCardinality(String),
    offer_id         Nullable(String),
    kind             LowCardinality(String),
    sku              Nullable(String),
    price_cents      Nullable(UInt64),
    discount_cents   UInt64,
    early_access_ms  Nullable(UInt64),
    holdout          Bool,
    source           LowCardinality(String),
    segment          LowCardinality(String),
    why              String,
    expires_at       DateTime64(3, 'UTC'),
    created_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (sale_id, shopper_id, run_id)
SETTINGS non_replicated_deduplication_window = 10000;
