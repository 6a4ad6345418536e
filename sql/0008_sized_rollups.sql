-- Rollups sized to the questions they serve (original design, flaw 10). A per-minute rollup keyed
-- by six dimensions keeps about half the raw row count, so reading seven days of it was slower
-- than reading raw events. These two are much smaller:
-- * route_metrics_1h: per route per hour, for the last day by endpoint (usage, latency);
-- * route_metrics_1d: per route per day, for percentiles over weeks: merging t-digest states costs
--   per state, so hourly states of a sparse route are slower to merge than raw events (measured
--   at 30M events: 7-day p95 by route 250 ms from hourly states, ~100 ms raw, ~40 ms daily);
-- * user_cost_1d: per user per day (no other key: at most users x days rows), for cost by
--   customer over weeks.
-- Same rules as the per-minute rollup: exact sums, t-digest states, rates computed at read time.
-- metrics_platform/rollups.py describes every rollup for the audit and the repair.

CREATE TABLE IF NOT EXISTS route_metrics_1h_state
(
    ts_hour           DateTime('UTC'),
    service           LowCardinality(String),
    env               LowCardinality(String),
    route             LowCardinality(String),
    calls             SimpleAggregateFunction(sum, UInt64),
    errors            SimpleAggregateFunction(sum, UInt64),
    tokens_prompt     SimpleAggregateFunction(sum, UInt64),
    tokens_completion SimpleAggregateFunction(sum, UInt64),
    cost_usd          SimpleAggregateFunction(sum, Decimal(38, 6)),
    latency_q         AggregateFunction(quantilesTDigest(0.5, 0.95), UInt32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(ts_hour)
-- Hour first: its questions span all routes over a time range, and an hour has few distinct
-- values, so the key still narrows by service and route within it.
ORDER BY (ts_hour, service, env, route)
TTL ts_hour + INTERVAL {{retention_days}} DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_route_metrics_1h TO route_metrics_1h_state AS
SELECT
    toStartOfHour(ts) AS ts_hour,
    service, env, route,
    count() AS calls,
    countIf(status != 'ok') AS errors,
    sum(tokens_prompt) AS tokens_prompt,
    sum(tokens_completion) AS tokens_completion,
    sum(toDecimal128(cost_usd, 6)) AS cost_usd,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q
FROM agent_events
GROUP BY ts_hour, service, env, route;

CREATE TABLE IF NOT EXISTS route_metrics_1d_state
(
    day               Date,
    service           LowCardinality(String),
    env               LowCardinality(String),
    route             LowCardinality(String),
    calls             SimpleAggregateFunction(sum, UInt64),
    errors            SimpleAggregateFunction(sum, UInt64),
    tokens_prompt     SimpleAggregateFunction(sum, UInt64),
    tokens_completion SimpleAggregateFunction(sum, UInt64),
    cost_usd          SimpleAggregateFunction(sum, Decimal(38, 6)),
    latency_q         AggregateFunction(quantilesTDigest(0.5, 0.95), UInt32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, service, env, route)
TTL day + INTERVAL {{retention_days}} DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_route_metrics_1d TO route_metrics_1d_state AS
SELECT
    toDate(ts) AS day,
    service, env, route,
    count() AS calls,
    countIf(status != 'ok') AS errors,
    sum(tokens_prompt) AS tokens_prompt,
    sum(tokens_completion) AS tokens_completion,
    sum(toDecimal128(cost_usd, 6)) AS cost_usd,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q
FROM agent_events
GROUP BY day, service, env, route;

CREATE TABLE IF NOT EXISTS user_cost_1d_state
(
    day               Date,
    user_id_hash      String,
    calls             SimpleAggregateFunction(sum, UInt64),
    errors            SimpleAggregateFunction(sum, UInt64),
    tokens_prompt     SimpleAggregateFunction(sum, UInt64),
    tokens_completion SimpleAggregateFunction(sum, UInt64),
    cost_usd          SimpleAggregateFunction(sum, Decimal(38, 6))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, user_id_hash)
TTL day + INTERVAL {{retention_days}} DAY DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_user_cost_1d TO user_cost_1d_state AS
SELECT
    toDate(ts) AS day,
    user_id_hash,
    count() AS calls,
    countIf(status != 'ok') AS errors,
    sum(tokens_prompt) AS tokens_prompt,
    sum(tokens_completion) AS tokens_completion,
    sum(toDecimal128(cost_usd, 6)) AS cost_usd
FROM agent_events
GROUP BY day, user_id_hash;
