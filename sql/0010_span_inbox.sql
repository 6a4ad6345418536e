-- Ingest, second version: both topics are mapped and validated once into span_inbox, where spans
-- wait a few seconds for the rest of their trace before the finalizer (0011) writes them,
-- attributed, classified and priced, to agent_events.
--
-- kafka_otel_spans   -> mv_map_otlp_spans  --\                        /-> mv_accept_spans -> span_inbox
--                                             > spans_mapped (Null) --<
-- kafka_agent_events -> mv_map_flat_events --/                        \-> mv_reject_spans -> dead_letters
--
-- Exactly once per Kafka message: ClickHouse's Kafka engine commits offsets after the insert, so
-- a crash in between delivers a block again. span_inbox and dead_letters each keep, in the same
-- part as their rows, the highest offset they hold per topic partition (projection kafka_ledger);
-- a message at or below it, with a broker timestamp not after it, was stored already and is
-- skipped. Every insert block of a table is one part, so the ledger moves with its rows or not at
-- all. The timestamp guard keeps a recreated topic (offsets from 0 again) from being skipped; the
-- platform's topics use broker-assigned LogAppendTime.

-- The old chain (0003, 0004) stops here; the Kafka engine tables stay, and their consumer groups
-- resume from their committed offsets once the new views are attached.
DROP VIEW IF EXISTS mv_otel_spans_map;
DROP VIEW IF EXISTS mv_otel_spans_accept;
DROP VIEW IF EXISTS mv_otel_spans_reject;
DROP VIEW IF EXISTS mv_agent_events_validate;
DROP VIEW IF EXISTS mv_agent_events_accept;
DROP VIEW IF EXISTS mv_agent_events_reject;
DROP TABLE IF EXISTS agent_events_validated;
DROP TABLE IF EXISTS otel_spans_mapped;

