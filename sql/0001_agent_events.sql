-- Raw per-span events: the source of truth every rollup and audit is checked against.
--
-- Fixes against the original design (see README "What we fixed"):
-- * sort key leads with the columns dashboards filter on, then ts: a millisecond ts first made
--   every later key column useless for pruning;
-- * daily partitions, so retention drops whole parts and replays can address one day;
-- * user_id_hash holds the Collector's keyed SHA-256 (64 hex chars), not FixedString(32);
-- * ingested_at records when ClickHouse stored the row, for freshness and insert-delay checks.
CREATE TABLE IF NOT EXISTS agent_events
(
    ts                DateTime64(3, 'UTC'),
    trace_id          String,
    span_id           String,
    parent_span_id    String,
    name              LowCardinality(String),
    service           LowCardinality(String),
    env               LowCardinality(String),
    agent             LowCardinality(String),
    operation         LowCardinality(String),
    model             LowCardinality(String),
    provider          LowCardinality(String),
    route             LowCardinality(String),
    user_id_hash      String CODEC(ZSTD(1)),
    status            LowCardinality(String),
    error_type        LowCardinality(String),
    latency_ms        UInt32,
    tokens_prompt     UInt32,
    tokens_completion UInt32,
    cost_usd          Decimal(12, 6),
    attrs             JSON(max_dynamic_paths = 256),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(ts)
ORDER BY (service, env, agent, route, ts)
TTL toDateTime(ts) + INTERVAL {{retention_days}} DAY DELETE
SETTINGS merge_with_ttl_timeout = 3600;

-- Every message or span that could not be mapped, with why and where it came from, so nothing
-- is dropped silently and an operator can fix and replay it.
CREATE TABLE IF NOT EXISTS dead_letters
(
    received_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    source_topic LowCardinality(String),
    partition    UInt32,
    offset       UInt64,
    error        String,
    payload      String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toDate(received_at)
ORDER BY (source_topic, received_at)
TTL toDateTime(received_at) + INTERVAL {{retention_days}} DAY DELETE;

-- Every rejected record passes through here, so identifying data is scrubbed in one place before
-- a payload is stored: the Collector scrubs the OTLP path, but rejects may come from anywhere.
CREATE TABLE IF NOT EXISTS dead_letters_incoming
(
    source_topic String,
    partition    UInt32,
    offset       UInt64,
    error        String,
    payload      String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_dead_letters_scrub TO dead_letters AS
SELECT
    source_topic, partition, offset, error,
    replaceRegexpAll(
        replaceRegexpAll(
            replaceRegexpAll(payload,
                -- OTLP attribute lists: {"key":"user_id","value":{"stringValue":"..."}}
                '("key"\\s*:\\s*"(?:user_id|user_email)"\\s*,\\s*"value"\\s*:\\s*)\\{[^}]*\\}',
                '\\1{"stringValue":"[redacted]"}'),
            -- flat JSON: "user_id": "..." or a number
            '"(user_id|user_email)"\\s*:\\s*("[^"]*"|[0-9]+)', '"\\1":"[redacted]"'),
        '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}', '[email redacted]') AS payload
FROM dead_letters_incoming;
