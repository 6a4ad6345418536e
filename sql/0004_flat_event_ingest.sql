-- Streaming path for the flat event contract (schemas/agent_event.schema.json): one JSON object
-- per message on the events topic, already in agent_events columns. Backfills and producers that
-- do not speak OTLP use it. Same shape as the OTLP path: validate once, route twice.

CREATE TABLE IF NOT EXISTS kafka_agent_events
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
    kafka_max_block_size = 65536;

CREATE TABLE IF NOT EXISTS agent_events_validated AS otel_spans_mapped ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_agent_events_validate TO agent_events_validated AS
WITH
    (k -> JSONType(payload, k) IN ('Null', 'Int64', 'UInt64', 'Double')) AS numeric_or_absent,
    (k -> JSONType(payload, k) IN ('Null', 'String')) AS string_or_absent,
    multiIf(JSONType(payload, 'ts') = 'String',
                parseDateTime64BestEffortOrNull(JSONExtractString(payload, 'ts'), 3, 'UTC'),
            JSONType(payload, 'ts') IN ('Int64', 'UInt64'),
                fromUnixTimestamp64Milli(JSONExtractInt(payload, 'ts'), 'UTC'),
            NULL) AS ts_,
    lower(JSONExtractString(payload, 'trace_id')) AS trace_id_,
    lower(JSONExtractString(payload, 'span_id')) AS span_id_,
    lower(JSONExtractString(payload, 'user_id_hash')) AS user_id_hash_,
    JSONType(payload, 'attrs') AS attrs_type,
    JSONExtractKeys(payload, 'attrs') AS attrs_keys,
    lower(JSONExtractString(payload, 'status')) AS status_
SELECT
    assumeNotNull(ts_) AS ts,
    trace_id_ AS trace_id,
    span_id_ AS span_id,
    lower(JSONExtractString(payload, 'parent_span_id')) AS parent_span_id,
    JSONExtractString(payload, 'name') AS name,
    JSONExtractString(payload, 'service') AS service,
    JSONExtractString(payload, 'env') AS env,
    JSONExtractString(payload, 'agent') AS agent,
    JSONExtractString(payload, 'operation') AS operation,
    JSONExtractString(payload, 'model') AS model,
    JSONExtractString(payload, 'provider') AS provider,
    JSONExtractString(payload, 'route') AS route,
    user_id_hash_ AS user_id_hash,
    if(status_ IN ('', 'success'), 'ok', status_) AS status,
    JSONExtractString(payload, 'error_type') AS error_type,
    toUInt32(JSONExtract(payload, 'latency_ms', 'Float64')) AS latency_ms,
    JSONExtract(payload, 'tokens_prompt', 'UInt32') AS tokens_prompt,
    JSONExtract(payload, 'tokens_completion', 'UInt32') AS tokens_completion,
    toDecimal64OrZero(toString(round(JSONExtract(payload, 'cost_usd', 'Float64'), 6)), 6) AS cost_usd,
    if(attrs_type = 'Object', JSONExtractRaw(payload, 'attrs'), '{}') AS attrs,
    _topic AS source_topic,
    _partition AS partition,
    _offset AS offset,
    multiIf(
        length(_error) > 0, concat('kafka: ', _error),
        NOT isValidJSON(payload) OR JSONType(payload) != 'Object', 'payload is not a JSON object',
        ts_ IS NULL, 'ts is missing or not an RFC 3339 timestamp / epoch milliseconds',
        length(trace_id_) != 32 OR NOT match(trace_id_, '^[0-9a-f]+$'), 'trace_id is not 32 hex characters',
        length(span_id_) != 16 OR NOT match(span_id_, '^[0-9a-f]+$'), 'span_id is not 16 hex characters',
        JSONExtractString(payload, 'service') = '', 'service is missing or empty',
        NOT string_or_absent('user_id_hash') OR NOT match(user_id_hash_, '^([0-9a-f]{64})?$'),
            'user_id_hash is not 64 hex characters (keyed SHA-256)',
        JSONHas(payload, 'user_id') OR JSONHas(payload, 'user_email')
            OR has(attrs_keys, 'user_id') OR has(attrs_keys, 'user_email'),
            'raw user_id/user_email are not accepted: send user_id_hash',
        NOT (numeric_or_absent('latency_ms') AND numeric_or_absent('tokens_prompt')
             AND numeric_or_absent('tokens_completion') AND numeric_or_absent('cost_usd')),
            'latency_ms, tokens_prompt, tokens_completion and cost_usd must be numbers',
        JSONExtract(payload, 'latency_ms', 'Float64') < 0 OR JSONExtract(payload, 'tokens_prompt', 'Int64') < 0
            OR JSONExtract(payload, 'tokens_completion', 'Int64') < 0 OR JSONExtract(payload, 'cost_usd', 'Float64') < 0,
            'latency_ms, tokens_prompt, tokens_completion and cost_usd must not be negative',
        attrs_type NOT IN ('Null', 'Object'), 'attrs must be a JSON object',
        '') AS reject_reason,
    if(reject_reason = '', '', if(length(_error) > 0, _raw_message, payload)) AS raw
FROM kafka_agent_events;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_agent_events_accept TO agent_events AS
SELECT
    ts, trace_id, span_id, parent_span_id, name, service, env, agent, operation, model, provider,
    route, user_id_hash, status, error_type, latency_ms, tokens_prompt, tokens_completion,
    cost_usd, attrs
FROM agent_events_validated
WHERE reject_reason = '';

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_agent_events_reject TO dead_letters_incoming AS
SELECT source_topic, partition, offset, reject_reason AS error, raw AS payload
FROM agent_events_validated
WHERE reject_reason != '';