-- The Kafka tables again, polled so that a span is in ClickHouse within a fraction of a second
-- at any load: a stream ends (and its block is inserted) once a poll waits {{kafka_poll_timeout_ms}} ms
-- without a message, and an idle consumer looks again after as long. Their consumer groups keep
-- their offsets in Kafka, so recreating them neither re-reads nor skips a message.
DROP TABLE IF EXISTS kafka_otel_spans;
CREATE TABLE kafka_otel_spans
(
    payload String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{{kafka_brokers}}',
    kafka_topic_list = '{{spans_topic}}',
    kafka_group_name = '{{consumer_group_prefix}}_otel_spans',
    -- RawBLOB: one message is one row, so a payload that is not JSON reaches the mapping
    -- (and the dead letters) instead of stalling the consumer.
    kafka_format = 'RawBLOB',
    kafka_handle_error_mode = 'stream',
    kafka_num_consumers = {{kafka_num_consumers}},
    kafka_flush_interval_ms = {{kafka_flush_interval_ms}},
    kafka_poll_timeout_ms = {{kafka_poll_timeout_ms}},
    kafka_consumer_reschedule_ms = {{kafka_poll_timeout_ms}},
    kafka_max_block_size = 1024;

DROP TABLE IF EXISTS kafka_agent_events;
CREATE TABLE kafka_agent_events
(
    payload String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '{{kafka_brokers}}',
    kafka_topic_list = '{{events_topic}}',
    kafka_group_name = '{{consumer_group_prefix}}_agent_events',
    kafka_format = 'RawBLOB',
    kafka_handle_error_mode = 'stream',
    kafka_num_consumers = {{kafka_num_consumers}},
    kafka_flush_interval_ms = {{kafka_flush_interval_ms}},
    kafka_poll_timeout_ms = {{kafka_poll_timeout_ms}},
    kafka_consumer_reschedule_ms = {{kafka_poll_timeout_ms}},
    kafka_max_block_size = 65536;

-- The decisions made per span on ingest (and by the cost recompute, metrics_platform/prices/recompute.py),
-- as SQL functions so both run the same code; tests/test_span_decisions.py checks them.

-- A span that starts a request in its service: a root span, or a server/consumer span.
CREATE FUNCTION IF NOT EXISTS mp_is_request AS (parent_span_id, span_kind) ->
    parent_span_id = '' OR span_kind IN ('server', 'consumer');

-- request | agent | llm | tool | http | internal. A producer's hint wins (the platform's own
-- attribute, OpenLLMetry's traceloop.span.kind, OpenInference's span kind); then the GenAI
-- operation; then a model or tokens make an LLM call; a client span with HTTP attributes is an
-- HTTP call; a request is a root or server span; everything else is internal.
CREATE FUNCTION IF NOT EXISTS mp_span_kind AS
    (kind_hint, operation, tool, model, response_model, tokens, span_kind, is_http, parent_span_id) -> multiIf(
        kind_hint IN ('request', 'agent', 'llm', 'tool', 'http', 'internal'), CAST(kind_hint AS String),
        kind_hint = 'embedding', 'llm',
        operation = 'execute_tool' OR tool != '', 'tool',
        operation IN ('invoke_agent', 'create_agent'), 'agent',
        operation IN ('chat', 'text_completion', 'generate_content', 'embeddings', 'completion', 'responses')
            OR model != '' OR response_model != '' OR tokens > 0, 'llm',
        span_kind = 'client' AND is_http, 'http',
        mp_is_request(parent_span_id, span_kind), 'request',
        'internal');

-- The price entry of a call: the response model (the variant that served it) first, then the
-- requested one; each as sent, without a provider prefix ("openai/gpt-4o") and without a date
-- suffix ("-2026-01-15", "-20260115"); for the span's provider, then for any provider. '' = none.
CREATE FUNCTION IF NOT EXISTS mp_price_id AS (provider, model, response_model) ->
    arrayFirst(p -> p != '', arrayMap(
        m -> if(dictHas('model_alias_dict', (lower(provider), m)),
                dictGet('model_alias_dict', 'price_id', (lower(provider), m)),
                dictGetOrDefault('model_alias_dict', 'price_id', ('', m), '')),
        arrayFilter(m -> m != '', arrayDistinct(arrayFlatten(arrayMap(
            m -> [m, splitByChar('/', m)[-1],
                  replaceRegexpOne(splitByChar('/', m)[-1], '[-@](?:\\d{4}-\\d{2}-\\d{2}|\\d{8})$', '')],
            [lower(response_model), lower(model)]))))));

-- One unit price in force on `day`: the tier's when the call's input passes the tier start.
CREATE FUNCTION IF NOT EXISTS mp_unit_price AS (price_id, day, base, tier, tokens_prompt) ->
    coalesce(
        if(dictGet('model_price_dict', 'tier_start_tokens', tuple(price_id), day) > 0
               AND tokens_prompt > dictGet('model_price_dict', 'tier_start_tokens', tuple(price_id), day),
           dictGet('model_price_dict', tier, tuple(price_id), day), NULL),
        dictGet('model_price_dict', base, tuple(price_id), day));

-- USD of one call at the prices in force on `day`, to 1e-10; NULL when the model has no price.
-- Input tokens include cached ones and output tokens include reasoning ones (the GenAI
-- conventions); each part is billed at its own price, or at the input/output price if it has none.
CREATE FUNCTION IF NOT EXISTS mp_llm_cost AS
    (price_id, day, tokens_prompt, tokens_completion, tokens_cache_read, tokens_cache_write, tokens_reasoning) ->
    if(price_id = '' OR NOT dictHas('model_price_dict', tuple(price_id), day), NULL,
       toDecimal64((
           greatest(toInt64(tokens_prompt) - tokens_cache_read - tokens_cache_write, 0)
               * coalesce(mp_unit_price(price_id, day, 'input_per_mtok', 'tier_input_per_mtok', tokens_prompt), toDecimal128(0, 10))
           + toInt64(tokens_cache_read)
               * coalesce(mp_unit_price(price_id, day, 'cache_read_per_mtok', 'tier_cache_read_per_mtok', tokens_prompt),
                          mp_unit_price(price_id, day, 'input_per_mtok', 'tier_input_per_mtok', tokens_prompt), toDecimal128(0, 10))
           + toInt64(tokens_cache_write)
               * coalesce(mp_unit_price(price_id, day, 'cache_write_per_mtok', 'tier_cache_write_per_mtok', tokens_prompt),
                          mp_unit_price(price_id, day, 'input_per_mtok', 'tier_input_per_mtok', tokens_prompt), toDecimal128(0, 10))
           + greatest(toInt64(tokens_completion) - tokens_reasoning, 0)
               * coalesce(mp_unit_price(price_id, day, 'output_per_mtok', 'tier_output_per_mtok', tokens_prompt), toDecimal128(0, 10))
           + toInt64(tokens_reasoning)
               * coalesce(mp_unit_price(price_id, day, 'reasoning_per_mtok', 'reasoning_per_mtok', tokens_prompt),
                          mp_unit_price(price_id, day, 'output_per_mtok', 'tier_output_per_mtok', tokens_prompt), toDecimal128(0, 10))
       ) / 1000000, 10));

CREATE TABLE IF NOT EXISTS span_inbox
(
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3),
    source_topic       LowCardinality(String),
    source_partition   UInt32,
    source_offset      UInt64,
    kafka_ts           DateTime64(3, 'UTC'),
    ts                 DateTime64(3, 'UTC'),
    trace_id           String,
    span_id            String,
    parent_span_id     String,
    name               String,
    span_kind          LowCardinality(String),
    kind_hint          LowCardinality(String),
    service            LowCardinality(String),
    env                LowCardinality(String),
    agent              LowCardinality(String),
    operation          LowCardinality(String),
    model              LowCardinality(String),
    response_model     LowCardinality(String),
    provider           LowCardinality(String),
    route              LowCardinality(String),
    tool               LowCardinality(String),
    user_id_hash       String,
    status             LowCardinality(String),
    error_type         LowCardinality(String),
    latency_ms         UInt32,
    tokens_prompt      UInt32,
    tokens_completion  UInt32,
    tokens_cache_read  UInt32,
    tokens_cache_write UInt32,
    tokens_reasoning   UInt32,
    cost_reported_usd  Nullable(Decimal(18, 10)),
    is_http            Bool,
    attrs              String CODEC(ZSTD(1)),
    -- decided from the span's own attributes on arrival (the finalizer adds its ancestors' values)
    kind               LowCardinality(String),
    is_request         Bool,
    price_id           LowCardinality(String),
    cost_computed_usd  Decimal(18, 10),
    cost_usd           Decimal(18, 10),
    cost_source        LowCardinality(String),
    PROJECTION kafka_ledger
    (
        SELECT source_topic, source_partition, max(source_offset), max(kafka_ts)
        GROUP BY source_topic, source_partition
    )
)
ENGINE = MergeTree
-- One insert block has one ingested_at, so it is one partition and one part: the unit that is
-- stored, ledgered and finalized whole.
PARTITION BY toStartOfHour(ingested_at)
ORDER BY ingested_at
TTL toDateTime(ingested_at) + INTERVAL {{inbox_retention_hours}} HOUR DELETE
-- _block_number is assigned when a part is committed: the finalizer's commit-ordered cursor.
SETTINGS enable_block_number_column = 1, ttl_only_drop_parts = 1;

