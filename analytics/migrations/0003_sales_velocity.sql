-- Per-second sales velocity and stock movement per SKU, kept current from order_facts.
-- Stock left at second t = the sale's starting stock - sum(units_reserved) + sum(units_released) up to t.
-- SummingMergeTree: read with sum() ... GROUP BY, since rows for one key merge only eventually.
CREATE TABLE IF NOT EXISTS sales_velocity_per_second
(
    sale_id          LowCardinality(String),
    sku              LowCardinality(String),
    second           DateTime('UTC'),
    orders_reserved  UInt64,
    units_reserved   UInt64,
    orders_paid      UInt64,
    units_paid       UInt64,
    revenue_cents    UInt64,
    orders_expired   UInt64,
    units_released   UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(second)
ORDER BY (sale_id, sku, second)
TTL second + INTERVAL 25 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS sales_velocity_per_second_mv TO sales_velocity_per_second AS
SELECT
    sale_id,
    sku,
    toStartOfSecond(ts) AS second,
    countIf(status = 'reserved') AS orders_reserved,
    sumIf(qty, status = 'reserved') AS units_reserved,
    countIf(status = 'paid') AS orders_paid,
    sumIf(qty, status = 'paid') AS units_paid,
    sumIf(amount_cents, status = 'paid') AS revenue_cents,
    countIf(status = 'expired') AS orders_expired,
    sumIf(qty, status = 'expired') AS units_released
FROM order_facts
GROUP BY sale_id, sku, second;
