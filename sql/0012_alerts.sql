-- Alerting and pipeline health, kept in ClickHouse so dashboards can show them next to the data.
--
-- alert_events: one row per transition of an alert rule for one key (firing, resolved), written
-- by the Dagster sensor that evaluates deploy/alerts/rules.yaml (metrics_platform/alerting/).
-- The history behind the "alert history" charts; the sensor also rebuilds its state from it when
-- its cursor is lost.
CREATE TABLE IF NOT EXISTS alert_events
(
    ts            DateTime64(3, 'UTC'),
    rule          LowCardinality(String),
    rule_type     LowCardinality(String),   -- error_rate | latency | cost_budget | consumer_lag | ...
    key           String,                   -- what the rule fired for, e.g. service=api env=prod route=POST /v1/answer
    account_id    String,                   -- the billing account for account-scoped rules, else ''
    state         LowCardinality(String),   -- firing | resolved
    severity      LowCardinality(String),   -- critical | warning | info
    value         Float64,                  -- the measured value (burn rate, ms, USD, messages, ...)
    threshold     Float64,                  -- the limit it was compared with
    message       String,
    dashboard_url String,
    notified      Array(String)             -- channels that accepted the notification
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (rule, key, ts)
TTL toDateTime(ts) + INTERVAL {{retention_days}} DAY DELETE;

-- alert_status: the latest evaluation of every rule and key (ok, pending or firing, with value and
-- threshold), written on every sensor tick. It answers "SLO status" charts, also for keys that
-- never fired. Replacing keeps one row per rule and key after merges; readers take argMax by time.
CREATE TABLE IF NOT EXISTS alert_status
(
    evaluated_at DateTime64(3, 'UTC'),
    rule         LowCardinality(String),
    rule_type    LowCardinality(String),
    key          String,
    account_id   String,
    state        LowCardinality(String),    -- ok | pending | firing
    severity     LowCardinality(String),
    value        Float64,
    threshold    Float64,
    detail       String
)
ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY (rule, key)
TTL toDateTime(evaluated_at) + INTERVAL 7 DAY DELETE;

-- pipeline_health_samples: one row per number per sample of the pipeline health sensor (Collector
-- queue, freshness, insert and final delays, settling spans, dead letters) and of consumer lag per
-- consumer group (label = the group). The Pipeline health dashboard plots them.
CREATE TABLE IF NOT EXISTS pipeline_health_samples
(
    ts     DateTime64(3, 'UTC'),
    metric LowCardinality(String),
    label  LowCardinality(String),          -- e.g. the consumer group; '' for single-valued numbers
    value  Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (metric, label, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY DELETE;