-- Dead letters get the same ledger, and a broker timestamp for its guard.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS kafka_ts DateTime64(3, 'UTC') AFTER offset;
ALTER TABLE dead_letters ADD PROJECTION IF NOT EXISTS kafka_ledger
(
    SELECT source_topic, partition, max(offset), max(kafka_ts) GROUP BY source_topic, partition
);
ALTER TABLE dead_letters MATERIALIZE PROJECTION kafka_ledger;
ALTER TABLE dead_letters_incoming ADD COLUMN IF NOT EXISTS kafka_ts DateTime64(3, 'UTC') AFTER offset;

-- The one scrub every rejected payload passes (rejects may come from any producer): values of
-- identity keys (flat JSON and OTLP attribute lists), e-mail addresses, bearer tokens, API keys,
-- card-like and phone-like numbers.
DROP VIEW IF EXISTS mv_dead_letters_scrub;
CREATE MATERIALIZED VIEW IF NOT EXISTS mv_dead_letters_scrub TO dead_letters AS
WITH
    '(?:user_id|user_email|email|enduser\\.id|enduser\\.email|user\\.id|user\\.email|user\\.name|gen_ai\\.request\\.user|gen_ai\\.user)' AS pii_keys
SELECT
    source_topic, partition, offset, kafka_ts, error,
    replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(
        payload,
        -- OTLP attribute lists: {"key":"user.id","value":{"stringValue":"..."}}
        concat('("key"\\s*:\\s*"', pii_keys, '"\\s*,\\s*"value"\\s*:\\s*)\\{[^}]*\\}'), '\\1{"stringValue":"[redacted]"}'),
        -- flat JSON: "user_id": "..." or a number
        concat('"(', pii_keys, ')"\\s*:\\s*("(?:[^"\\\\]|\\\\.)*"|-?[0-9.eE+-]+)'), '"\\1":"[redacted]"'),
        '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}', '[email redacted]'),
        '(?i)(bearer\\s+)[A-Za-z0-9._~+/=-]{8,}', '\\1[token redacted]'),
        '\\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|\\bAKIA[0-9A-Z]{16}\\b', '[key redacted]'),
        -- separated card numbers and international phone numbers; bare digit runs stay, since
        -- OTLP writes every timestamp as one
        '\\b\\d{4}[ -]\\d{4}[ -]\\d{4}[ -]\\d{1,7}\\b|\\+\\d[\\d .()-]{7,18}\\d', '[number redacted]') AS payload
FROM dead_letters_incoming;

CREATE TABLE IF NOT EXISTS spans_mapped
(
    ts                 DateTime64(3, 'UTC'),
    trace_id           String,
    span_id            String,
    parent_span_id     String,
    name               String,
    span_kind          String,
    kind_hint          String,
    service            String,
    env                String,
    agent              String,
    operation          String,
    model              String,
    response_model     String,
    provider           String,
    route              String,
    tool               String,
    user_id_hash       String,
    status             String,
    error_type         String,
    latency_ms         UInt32,
    tokens_prompt      UInt32,
    tokens_completion  UInt32,
    tokens_cache_read  UInt32,
    tokens_cache_write UInt32,
    tokens_reasoning   UInt32,
    cost_reported_usd  Nullable(Decimal(18, 10)),
    is_http            Bool,
    attrs              String,
    source_topic       String,
    partition          UInt32,
    offset             UInt64,
    kafka_ts           DateTime64(3, 'UTC'),
    reject_reason      String,
    raw                String
)
ENGINE = Null;

