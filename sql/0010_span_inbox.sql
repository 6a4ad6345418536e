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

-- OTLP JSON (the Collector's otlp_json encoding of ExportTraceServiceRequest) -> one row per span.
CREATE MATERIALIZED VIEW IF NOT EXISTS mv_map_otlp_spans TO spans_mapped AS
WITH
    -- OTLP attribute values are one-key objects ({"stringValue": ..}, {"intValue": "42"}, ...):
    -- strings unquoted, other scalars as their JSON text, arrays ({"arrayValue": {"values":
    -- [...]}}) as a plain JSON array of their elements, e.g. ["stop","content_filter"].
    (v -> if(JSONType(v, 1) = 'String', JSONExtractString(v, 1), JSONExtractRaw(v, 1))) AS otlp_scalar,
    (kv -> if(JSONHas(JSONExtractRaw(kv, 'value'), 'arrayValue'),
              toJSONString(arrayMap(otlp_scalar, JSONExtractArrayRaw(JSONExtractRaw(kv, 'value'), 'arrayValue', 'values'))),
              otlp_scalar(JSONExtractRaw(kv, 'value')))) AS otlp_value,
    (kvs -> mapFromArrays(arrayMap(kv -> JSONExtractString(kv, 'key'), kvs), arrayMap(otlp_value, kvs))) AS to_map,
    JSONExtractArrayRaw(sp, 'attributes') AS span_kvs,
    JSONExtractArrayRaw(rs, 'resource', 'attributes') AS resource_kvs,
    to_map(span_kvs) AS span_attrs,
    to_map(resource_kvs) AS resource_attrs,
    -- The first non-empty of several attribute names (the platform's own names first, then the
    -- OpenTelemetry GenAI conventions and what widely used instrumentations emit), looking at the
    -- span before its resource.
    (names -> arrayFirst(x -> x != '', arrayConcat(arrayMap(n -> span_attrs[n], names),
                                                   arrayMap(n -> resource_attrs[n], names)))) AS pick,
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
    arrayConcat(k_tokens_prompt, k_tokens_completion, k_tokens_cache_read, k_tokens_cache_write, k_tokens_reasoning) AS token_keys,
    -- Identity keys never reach storage from this path even if a producer bypassed the Collector
    -- (which hashes user ids into user_id_hash and drops the rest, see deploy/otelcol).
    ['user_id', 'user_email', 'enduser.id', 'enduser.email', 'user.id', 'user.email', 'user.name',
     'gen_ai.request.user', 'gen_ai.user'] AS pii_keys,
    arrayConcat(string_keys, token_keys, k_cost, ['user_id_hash'], pii_keys) AS mapped_keys,
    -- A string column fed from a non-string attribute (array, map, number) would store its text as
    -- if it were a name: such spans are rejected instead.
    arrayFirst(kv -> has(string_keys, JSONExtractString(kv, 'key'))
                     AND JSONExtractKeys(JSONExtractRaw(kv, 'value'))[1] NOT IN ('stringValue', ''),
               arrayConcat(span_kvs, resource_kvs)) AS non_string_kv,
    -- A number attribute: the first present of `names`; NULL when absent, NaN when not a number.
    (names -> if(pick(names) = '', NULL, toFloat64OrDefault(pick(names), nan))) AS number,
    (x -> x IS NOT NULL AND NOT (isFinite(x) AND x >= 0 AND x <= 4294967295 AND x = floor(x))) AS bad_count,
    (names -> toUInt32(if(bad_count(number(names)), 0, ifNull(number(names), 0)))) AS count_of,
    number(k_cost) AS cost_,
    JSONExtract(sp, 'startTimeUnixNano', 'UInt64') AS start_ns,
    JSONExtract(sp, 'endTimeUnixNano', 'UInt64') AS end_ns,
    toDateTime64(fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC'), 3, 'UTC') AS ts_,
    JSONExtractRaw(sp, 'status', 'code') IN ('2', '"STATUS_CODE_ERROR"') AS span_failed,
    lower(pick(k_status)) AS status_attr,
    lower(JSONExtractString(sp, 'traceId')) AS trace_id_,
    lower(JSONExtractString(sp, 'spanId')) AS span_id_,
    lower(JSONExtractString(sp, 'parentSpanId')) AS parent_span_id_,
    -- OTLP SpanKind: an enum number in otlp_json, a name in protobuf's generic JSON printer.
    JSONExtractRaw(sp, 'kind') AS kind_raw,
    multiIf(kind_raw IN ('1', '"SPAN_KIND_INTERNAL"'), 'internal', kind_raw IN ('2', '"SPAN_KIND_SERVER"'), 'server',
            kind_raw IN ('3', '"SPAN_KIND_CLIENT"'), 'client', kind_raw IN ('4', '"SPAN_KIND_PRODUCER"'), 'producer',
            kind_raw IN ('5', '"SPAN_KIND_CONSUMER"'), 'consumer', '') AS span_kind_,
    intDiv(greatest(end_ns, start_ns) - start_ns, 1000000) AS latency_ms_
SELECT
    ts_ AS ts,
    trace_id_ AS trace_id,
    span_id_ AS span_id,
    parent_span_id_ AS parent_span_id,
    if(JSONExtractString(sp, 'name') != '', JSONExtractString(sp, 'name'),
       concat(pick(k_agent), ':', pick(k_route))) AS name,
    span_kind_ AS span_kind,
    lower(pick(k_kind)) AS kind_hint,
    pick(k_service) AS service,
    pick(k_env) AS env,
    pick(k_agent) AS agent,
    pick(k_operation) AS operation,
    pick(k_model) AS model,
    pick(k_response_model) AS response_model,
    pick(k_provider) AS provider,
    pick(k_route) AS route,
    pick(k_tool) AS tool,
    lower(pick(['user_id_hash'])) AS user_id_hash,
    multiIf(status_attr IN ('ok', 'success', 'unset'), 'ok',
            status_attr != '', status_attr,
            span_failed, 'error',
            -- GenAI conventions mark a failed operation with error.type alone
            pick(k_error_type) != '', 'error',
            'ok') AS status,
    coalesce(nullIf(pick(k_error_type), ''), if(span_failed, 'span_error', '')) AS error_type,
    toUInt32(least(latency_ms_, 4294967295)) AS latency_ms,
    count_of(k_tokens_prompt) AS tokens_prompt,
    count_of(k_tokens_completion) AS tokens_completion,
    count_of(k_tokens_cache_read) AS tokens_cache_read,
    count_of(k_tokens_cache_write) AS tokens_cache_write,
    count_of(k_tokens_reasoning) AS tokens_reasoning,
    -- parsed from the attribute's text, so 0.3 stays 0.3 (a float conversion would not)
    if(cost_ IS NULL OR NOT isFinite(cost_), NULL, toDecimal128OrNull(pick(k_cost), 10)) AS cost_reported_usd,
    arrayExists(k -> mapContains(span_attrs, k), ['http.request.method', 'http.method', 'url.full', 'http.url']) AS is_http,
    toJSONString(mapFilter((k, v) -> NOT has(mapped_keys, k), mapUpdate(resource_attrs, span_attrs))) AS attrs,
    _topic AS source_topic,
    _partition AS partition,
    _offset AS offset,
    _timestamp_ms AS kafka_ts,
    multiIf(
        length(_error) > 0, concat('kafka: ', _error),
        NOT isValidUTF8(payload), 'payload is not valid UTF-8',
        NOT isValidJSON(payload), 'payload is not valid JSON',
        sp = '', 'no spans in payload (expected OTLP JSON resourceSpans[].scopeSpans[].spans[])',
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
        pick(k_service) = '', 'span has no service.name',
        non_string_kv != '',
            concat('attribute ', JSONExtractString(non_string_kv, 'key'), ' must be a string, got ',
                   JSONExtractKeys(JSONExtractRaw(non_string_kv, 'value'))[1]),
        arrayExists(k -> bad_count(number([k])), token_keys),
            concat('token count ', arrayFirst(k -> bad_count(number([k])), token_keys),
                   ' is not a whole number between 0 and 4294967295'),
        cost_ IS NOT NULL AND NOT (isFinite(cost_) AND cost_ >= 0 AND cost_ < 100000000),
            'cost is not a number between 0 and 100000000',
        '') AS reject_reason,
    if(reject_reason = '', '', if(sp = '', if(length(_error) > 0, _raw_message, payload), sp)) AS raw
FROM kafka_otel_spans
LEFT ARRAY JOIN JSONExtractArrayRaw(payload, 'resourceSpans') AS rs
LEFT ARRAY JOIN JSONExtractArrayRaw(rs, 'scopeSpans') AS ss
LEFT ARRAY JOIN JSONExtractArrayRaw(ss, 'spans') AS sp;

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

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_accept_spans TO span_inbox AS
SELECT
    m.source_topic AS source_topic, m.partition AS source_partition, m.offset AS source_offset, m.kafka_ts AS kafka_ts,
    ts, trace_id, span_id, parent_span_id, name, span_kind, kind_hint, service, env, agent, operation, model,
    response_model, provider, route, tool, user_id_hash, status, error_type, latency_ms, tokens_prompt,
    tokens_completion, tokens_cache_read, tokens_cache_write, tokens_reasoning, cost_reported_usd, is_http, attrs
FROM spans_mapped AS m
LEFT JOIN
(
    SELECT source_topic, source_partition, max(source_offset) AS done_offset, max(kafka_ts) AS done_ts
    FROM span_inbox GROUP BY source_topic, source_partition
) AS ledger ON m.source_topic = ledger.source_topic AND m.partition = ledger.source_partition
WHERE m.reject_reason = ''
  -- not already stored (see the ledger note at the top); no ledger row joins as 0 / 1970
  AND NOT (ledger.done_ts > toDateTime64(0, 3, 'UTC') AND m.offset <= ledger.done_offset AND m.kafka_ts <= ledger.done_ts);

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
