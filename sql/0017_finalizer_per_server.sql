-- The finalizer's cursor per server. Every server finalizes its own span_inbox (never replicated: the cursor
-- is its _block_number, one server's commit order) into agent_events, which on a replicated cluster the
-- shard's replicas share. Each row now says which server finalized it (finalized_by: the server's {replica}
-- macro when tables replicate, '' where one server owns its agent_events), and each server's cursor reads
-- only its own rows, so the replicas of a shard each finalize their own inbox, once.

ALTER TABLE agent_events ADD COLUMN IF NOT EXISTS finalized_by LowCardinality(String) DEFAULT {{finalizer_identity}}
    AFTER inbox_block;

-- The cursor from a few rows per part, as p_inbox_cursor did for the single server's.
ALTER TABLE agent_events ADD PROJECTION IF NOT EXISTS p_finalizer_cursor
(
    SELECT finalized_by, max(inbox_block), max(ingested_at) GROUP BY finalized_by
);
ALTER TABLE agent_events MATERIALIZE PROJECTION p_finalizer_cursor;
ALTER TABLE agent_events DROP PROJECTION IF EXISTS p_inbox_cursor;

-- Where this server's finalizer stands: the finalizer, pipeline health and the benchmarks read it. (Naming the
-- projection spares the planner weighing the others: 9 instead of 13 ms at 30M events.)
CREATE OR REPLACE VIEW finalizer_cursor AS
WITH
    (SELECT (max(inbox_block), max(ingested_at)) FROM agent_events WHERE finalized_by = {{finalizer_identity}}
     SETTINGS preferred_optimize_projection_name = 'p_finalizer_cursor') AS finalized,
    (SELECT (max(inbox_block), max(ingested_at)) FROM finalizer_skips) AS skipped
SELECT greatest(finalized.1, skipped.1) AS done_block, greatest(finalized.2, skipped.2) AS done_at;

-- 0011's batch, with the cursor above.
CREATE OR REPLACE VIEW finalizer_batch AS
WITH
    -- the cursor: the last block of this server's inbox it finalized, or skipped as nothing but copies
    (SELECT (done_block, done_at) FROM finalizer_cursor) AS cursor,
    cursor.1 AS done_block,
    cursor.2 AS done_at,
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

-- 0011's two refreshable views again, now refreshing on every server: inside a Replicated database ClickHouse
-- otherwise lets one replica per shard refresh (coordinated through Keeper), which would leave the other
-- replicas' inboxes unfinalized. Elsewhere the setting changes nothing.
DROP VIEW IF EXISTS finalize_spans;
CREATE MATERIALIZED VIEW finalize_spans
REFRESH EVERY {{finalizer_interval_seconds}} SECOND SETTINGS all_replicas = 1 APPEND TO agent_events
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
DROP VIEW IF EXISTS skip_copied_batches;
CREATE MATERIALIZED VIEW skip_copied_batches
REFRESH EVERY 30 SECOND SETTINGS all_replicas = 1 APPEND TO finalizer_skips
AS
SELECT max(inbox_block) AS inbox_block, max(ingested_at) AS ingested_at, count() AS spans
FROM finalizer_batch
HAVING count() > 0 AND countIf(NOT duplicate) = 0;

-- What this server's finalizer has yet to do: spans still settling in its inbox (and the oldest one's age, the
-- finalizer's lag), and spans of blocks it can no longer see, stamped more than two minutes before its cursor
-- (looked for over the last hour). Pipeline health sums it over every server (through a cluster's read layer).
CREATE OR REPLACE VIEW finalizer_settling AS
WITH (SELECT (done_block, done_at) FROM finalizer_cursor) AS cursor, cursor.1 AS done_block, cursor.2 AS done_at
SELECT countIf(ingested_at >= done_at - INTERVAL 2 MINUTE) AS settling_spans,
       minIf(ingested_at, ingested_at >= done_at - INTERVAL 2 MINUTE) AS oldest_settling_at,
       countIf(ingested_at < done_at - INTERVAL 2 MINUTE) AS stranded_spans
FROM span_inbox
WHERE ingested_at >= done_at - INTERVAL 1 HOUR AND _block_number > done_block;