-- The views downstream of spans_mapped come first: ClickHouse starts streaming from a Kafka table
-- as soon as one view reads it, with the chain as it is at that moment; a view reading Kafka
-- created before its downstream would push the first messages into a chain that ends nowhere.

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_accept_spans TO span_inbox AS
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
            FROM span_inbox GROUP BY source_topic, source_partition
        ) AS ledger ON m.source_topic = ledger.source_topic AND m.partition = ledger.source_partition
        WHERE m.reject_reason = ''
          -- not already stored (see the ledger note at the top); no ledger row joins as 0 / 1970
          AND NOT (ledger.done_ts > toDateTime64(0, 3, 'UTC') AND m.offset <= ledger.done_offset
                   AND m.kafka_ts <= ledger.done_ts)
    )
);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_reject_spans TO dead_letters_incoming AS
SELECT m.source_topic AS source_topic, m.partition AS partition, m.offset AS offset, m.kafka_ts AS kafka_ts,
       m.reject_reason AS error, m.raw AS payload
FROM spans_mapped AS m
LEFT JOIN
(
    SELECT source_topic, partition, max(offset) AS done_offset, max(kafka_ts) AS done_ts
    FROM dead_letters GROUP BY source_topic, partition
) AS ledger ON m.source_topic = ledger.source_topic AND m.partition = ledger.partition
WHERE m.reject_reason != ''
  AND NOT (ledger.done_ts > toDateTime64(0, 3, 'UTC') AND m.offset <= ledger.done_offset AND m.kafka_ts <= ledger.done_ts);

