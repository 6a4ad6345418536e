-- Cost by user over the last 30 days (0014), now appended as snapshots by every server. Inside a Replicated
-- database ClickHouse coordinates a full (non-APPEND) refresh, letting one replica per shard run it, and the
-- refresh's table swap is itself replicated DDL that reaches every shard (ClickHouse issue 88329): each shard
-- would end up holding one shard's answer. An APPEND refresh on every server over its own shard's events
-- needs neither. Readers keep the name user_cost_30d: a view of the newest snapshot, so a user who falls out
-- of the window still disappears at the next refresh.
DROP VIEW IF EXISTS refresh_user_cost_30d;
-- A table before this migration, the view below if it ran before.
DROP TABLE IF EXISTS user_cost_30d;

CREATE TABLE IF NOT EXISTS user_cost_30d_snapshots
(
    user_id_hash    String,
    requests        UInt64,
    failed_requests UInt64,
    cost_usd        Decimal(38, 10),
    -- microseconds: two refreshes within one second (a manual one after a scheduled one) stay apart
    refreshed_at    DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (refreshed_at, user_id_hash)
TTL toDateTime(refreshed_at) + INTERVAL 1 HOUR DELETE;

CREATE MATERIALIZED VIEW IF NOT EXISTS refresh_user_cost_30d
REFRESH EVERY 5 MINUTE SETTINGS all_replicas = 1 APPEND TO user_cost_30d_snapshots
AS
SELECT user_id_hash, countIf(is_request) AS requests, countIf(is_request AND status != 'ok') AS failed_requests,
       sum(cost_usd) AS cost_usd, now64(6) AS refreshed_at
FROM agent_events
WHERE toDate(ts) >= today() - 30 AND user_id_hash != ''
GROUP BY user_id_hash
-- one insert block, so one part: a snapshot is seen whole or not at all
SETTINGS max_insert_block_size = 100000000, min_insert_block_size_rows = 100000000,
         min_insert_block_size_bytes = 100000000000, max_insert_threads = 1;

CREATE OR REPLACE VIEW user_cost_30d AS
SELECT user_id_hash, requests, failed_requests, cost_usd, refreshed_at
FROM user_cost_30d_snapshots
WHERE refreshed_at = (SELECT max(refreshed_at) FROM user_cost_30d_snapshots);
