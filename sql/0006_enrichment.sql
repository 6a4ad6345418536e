-- Enrichment: reference data loaded from files or URLs (metrics_platform/enrichment/) and the
-- cost-by-account rollup that uses it.
--
-- billing_accounts and feature_flags are replaced as a whole on every load: the loader fills a
-- fresh staging table created `AS` the live one, swaps the two with EXCHANGE TABLES (atomic, so a
-- reader sees the old set or the new one, never half of each) and drops the staging copy. A full
-- replace rather than ReplacingMergeTree versions because a row missing from the new file must
-- disappear (a user moved off an account), which versioned inserts cannot express without FINAL
-- on every read. Uniqueness of the key is enforced by the loader, so plain MergeTree suffices.
--
-- A ClickHouse dictionary over billing_accounts works on the embedded server, but a dictionary's
-- CLICKHOUSE source logs in with its own user and password, which would put credentials into the
-- schema of a secured server; the reference tables are small, so readers use a plain join.

CREATE TABLE IF NOT EXISTS billing_accounts
(
    user_id_hash String,                   -- keyed SHA-256 as written by the Collector (64 hex)
    account_id   String,
    account_name String,
    plan         LowCardinality(String),   -- e.g. free, pro, enterprise
    source       String,                   -- the file or URL this set was loaded from
    loaded_at    DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY user_id_hash;

-- Flags that were on for an agent or a route, so metrics can be split by experiment arm.
CREATE TABLE IF NOT EXISTS feature_flags
(
    scope     LowCardinality(String),      -- 'agent' or 'route'
    target    String,                      -- the agent name or route it applies to
    flag      String,
    enabled   Bool,
    variant   String,                      -- '' when the flag is a plain on/off switch
    source    String,
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (scope, target, flag);

-- One row per load attempt that replaced a reference table: what was read and rejected.
CREATE TABLE IF NOT EXISTS enrichment_loads
(
    dataset   LowCardinality(String),
    source    String,
    records   UInt64,
    loaded    UInt64,
    rejected  UInt64,
    run_id    String,
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (dataset, loaded_at);

-- Calls, errors, tokens and cost per billing account and day ("cost by customer").
-- Spans without a user (tool steps) are attributed to the user of their trace; spans whose user
-- has no account are under account_id 'unassigned'. Each day is one partition, recomputed from
-- raw events and swapped in with REPLACE PARTITION, so a recompute is atomic and idempotent.
CREATE TABLE IF NOT EXISTS cost_by_account_daily
(
    day               Date,
    account_id        String,
    account_name      String,
    plan              LowCardinality(String),
    calls             UInt64,
    errors            UInt64,
    tokens_prompt     UInt64,
    tokens_completion UInt64,
    cost_usd          Decimal(38, 6),
    users             UInt64,              -- distinct user hashes seen (for 'unassigned': unmapped users)
    computed_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY account_id
TTL day + INTERVAL {{retention_days}} DAY DELETE;
