-- agent_events, second version: every span once, attributed down its trace, classified, priced,
-- with its rollups as projections in the same parts.
--
-- span_inbox --(finalize_spans: refreshable view, every few seconds)--> agent_events (+ projections)
--
-- Why a finalizer: applications put the user, agent and route on their own span and the
-- instrumentation's LLM span is a child; parents end (and are exported) after their children, so
-- a child usually arrives first. Each span waits {{attribution_delay_seconds}} s in span_inbox for
-- its ancestors, then the finalizer writes it with the values of its nearest ancestor that has
-- them. A span whose chain is broken (a parent never arrived within that time) takes what its
-- trace's root span carries, if the root arrived, and is flagged parent_missing.
--
-- Why projections: the finalizer writes each batch as one insert block into one partition, i.e.
-- one part, and a part holds its projections. Raw events and every rollup are therefore written
-- together or not at all: no crash can leave them disagreeing, and nothing needs repair.
--
-- Exactly once: the finalizer's cursor is the highest inbox block number in agent_events (stored
-- with the rows, so it moves with them), inbox blocks are numbered in commit order, and a batch is
-- whole blocks. A span seen again within {{context_lookback_seconds}} s (a Collector resending
-- after a crash, an SDK retry) is stored once; a batch of nothing but such copies moves the cursor
-- through finalizer_skips, so a flood of copies cannot stall the finalizer.

-- The first version's rollup tables and their views give way to projections.
DROP VIEW IF EXISTS mv_agent_metrics_1m;
DROP VIEW IF EXISTS mv_route_metrics_1h;
DROP VIEW IF EXISTS mv_route_metrics_1d;
DROP VIEW IF EXISTS mv_user_cost_1d;
DROP VIEW IF EXISTS agent_metrics_1m;
DROP TABLE IF EXISTS agent_metrics_1m_state;
DROP TABLE IF EXISTS route_metrics_1h_state;
DROP TABLE IF EXISTS route_metrics_1d_state;
DROP TABLE IF EXISTS user_cost_1d_state;

-- The first version's table is moved aside once; its rows are finalized again below.
-- if: SELECT count() = 0 FROM system.columns WHERE database = currentDatabase() AND table = 'agent_events' AND name = 'kind'
RENAME TABLE IF EXISTS agent_events TO agent_events_legacy;