-- OTLP JSON (the Collector's otlp_json encoding of ExportTraceServiceRequest) -> one row per span.
-- Each message is parsed once into typed arrays (a JSONExtract per attribute or field would parse
-- the same text dozens of times per span); attribute values come out as their JSON text, strings
-- unquoted, so a number, a bool or an array keeps its text and its kind is known. Three nested
-- SELECTs (parse, pick the attributes, decide) keep each expression computed once per span.
CREATE MATERIALIZED VIEW IF NOT EXISTS mv_map_otlp_spans TO spans_mapped AS
WITH
    ['service.name'] AS k_service,
    ['deployment.environment.name', 'deployment.environment', 'env'] AS k_env,
    ['agent', 'gen_ai.agent.name'] AS k_agent,
    ['gen_ai.operation.name', 'operation'] AS k_operation,
    ['model', 'gen_ai.request.model', 'gen_ai.response.model'] AS k_model,
    ['gen_ai.response.model', 'response_model'] AS k_response_model,
    ['provider', 'gen_ai.provider.name', 'gen_ai.system'] AS k_provider,
    ['route', 'http.route'] AS k_route,
    ['tool', 'gen_ai.tool.name'] AS k_tool,
    ['status'] AS k_status,
    ['error_type', 'error.type'] AS k_error_type,
    -- a producer's own classification: the platform's, OpenLLMetry's, OpenInference's
    ['metrics_platform.kind', 'traceloop.span.kind', 'openinference.span.kind'] AS k_kind,
    ['tokens_prompt', 'gen_ai.usage.input_tokens', 'gen_ai.usage.prompt_tokens', 'llm.usage.prompt_tokens'] AS k_tokens_prompt,
    ['tokens_completion', 'gen_ai.usage.output_tokens', 'gen_ai.usage.completion_tokens', 'llm.usage.completion_tokens'] AS k_tokens_completion,
    ['tokens_cache_read', 'gen_ai.usage.cache_read.input_tokens', 'gen_ai.usage.cache_read_input_tokens'] AS k_tokens_cache_read,
    ['tokens_cache_write', 'gen_ai.usage.cache_creation.input_tokens', 'gen_ai.usage.cache_creation_input_tokens'] AS k_tokens_cache_write,
    ['tokens_reasoning', 'gen_ai.usage.reasoning.output_tokens', 'gen_ai.usage.reasoning_tokens'] AS k_tokens_reasoning,
    ['cost_usd', 'gen_ai.usage.cost'] AS k_cost,
    arrayConcat(k_service, k_env, k_agent, k_operation, k_model, k_response_model, k_provider, k_route, k_tool,
                k_status, k_error_type, k_kind) AS string_keys,
    -- Identity keys never reach storage from this path even if a producer bypassed the Collector
    -- (which hashes user ids into user_id_hash and drops the rest, see deploy/otelcol).
    ['user_id', 'user_email', 'enduser.id', 'enduser.email', 'user.id', 'user.email', 'user.name',
     'gen_ai.request.user', 'gen_ai.user'] AS pii_keys,
    arrayConcat(string_keys, k_tokens_prompt, k_tokens_completion, k_tokens_cache_read, k_tokens_cache_write,
                k_tokens_reasoning, k_cost, ['user_id_hash'], pii_keys) AS mapped_keys,
    ['tokens_prompt', 'tokens_completion', 'tokens_cache_read', 'tokens_cache_write', 'tokens_reasoning'] AS count_names,
    -- a token count as its attribute text: '' when absent; bad unless a whole number in UInt32's range
    (t -> t != '' AND NOT (isFinite(toFloat64OrDefault(t, nan)) AND toFloat64OrDefault(t, nan) >= 0
                           AND toFloat64OrDefault(t, nan) <= 4294967295
                           AND toFloat64OrDefault(t, nan) = floor(toFloat64OrDefault(t, nan)))) AS bad_count,
    (t -> toUInt32(if(bad_count(t), 0, toFloat64OrZero(t)))) AS count_of,
    multiIf(kind_ IN ('1', 'SPAN_KIND_INTERNAL'), 'internal', kind_ IN ('2', 'SPAN_KIND_SERVER'), 'server',
            kind_ IN ('3', 'SPAN_KIND_CLIENT'), 'client', kind_ IN ('4', 'SPAN_KIND_PRODUCER'), 'producer',
            kind_ IN ('5', 'SPAN_KIND_CONSUMER'), 'consumer', '') AS span_kind_name,
    toDateTime64(fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC'), 3, 'UTC') AS ts_,
    intDiv(greatest(end_ns, start_ns) - start_ns, 1000000) AS latency_ms_,
    lower(a_status) AS status_attr,
    -- why the span cannot be stored, or ''
    multiIf(
        kafka_error != '', concat('kafka: ', kafka_error),
        NOT isValidUTF8(payload), 'payload is not valid UTF-8',
        NOT isValidJSON(payload), 'payload is not valid JSON',
        no_spans, 'no spans in payload (expected OTLP JSON resourceSpans[].scopeSpans[].spans[])',
        length(trace_id_) != 32 OR NOT match(trace_id_, '^[0-9a-f]+$'), 'span traceId is not 32 hex characters',
        length(span_id_) != 16 OR NOT match(span_id_, '^[0-9a-f]+$'), 'span spanId is not 16 hex characters',
        NOT match(parent_span_id_, '^([0-9a-f]{16})?$'), 'span parentSpanId is not empty or 16 hex characters',
        start_ns = 0, 'span has no startTimeUnixNano',
        end_ns < start_ns, 'span endTimeUnixNano is before startTimeUnixNano',
        ts_ < now64(3) - INTERVAL {{retention_days}} DAY,
            concat('span start ', toString(ts_), ' is older than the retention (', '{{retention_days}}', ' days)'),
        ts_ > now64(3) + INTERVAL {{max_future_seconds}} SECOND,
            concat('span start ', toString(ts_), ' is more than ', '{{max_future_seconds}}', ' s in the future'),
        latency_ms_ > 4294967295, 'span lasts longer than 4294967295 ms',
        a_service = '', 'span has no service.name',
        non_string_kv.1 != '', concat('attribute ', non_string_kv.1, ' must be a string, got ', non_string_kv.3),
        bad_count_at > 0,
            concat('token count ', count_names[bad_count_at], ' is not a whole number between 0 and 4294967295'),
        bad_cost, 'cost is not a number between 0 and 100000000',
        '') AS problem
SELECT
    ts_ AS ts,
    trace_id_ AS trace_id,
    span_id_ AS span_id,
    parent_span_id_ AS parent_span_id,
    if(span_name != '', span_name, concat(a_agent, ':', a_route)) AS name,
    span_kind_name AS span_kind,
    lower(a_kind) AS kind_hint,
    a_service AS service,
    a_env AS env,
    a_agent AS agent,
    a_operation AS operation,
    a_model AS model,
    a_response_model AS response_model,
    a_provider AS provider,
    a_route AS route,
    a_tool AS tool,
    lower(a_user_id_hash) AS user_id_hash,
    multiIf(status_attr IN ('ok', 'success', 'unset'), 'ok',
            status_attr != '', status_attr,
            span_failed, 'error',
            -- GenAI conventions mark a failed operation with error.type alone
            a_error_type != '', 'error',
            'ok') AS status,
    coalesce(nullIf(a_error_type, ''), if(span_failed, 'span_error', '')) AS error_type,
    toUInt32(least(latency_ms_, 4294967295)) AS latency_ms,
    count_of(counts[1]) AS tokens_prompt,
    count_of(counts[2]) AS tokens_completion,
    count_of(counts[3]) AS tokens_cache_read,
    count_of(counts[4]) AS tokens_cache_write,
    count_of(counts[5]) AS tokens_reasoning,
    -- parsed from the attribute's text, so 0.3 stays 0.3 (a float conversion would not)
    if(a_cost = '' OR bad_cost, NULL, toDecimal128OrNull(a_cost, 10)) AS cost_reported_usd,
    is_http_ AS is_http,
    attrs_ AS attrs,
    topic_ AS source_topic,
    partition_ AS partition,
    offset_ AS offset,
    kafka_ts_ AS kafka_ts,
    -- which span of the message, when the message itself was fine
    if(problem = '' OR no_spans, problem, concat(problem, ' (span ', span_id_text, ')')) AS reject_reason,
    -- a rejected span is kept with its whole message, which a fixed producer can send again
    if(reject_reason = '', '', if(kafka_error != '', raw_message, payload)) AS raw
FROM
(
    -- pick the attributes: the first non-empty of several names (the platform's own first, then
    -- the GenAI conventions and what widely used instrumentations emit), span before resource
    WITH
        (names -> arrayFirst(x -> x != '', arrayConcat(arrayMap(n -> span_attrs[n], names),
                                                       arrayMap(n -> resource_attrs[n], names)))) AS pick
    SELECT
        *,
        pick(k_service) AS a_service, pick(k_env) AS a_env, pick(k_agent) AS a_agent,
        pick(k_operation) AS a_operation, pick(k_model) AS a_model, pick(k_response_model) AS a_response_model,
        pick(k_provider) AS a_provider, pick(k_route) AS a_route, pick(k_tool) AS a_tool,
        pick(k_status) AS a_status, pick(k_error_type) AS a_error_type, pick(k_kind) AS a_kind,
        pick(['user_id_hash']) AS a_user_id_hash, pick(k_cost) AS a_cost,
        -- a reported cost that is not a finite amount from 0 to 1e8 USD
        pick(k_cost) != '' AND NOT (isFinite(toFloat64OrDefault(pick(k_cost), nan))
                                    AND toFloat64OrDefault(pick(k_cost), nan) >= 0
                                    AND toFloat64OrDefault(pick(k_cost), nan) < 100000000) AS bad_cost,
        [pick(k_tokens_prompt), pick(k_tokens_completion), pick(k_tokens_cache_read), pick(k_tokens_cache_write),
         pick(k_tokens_reasoning)] AS counts,
        arrayFirstIndex(t -> bad_count(t), counts) AS bad_count_at,
        -- a string column fed from a non-string attribute (array, map, number) would store its text
        -- as if it were a name: such spans are rejected instead
        arrayFirst(kv -> kv.3 NOT IN ('stringValue', '') AND has(string_keys, kv.1), arrayConcat(span_kvs, resource_kvs))
            AS non_string_kv,
        arrayExists(k -> mapContains(span_attrs, k), ['http.request.method', 'http.method', 'url.full', 'http.url'])
            AS is_http_,
        toJSONString(mapFilter((k, v) -> NOT has(mapped_keys, k), mapUpdate(resource_attrs, span_attrs))) AS attrs_
    FROM
    (
        SELECT
            *,
            mapFromArrays(arrayMap(x -> x.1, span_kvs), arrayMap(x -> x.2, span_kvs)) AS span_attrs,
            mapFromArrays(arrayMap(x -> x.1, resource_kvs), arrayMap(x -> x.2, resource_kvs)) AS resource_attrs
        FROM
        (
            -- parse: one attribute as (key, value text, kind); an array as a plain JSON array of its
            -- elements, e.g. ["stop","content_filter"]
            WITH
                (kv -> (kv.1,
                        ifNull(multiIf(kv.2.1 IS NOT NULL, kv.2.1, kv.2.2 IS NOT NULL, kv.2.2,
                                kv.2.3 IS NOT NULL, kv.2.3, kv.2.4 IS NOT NULL, kv.2.4,
                                kv.2.5 IS NOT NULL, toJSONString(arrayMap(v -> coalesce(v.1, v.2, v.3, v.4, ''),
                                    JSONExtract(assumeNotNull(kv.2.5), 'values',
                                        'Array(Tuple(Nullable(String), Nullable(String), Nullable(String), Nullable(String)))'))),
                                coalesce(kv.2.6, kv.2.7, '')), ''),
                        multiIf(kv.2.1 IS NOT NULL, 'stringValue', kv.2.2 IS NOT NULL, 'intValue',
                                kv.2.3 IS NOT NULL, 'doubleValue', kv.2.4 IS NOT NULL, 'boolValue',
                                kv.2.5 IS NOT NULL, 'arrayValue', kv.2.6 IS NOT NULL, 'kvlistValue',
                                kv.2.7 IS NOT NULL, 'bytesValue', ''))) AS attribute
            SELECT
                payload,
                _topic AS topic_, _partition AS partition_, _offset AS offset_, _timestamp_ms AS kafka_ts_,
                _error AS kafka_error, _raw_message AS raw_message,
                empty(ss.spans) AS no_spans,
                lower(sp.traceId) AS trace_id_,
                lower(sp.spanId) AS span_id_,
                sp.spanId AS span_id_text,
                lower(sp.parentSpanId) AS parent_span_id_,
                sp.name AS span_name,
                sp.kind AS kind_,
                toUInt64OrZero(sp.startTimeUnixNano) AS start_ns,
                toUInt64OrZero(sp.endTimeUnixNano) AS end_ns,
                -- OTLP StatusCode ERROR: an enum number in otlp_json, a name in protobuf's JSON printer
                sp.status.code IN ('2', 'STATUS_CODE_ERROR') AS span_failed,
                arrayMap(attribute, sp.attributes) AS span_kvs,
                arrayMap(attribute, rs.resource.attributes) AS resource_kvs
            FROM kafka_otel_spans
            LEFT ARRAY JOIN JSONExtract(payload, 'resourceSpans',
                'Array(Tuple(resource Tuple(attributes Array(Tuple(key String, value Tuple(stringValue Nullable(String),
                     intValue Nullable(String), doubleValue Nullable(String), boolValue Nullable(String),
                     arrayValue Nullable(String), kvlistValue Nullable(String), bytesValue Nullable(String))))),
                   scopeSpans Array(Tuple(spans Array(Tuple(traceId String, spanId String, parentSpanId String,
                     name String, kind String, startTimeUnixNano String, endTimeUnixNano String,
                     attributes Array(Tuple(key String, value Tuple(stringValue Nullable(String),
                       intValue Nullable(String), doubleValue Nullable(String), boolValue Nullable(String),
                       arrayValue Nullable(String), kvlistValue Nullable(String), bytesValue Nullable(String)))),
                     status Tuple(code Nullable(String), message Nullable(String))))))))') AS rs
            LEFT ARRAY JOIN rs.scopeSpans AS ss
            LEFT ARRAY JOIN ss.spans AS sp
        )
    )
);

