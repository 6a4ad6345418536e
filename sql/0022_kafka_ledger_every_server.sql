-- The offset ledger (0010) read from every server of a cluster.
--
-- The servers of a cluster share one consumer group per topic, so Kafka splits the partitions among them. A
-- server commits a block's offsets after storing it; when the commit fails (the group coordinator's broker
-- died: tests/test_cluster.py, 687 of 21,840 spans stored twice) and a rebalance then hands the partition to
-- another server, that server reads again from the last committed offset. Each server's ledger held only its
-- own offsets, so the block was stored on two shards. The views that store Kafka messages now read the highest
-- stored offset per partition from every server's span_inbox (and dead_letters), through a Distributed table
-- over the cluster that lists every server (`<cluster>_every_server` where defined).
--
-- A server that cannot be reached is skipped: blocking every server's ingest while one is down would trade a
-- bounded duplicate (a block a server stored, and died before committing) for an outage. On a single node the
-- views read the local tables, as before.
--
-- The views are changed in place (MODIFY QUERY): dropping one would lose what arrives meanwhile.

-- if: SELECT {{ledger_is_cluster_wide}}
CREATE TABLE IF NOT EXISTS span_inbox_every_server
(
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    kafka_ts         DateTime64(3, 'UTC')
)
ENGINE = Distributed({{ledger_cluster}}, currentDatabase(), span_inbox)
SETTINGS skip_unavailable_shards = 1;

-- if: SELECT {{ledger_is_cluster_wide}}
CREATE TABLE IF NOT EXISTS dead_letters_every_server
(
    source_topic LowCardinality(String),
    partition    UInt32,
    offset       UInt64,
    kafka_ts     DateTime64(3, 'UTC')
)
ENGINE = Distributed({{ledger_cluster}}, currentDatabase(), dead_letters)
SETTINGS skip_unavailable_shards = 1;

ALTER TABLE mv_reject_spans_checked MODIFY QUERY
SELECT m.source_topic AS source_topic, m.partition AS partition, m.offset AS offset, m.kafka_ts AS kafka_ts,
       if(m.reject_reason != '', m.reject_reason,
          'raw user identifiers nested in attrs are not accepted (an identity key inside an object or kvlist, or a user/enduser object with id, email or name): send user_id_hash') AS error,
       -- a span refused here has no raw message in spans_mapped: its identity, never its attributes
       if(m.reject_reason != '', m.raw,
          toJSONString(map('service', m.service, 'trace_id', m.trace_id, 'span_id', m.span_id))) AS payload
FROM spans_mapped AS m
LEFT JOIN
(
    SELECT source_topic, partition, max(offset) AS done_offset, max(kafka_ts) AS done_ts
    FROM {{dead_letters_ledger}} GROUP BY source_topic, partition
) AS ledger ON m.source_topic = ledger.source_topic AND m.partition = ledger.partition
WHERE (m.reject_reason != '' OR mp_nested_identity(m.attrs))
  AND NOT (ledger.done_ts > toDateTime64(0, 3, 'UTC') AND m.offset <= ledger.done_offset AND m.kafka_ts <= ledger.done_ts);

ALTER TABLE mv_accept_spans_checked MODIFY QUERY
-- Three levels, so kind, price id and computed cost are each worked out once per span: ClickHouse
-- substitutes an alias wherever it is used, and planning this view (on every insert) took 60 %
-- longer with them as aliases of one level.
SELECT
    source_topic, source_partition, source_offset, kafka_ts,
    ts, trace_id, span_id, parent_span_id, name, span_kind, kind_hint, service, env, agent, operation, model,
    response_model, provider, route, tool, user_id_hash, status, error_type, latency_ms, tokens_prompt,
    tokens_completion, tokens_cache_read, tokens_cache_write, tokens_reasoning, cost_reported_usd, is_http, attrs,
    kind, is_request, price_id,
    ifNull(computed, zero) AS cost_computed_usd,
    -- What dashboards sum: reported cost when the span carried one, else computed; only for LLM and
    -- tool calls (frameworks put their children's total on request and agent spans).
    multiIf(kind NOT IN ('llm', 'tool'), zero,
            cost_reported_usd IS NOT NULL, toDecimal64(assumeNotNull(cost_reported_usd), 10),
            ifNull(computed, zero)) AS cost_usd,
    multiIf(kind NOT IN ('llm', 'tool'), '',
            cost_reported_usd IS NOT NULL, 'reported',
            computed IS NOT NULL, 'computed',
            kind = 'llm', 'unpriced',
            '') AS cost_source
FROM
(
    SELECT *, toDecimal64(0, 10) AS zero,
           mp_llm_cost(price_id, toDate(ts), tokens_prompt, tokens_completion, tokens_cache_read, tokens_cache_write,
                       tokens_reasoning) AS computed
    FROM
    (
        SELECT
            m.source_topic AS source_topic, m.partition AS source_partition, m.offset AS source_offset,
            m.kafka_ts AS kafka_ts, ts, trace_id, span_id, parent_span_id, name, span_kind, kind_hint, service, env,
            agent, operation, model, response_model, provider, route, tool, user_id_hash, status, error_type,
            latency_ms, tokens_prompt, tokens_completion, tokens_cache_read, tokens_cache_write, tokens_reasoning,
            cost_reported_usd, is_http, attrs,
            mp_span_kind(kind_hint, operation, tool, model, response_model, toUInt64(tokens_prompt) + tokens_completion,
                         span_kind, is_http, parent_span_id) AS kind,
            mp_is_request(parent_span_id, span_kind) AS is_request,
            if(kind = 'llm', mp_price_id(provider, model, response_model), '') AS price_id
        FROM spans_mapped AS m
        LEFT JOIN
        (
            SELECT source_topic, source_partition, max(source_offset) AS done_offset, max(kafka_ts) AS done_ts
            FROM {{inbox_ledger}} GROUP BY source_topic, source_partition
        ) AS ledger ON m.source_topic = ledger.source_topic AND m.partition = ledger.source_partition
        WHERE m.reject_reason = '' AND NOT mp_nested_identity(m.attrs)
          -- not already stored by any server (the ledger: 0010's note, and this file's); no ledger row
          -- joins as 0 / 1970
          AND NOT (ledger.done_ts > toDateTime64(0, 3, 'UTC') AND m.offset <= ledger.done_offset
                   AND m.kafka_ts <= ledger.done_ts)
    )
);