CREATE TABLE IF NOT EXISTS agent_events
(
    ts                 DateTime64(3, 'UTC'),
    trace_id           String CODEC(ZSTD(1)),
    span_id            String CODEC(ZSTD(1)),
    parent_span_id     String CODEC(ZSTD(1)),
    name               LowCardinality(String),
    -- request | agent | llm | tool | http | internal (see metrics_platform/span_kinds.py)
    kind               LowCardinality(String),
    -- the span starts a request in its service: a root span, or a server/consumer span
    is_request         Bool,
    span_kind          LowCardinality(String),
    service            LowCardinality(String),
    env                LowCardinality(String),
    agent              LowCardinality(String),
    operation          LowCardinality(String),
    model              LowCardinality(String),
    response_model     LowCardinality(String),
    provider           LowCardinality(String),
    route              LowCardinality(String),
    tool               LowCardinality(String),
    user_id_hash       String CODEC(ZSTD(1)),
    status             LowCardinality(String),
    error_type         LowCardinality(String),
    latency_ms         UInt32,
    tokens_prompt      UInt32,
    tokens_completion  UInt32,
    tokens_cache_read  UInt32,
    tokens_cache_write UInt32,
    tokens_reasoning   UInt32,
    -- what dashboards sum: reported cost when the span carried one, else computed; only for LLM and
    -- tool calls (frameworks put their children's total on request and agent spans)
    cost_usd           Decimal(18, 10),
    cost_reported_usd  Nullable(Decimal(18, 10)),
    cost_computed_usd  Decimal(18, 10),
    cost_source        LowCardinality(String),   -- reported | computed | unpriced | '' (not billed)
    price_id           LowCardinality(String),
    parent_missing     Bool,
    attrs              JSON(max_dynamic_paths = 256),
    ingested_at        DateTime64(3, 'UTC'),
    inbox_block        UInt64,
    finalized_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_ts ts TYPE minmax GRANULARITY 1,
    -- Rollups. A query whose GROUP BY keys and filters use only a projection's keys (with the same
    -- bucket expression) and these aggregates is answered from the projection; percentiles over
    -- any set of buckets are merged t-digest states. metrics_platform/rollups.py lists them.
    -- requests only (SLO windows, recent error rates): one row per minute and route, kinds folded in
    PROJECTION p_route_minute
    (
        SELECT toStartOfMinute(ts), service, env, route,
               count(), countIf(is_request), countIf(is_request AND status != 'ok'),
               quantilesTDigestIf(0.5, 0.95)(latency_ms, is_request)
        GROUP BY toStartOfMinute(ts), service, env, route
    ),
    PROJECTION p_route_hour
    (
        SELECT toStartOfHour(ts), service, env, route, kind, is_request,
               count(), countIf(status != 'ok'), sum(tokens_prompt), sum(tokens_completion),
               sum(tokens_cache_read), sum(tokens_cache_write), sum(tokens_reasoning), sum(cost_usd),
               quantilesTDigest(0.5, 0.95)(latency_ms)
        GROUP BY toStartOfHour(ts), service, env, route, kind, is_request
    ),
    PROJECTION p_route_day
    (
        SELECT toDate(ts), service, env, route, kind, is_request,
               count(), countIf(status != 'ok'), sum(tokens_prompt), sum(tokens_completion),
               sum(tokens_cache_read), sum(tokens_cache_write), sum(tokens_reasoning), sum(cost_usd),
               quantilesTDigest(0.5, 0.95)(latency_ms)
        GROUP BY toDate(ts), service, env, route, kind, is_request
    ),
    PROJECTION p_model_minute
    (
        SELECT toStartOfMinute(ts), service, env, model, provider, kind,
               count(), countIf(status != 'ok'), sum(tokens_prompt), sum(tokens_completion),
               sum(tokens_cache_read), sum(tokens_cache_write), sum(tokens_reasoning), sum(cost_usd),
               quantilesTDigest(0.5, 0.95)(latency_ms)
        GROUP BY toStartOfMinute(ts), service, env, model, provider, kind
    ),
    PROJECTION p_model_hour
    (
        SELECT toStartOfHour(ts), service, env, model, provider, kind, error_type,
               count(), countIf(status != 'ok'), sum(tokens_prompt), sum(tokens_completion),
               sum(tokens_cache_read), sum(tokens_cache_write), sum(tokens_reasoning), sum(cost_usd),
               quantilesTDigest(0.5, 0.95)(latency_ms)
        GROUP BY toStartOfHour(ts), service, env, model, provider, kind, error_type
    ),
    PROJECTION p_agent_hour
    (
        SELECT toStartOfHour(ts), service, env, agent, tool, kind,
               count(), countIf(status != 'ok'), sum(tokens_prompt), sum(tokens_completion),
               sum(tokens_cache_read), sum(tokens_cache_write), sum(tokens_reasoning), sum(cost_usd),
               quantilesTDigest(0.5, 0.95)(latency_ms)
        GROUP BY toStartOfHour(ts), service, env, agent, tool, kind
    ),
    -- per user and day (cost per user and account): requests, their failures, LLM tokens, billed cost
    PROJECTION p_user_day
    (
        SELECT toDate(ts), user_id_hash,
               count(), countIf(is_request), countIf(is_request AND status != 'ok'),
               sumIf(tokens_prompt, kind = 'llm'), sumIf(tokens_completion, kind = 'llm'), sum(cost_usd)
        GROUP BY toDate(ts), user_id_hash
    ),
    -- the finalizer's cursor, read from a few rows instead of the whole column
    PROJECTION p_inbox_cursor (SELECT max(inbox_block))
)
ENGINE = MergeTree
-- By ingest day (the finalizer's batches are one ingest day each); ts keeps its own minmax index.
PARTITION BY toDate(ingested_at)
ORDER BY (service, env, kind, agent, route, ts)
TTL toDateTime(ts) + INTERVAL {{retention_days}} DAY DELETE
SETTINGS merge_with_ttl_timeout = 3600;

-- A batch made only of copies writes no row, so its blocks are recorded here instead; the cursor
-- is the higher of the two. (Written only when agent_events gets nothing, so never half.)
CREATE TABLE IF NOT EXISTS finalizer_skips
(
    inbox_block UInt64,
    ingested_at DateTime64(3, 'UTC'),
    spans       UInt64,
    skipped_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY inbox_block
TTL toDateTime(skipped_at) + INTERVAL {{inbox_retention_hours}} HOUR DELETE;

-- The next batch of spans to finalize, every decision made: what both refreshable views below read.
CREATE VIEW IF NOT EXISTS finalizer_batch AS
WITH
    -- the cursor: the last inbox block finalized, or skipped as nothing but copies
    greatest((SELECT max(inbox_block) FROM agent_events), (SELECT max(inbox_block) FROM finalizer_skips)) AS done_block,
    greatest((SELECT max(ingested_at) FROM agent_events), (SELECT max(ingested_at) FROM finalizer_skips)) AS done_at,
    -- This batch: the next inbox blocks in commit order, stopping at the first block younger than
    -- the attribution delay, at the end of an ingest day, or after {{finalizer_max_rows}} rows
    -- (at least one block); and when its last block arrived. Blocks are looked for among rows
    -- stamped up to two minutes before the cursor's (a block's rows are stamped when its insert
    -- starts, and it is numbered when it commits); pipeline health reports any left behind.
    (
        SELECT (arraySlice(arrayMap(x -> x.1, blocks), 1, taken),
                if(taken = 0, toDateTime64(0, 3, 'UTC'), arrayMax(arrayMap(x -> x.3, arraySlice(blocks, 1, taken)))))
        FROM
        (
            SELECT blocks, least(
                       toUInt64(if(young = 0, length(blocks), young - 1)),
                       toUInt64(if(next_day = 0, length(blocks), next_day - 1)),
                       toUInt64(greatest(arrayCount(c -> c <= {{finalizer_max_rows}}, arrayCumSum(arrayMap(x -> x.2, blocks))), 1)))
                       AS taken
            FROM
            (
                SELECT blocks,
                       arrayFirstIndex(x -> x.3 > now64(3) - INTERVAL {{attribution_delay_seconds}} SECOND, blocks) AS young,
                       arrayFirstIndex(x -> toDate(x.3) != toDate(blocks[1].3), blocks) AS next_day
                FROM
                (
                    SELECT arraySort(groupArray((b, n, at))) AS blocks
                    FROM
                    (
                        SELECT _block_number AS b, count() AS n, max(ingested_at) AS at
                        FROM span_inbox
                        WHERE ingested_at >= done_at - INTERVAL 2 MINUTE AND _block_number > done_block
                        GROUP BY b
                    )
                )
            )
        )
    ) AS next_batch,
    next_batch.1 AS batch_blocks,
    next_batch.2 AS batch_last_at,
    batch AS
    (
        SELECT *, _block_number AS block
        FROM span_inbox
        WHERE length(batch_blocks) > 0 AND ingested_at >= done_at - INTERVAL 2 MINUTE
          AND ingested_at <= batch_last_at AND _block_number IN batch_blocks
    ),
    -- Every span of the batch's traces seen from a little before the batch until the attribution
    -- delay after it: the links of the ancestor walk, and earlier copies of the same span.
    traces AS
    (
        SELECT
            trace_id,
            groupArray(span_id) AS ids,
            groupArray(parent_span_id) AS parents,
            groupArray(block) AS blocks,
            groupArray((CAST(env AS String), CAST(agent AS String), CAST(route AS String), user_id_hash)) AS contexts,
            anyIf((CAST(env AS String), CAST(agent AS String), CAST(route AS String), user_id_hash), parent_span_id = '') AS root_context
        FROM (SELECT trace_id, span_id, parent_span_id, env, agent, route, user_id_hash, _block_number AS block
              FROM span_inbox
              WHERE length(batch_blocks) > 0
                AND ingested_at >= done_at - INTERVAL {{context_lookback_seconds}} SECOND
                AND ingested_at <= batch_last_at + INTERVAL {{attribution_delay_seconds}} SECOND
                AND trace_id IN (SELECT trace_id FROM batch))
        GROUP BY trace_id
    )
SELECT
    s.ts AS ts,
    s.trace_id AS trace_id,
    s.span_id AS span_id,
    s.parent_span_id AS parent_span_id,
    s.name AS name,
    s.kind AS kind,
    s.is_request AS is_request,
    s.span_kind AS span_kind,
    s.service AS service,
    -- Nearest ancestor first: walk up the parent links (at most 16 levels) filling what is empty.
    arrayFold((acc, step) -> if(acc.5 = '', acc,
            (if(acc.1 != '', acc.1, t.contexts[indexOf(t.ids, acc.5)].1),
             if(acc.2 != '', acc.2, t.contexts[indexOf(t.ids, acc.5)].2),
             if(acc.3 != '', acc.3, t.contexts[indexOf(t.ids, acc.5)].3),
             if(acc.4 != '', acc.4, t.contexts[indexOf(t.ids, acc.5)].4),
             if(indexOf(t.ids, acc.5) = 0, '', t.parents[indexOf(t.ids, acc.5)]),
             acc.6 OR indexOf(t.ids, acc.5) = 0)),
        range(16),
        (CAST(s.env AS String), CAST(s.agent AS String), CAST(s.route AS String), s.user_id_hash, s.parent_span_id, false)) AS walk,
    walk.6 AS parent_missing,
    if(walk.1 = '' AND parent_missing, t.root_context.1, walk.1) AS env,
    if(walk.2 = '' AND parent_missing, t.root_context.2, walk.2) AS agent,
    s.operation AS operation,
    s.model AS model,
    s.response_model AS response_model,
    s.provider AS provider,
    if(walk.3 = '' AND parent_missing, t.root_context.3, walk.3) AS route,
    s.tool AS tool,
    if(walk.4 = '' AND parent_missing, t.root_context.4, walk.4) AS user_id_hash,
    s.status AS status,
    s.error_type AS error_type,
    s.latency_ms AS latency_ms,
    s.tokens_prompt AS tokens_prompt,
    s.tokens_completion AS tokens_completion,
    s.tokens_cache_read AS tokens_cache_read,
    s.tokens_cache_write AS tokens_cache_write,
    s.tokens_reasoning AS tokens_reasoning,
    s.price_id AS price_id,
    s.cost_usd AS cost_usd,
    s.cost_reported_usd AS cost_reported_usd,
    s.cost_computed_usd AS cost_computed_usd,
    s.cost_source AS cost_source,
    s.attrs AS attrs,
    s.ingested_at AS ingested_at,
    s.block AS inbox_block,
    -- a copy of the span seen in an earlier inbox block (a resend, a retry)
    arrayExists((id, blk) -> id = s.span_id AND blk < s.block, t.ids, t.blocks) AS duplicate
FROM batch AS s
LEFT JOIN traces AS t USING trace_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS finalize_spans
REFRESH EVERY {{finalizer_interval_seconds}} SECOND APPEND TO agent_events
AS
SELECT
    ts, trace_id, span_id, parent_span_id, name, kind,
    is_request, span_kind, service, env, agent, operation,
    model, response_model, provider, route, tool, user_id_hash,
    status, error_type, latency_ms, tokens_prompt, tokens_completion, tokens_cache_read,
    tokens_cache_write, tokens_reasoning, cost_usd, cost_reported_usd, cost_computed_usd, cost_source,
    price_id, parent_missing, attrs, ingested_at, inbox_block
FROM finalizer_batch
WHERE NOT duplicate
-- two copies in one block: stored once
LIMIT 1 BY trace_id, span_id
-- one insert block, so one part: rows and projections land together
SETTINGS max_insert_block_size = 100000000, min_insert_block_size_rows = 100000000,
         min_insert_block_size_bytes = 100000000000, max_insert_threads = 1, max_threads = 2;

-- Only needed after a flood of copies, so it looks less often.
CREATE MATERIALIZED VIEW IF NOT EXISTS skip_copied_batches
REFRESH EVERY 30 SECOND APPEND TO finalizer_skips
AS
SELECT max(inbox_block) AS inbox_block, max(ingested_at) AS ingested_at, count() AS spans
FROM finalizer_batch
HAVING count() > 0 AND countIf(NOT duplicate) = 0;

-- The first version's rows, once, through the mapping's accept view and the finalizer like any other
-- span (kind, cost and attribution are computed for them as for new ones). agent_events_legacy is kept until its
-- retention ends; drop it once the copy is checked.
-- if: SELECT count() = 1 FROM system.tables WHERE database = currentDatabase() AND name = 'agent_events_legacy'
INSERT INTO spans_mapped
    (ts, trace_id, span_id, parent_span_id, name, span_kind, kind_hint, service, env, agent, operation, model,
     response_model, provider, route, tool, user_id_hash, status, error_type, latency_ms, tokens_prompt,
     tokens_completion, tokens_cache_read, tokens_cache_write, tokens_reasoning, cost_reported_usd, is_http, attrs,
     source_topic, partition, offset, kafka_ts, reject_reason, raw)
SELECT
    ts, trace_id, span_id, parent_span_id, name, '', '', service, env, agent, operation, model,
    '', provider, route, '', user_id_hash, status, error_type, latency_ms, tokens_prompt,
    tokens_completion, 0, 0, 0, if(cost_usd > 0, toDecimal128(cost_usd, 10), NULL), false, toJSONString(attrs),
    'migration:agent_events_legacy', 0, 0, toDateTime64(0, 3, 'UTC'), '', ''
FROM agent_events_legacy
WHERE (trace_id, span_id) NOT IN
    (SELECT trace_id, span_id FROM span_inbox WHERE source_topic = 'migration:agent_events_legacy');

-- A fresh installation had nothing to move: no legacy table is left behind.
-- if: SELECT count() = 1 FROM system.tables WHERE database = currentDatabase() AND name = 'agent_events_legacy' AND total_rows = 0
DROP TABLE IF EXISTS agent_events_legacy;

-- Cost by account keeps the precision of the cost it sums (an embedding call costs $0.0000002).
ALTER TABLE cost_by_account_daily MODIFY COLUMN cost_usd Decimal(38, 10);