-- The flat event contract (schemas/agent_event.schema.json): one JSON object per message, as
-- backfills and the original design's history write it.
CREATE MATERIALIZED VIEW IF NOT EXISTS mv_map_flat_events TO spans_mapped AS
WITH
    ['service', 'name', 'env', 'agent', 'operation', 'model', 'response_model', 'provider', 'route', 'tool',
     'user_id_hash', 'status', 'error_type', 'kind', 'span_kind', 'trace_id', 'span_id', 'parent_span_id'] AS string_fields,
    ['tokens_prompt', 'tokens_completion', 'tokens_cache_read', 'tokens_cache_write', 'tokens_reasoning'] AS token_fields,
    ['latency_ms', 'cost_usd'] AS amount_fields,
    -- ts: RFC 3339, ClickHouse's text form ('2026-11-24 09:08:44.071', UTC) or epoch milliseconds.
    multiIf(JSONType(payload, 'ts') = 'String',
                parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'ts'), 3, 'UTC'),
            JSONType(payload, 'ts') IN ('Int64', 'UInt64'),
                fromUnixTimestamp64Milli(JSONExtractInt(payload, 'ts'), 'UTC'),
            NULL) AS ts_,
    lower(JSONExtractString(payload, 'trace_id')) AS trace_id_,
    lower(JSONExtractString(payload, 'span_id')) AS span_id_,
    lower(JSONExtractString(payload, 'parent_span_id')) AS parent_span_id_,
    lower(JSONExtractString(payload, 'user_id_hash')) AS user_id_hash_,
    JSONType(payload, 'attrs') AS attrs_type,
    JSONExtractRaw(payload, 'attrs') AS attrs_raw,
    lower(JSONExtractString(payload, 'status')) AS status_,
    (k -> JSONType(payload, k) IN ('Int64', 'UInt64', 'Double')) AS is_number,
    (k -> JSONExtract(payload, k, 'Float64')) AS number,
    arrayFirst(k -> JSONType(payload, k) NOT IN ('Null', 'String'), string_fields) AS bad_string,
    arrayFirst(k -> JSONHas(payload, k) AND NOT (is_number(k) AND number(k) >= 0 AND number(k) <= 4294967295
                                                 AND number(k) = floor(number(k))), token_fields) AS bad_token,
    arrayFirst(k -> JSONHas(payload, k) AND JSONType(payload, k) != 'Null'
                    AND NOT (is_number(k) AND isFinite(number(k)) AND number(k) >= 0), amount_fields) AS bad_amount,
    if(JSONHas(payload, 'cost_usd') AND JSONType(payload, 'cost_usd') != 'Null', JSONExtract(payload, 'cost_usd', 'Float64'), NULL) AS cost_
SELECT
    assumeNotNull(ts_) AS ts,
    trace_id_ AS trace_id,
    span_id_ AS span_id,
    parent_span_id_ AS parent_span_id,
    JSONExtractString(payload, 'name') AS name,
    lower(JSONExtractString(payload, 'span_kind')) AS span_kind,
    lower(JSONExtractString(payload, 'kind')) AS kind_hint,
    JSONExtractString(payload, 'service') AS service,
    JSONExtractString(payload, 'env') AS env,
    JSONExtractString(payload, 'agent') AS agent,
    JSONExtractString(payload, 'operation') AS operation,
    JSONExtractString(payload, 'model') AS model,
    JSONExtractString(payload, 'response_model') AS response_model,
    JSONExtractString(payload, 'provider') AS provider,
    JSONExtractString(payload, 'route') AS route,
    JSONExtractString(payload, 'tool') AS tool,
    user_id_hash_ AS user_id_hash,
    if(status_ IN ('', 'success', 'unset'), 'ok', status_) AS status,
    JSONExtractString(payload, 'error_type') AS error_type,
    toUInt32(if(bad_amount = '' AND number('latency_ms') <= 4294967295, number('latency_ms'), 0)) AS latency_ms,
    JSONExtract(payload, 'tokens_prompt', 'UInt32') AS tokens_prompt,
    JSONExtract(payload, 'tokens_completion', 'UInt32') AS tokens_completion,
    JSONExtract(payload, 'tokens_cache_read', 'UInt32') AS tokens_cache_read,
    JSONExtract(payload, 'tokens_cache_write', 'UInt32') AS tokens_cache_write,
    JSONExtract(payload, 'tokens_reasoning', 'UInt32') AS tokens_reasoning,
    if(cost_ IS NULL OR bad_amount != '', NULL, toDecimal128OrNull(JSONExtractRaw(payload, 'cost_usd'), 10)) AS cost_reported_usd,
    false AS is_http,
    if(attrs_type = 'Object', attrs_raw, '{}') AS attrs,
    _topic AS source_topic,
    _partition AS partition,
    _offset AS offset,
    _timestamp_ms AS kafka_ts,
    multiIf(
        length(_error) > 0, concat('kafka: ', _error),
        NOT isValidUTF8(payload), 'payload is not valid UTF-8',
        NOT isValidJSON(payload) OR JSONType(payload) != 'Object', 'payload is not a JSON object',
        ts_ IS NULL, 'ts is missing or not an RFC 3339 timestamp / epoch milliseconds',
        ts_ < now64(3) - INTERVAL {{retention_days}} DAY,
            concat('ts ', toString(ts_), ' is older than the retention (', '{{retention_days}}', ' days)'),
        ts_ > now64(3) + INTERVAL {{max_future_seconds}} SECOND,
            concat('ts ', toString(ts_), ' is more than ', '{{max_future_seconds}}', ' s in the future'),
        bad_string != '', concat(bad_string, ' must be a string'),
        lower(JSONExtractString(payload, 'kind')) NOT IN ('', 'request', 'agent', 'llm', 'tool', 'http', 'internal'),
            'kind must be one of request, agent, llm, tool, http, internal',
        lower(JSONExtractString(payload, 'span_kind')) NOT IN ('', 'internal', 'server', 'client', 'producer', 'consumer'),
            'span_kind must be one of internal, server, client, producer, consumer',
        length(trace_id_) != 32 OR NOT match(trace_id_, '^[0-9a-f]+$'), 'trace_id is not 32 hex characters',
        length(span_id_) != 16 OR NOT match(span_id_, '^[0-9a-f]+$'), 'span_id is not 16 hex characters',
        NOT match(parent_span_id_, '^([0-9a-f]{16})?$'), 'parent_span_id is not empty or 16 hex characters',
        JSONExtractString(payload, 'service') = '', 'service is missing or empty',
        NOT match(user_id_hash_, '^([0-9a-f]{32,128})?$'),
            'user_id_hash is not a hex digest of 32 to 128 characters (a keyed hash of the user id)',
        bad_token != '', concat(bad_token, ' must be a whole number between 0 and 4294967295'),
        bad_amount != '', concat(bad_amount, ' must be a finite number >= 0'),
        number('latency_ms') > 4294967295, 'latency_ms must be at most 4294967295',
        cost_ IS NOT NULL AND cost_ >= 100000000, 'cost_usd must be below 100000000',
        attrs_type NOT IN ('Null', 'Object'), 'attrs must be a JSON object',
        -- identity keys anywhere in the event or nested in attrs (as a key or a dotted path)
        match(payload, '"(?:user_id|user_email|enduser\\.id|enduser\\.email|user\\.id|user\\.email|gen_ai\\.request\\.user|gen_ai\\.user)"\\s*:')
            OR match(payload, '"(?:enduser|user)"\\s*:\\s*\\{[^{}]*"(?:id|email)"\\s*:'),
            'raw user identifiers are not accepted (user_id, user_email, enduser.id, user.id, user.email, gen_ai.user, gen_ai.request.user, nested or not): send user_id_hash',
        '') AS reject_reason,
    if(reject_reason = '', '', if(length(_error) > 0, _raw_message, payload)) AS raw
FROM kafka_agent_events;
