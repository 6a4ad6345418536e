-- Streaming path for the Collector's topic: nested OTLP JSON (ExportTraceServiceRequest) in,
-- one agent_events row per span out. This is the one OTLP-to-row mapping of the platform; it runs
-- inside ClickHouse so the hot path has no per-event Python.
--
-- kafka_otel_spans -> mv_otel_spans_map -> otel_spans_mapped (Null engine, holds nothing)
--                                           |-> mv_otel_spans_accept -> agent_events
--                                           `-> mv_otel_spans_reject -> dead_letters
-- Mapping once and routing twice keeps the accept and reject conditions from drifting apart.

CREATE TABLE IF NOT EXISTS kafka_otel_spans
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
    -- More consumers than partitions or cores sit idle (the original design ran 4 on 3).
    kafka_num_consumers = {{kafka_num_consumers}},
    kafka_flush_interval_ms = {{kafka_flush_interval_ms}},
    kafka_max_block_size = 1024;

CREATE TABLE IF NOT EXISTS otel_spans_mapped
(
    ts                DateTime64(3, 'UTC'),
    trace_id          String,
    span_id           String,
    parent_span_id    String,
    name              String,
    service           String,
    env               String,
    agent             String,
    operation         String,
    model             String,
    provider          String,
    route             String,
    user_id_hash      String,
    status            String,
    error_type        String,
    latency_ms        UInt32,
    tokens_prompt     UInt32,
    tokens_completion UInt32,
    cost_usd          Decimal(12, 6),
    attrs             String,
    source_topic      String,
    partition         UInt32,
    offset            UInt64,
    reject_reason     String,
    raw               String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_otel_spans_map TO otel_spans_mapped AS
WITH
    -- OTLP attribute values are one-key objects ({"stringValue": ..}, {"intValue": "42"}, ...):
    -- keep strings unquoted, scalars as their JSON text, and arrays ({"arrayValue": {"values":
    -- [...]}}) as a plain JSON array of their elements, e.g. ["stop","content_filter"].
    (v -> if(JSONType(v, 1) = 'String', JSONExtractString(v, 1), JSONExtractRaw(v, 1))) AS otlp_scalar,
    (kv -> if(JSONHas(JSONExtractRaw(kv, 'value'), 'arrayValue'),
              toJSONString(arrayMap(otlp_scalar, JSONExtractArrayRaw(JSONExtractRaw(kv, 'value'), 'arrayValue', 'values'))),
              otlp_scalar(JSONExtractRaw(kv, 'value')))) AS otlp_value,
    (kvs -> mapFromArrays(arrayMap(kv -> JSONExtractString(kv, 'key'), kvs), arrayMap(otlp_value, kvs))) AS to_map,
    to_map(JSONExtractArrayRaw(sp, 'attributes')) AS span_attrs,
    to_map(JSONExtractArrayRaw(rs, 'resource', 'attributes')) AS resource_attrs,
    -- The first non-empty of several attribute names (the platform's own names first, then the
    -- OpenTelemetry GenAI semantic conventions), looking at the span before its resource.
    (names -> arrayFirst(x -> x != '', arrayConcat(arrayMap(n -> span_attrs[n], names),
                                                   arrayMap(n -> resource_attrs[n], names)))) AS pick,
    mapUpdate(resource_attrs, span_attrs) AS a,
    JSONExtract(sp, 'startTimeUnixNano', 'UInt64') AS start_ns,
    JSONExtract(sp, 'endTimeUnixNano', 'UInt64') AS end_ns,
    JSONExtractRaw(sp, 'status', 'code') IN ('2', '"STATUS_CODE_ERROR"') AS span_failed,
    lower(pick(['status'])) AS status_attr,
    lower(JSONExtractString(sp, 'traceId')) AS trace_id_,
    lower(JSONExtractString(sp, 'spanId')) AS span_id_,
    [
        'service.name', 'deployment.environment', 'deployment.environment.name',
        'agent', 'gen_ai.agent.name', 'gen_ai.operation.name',
        'model', 'gen_ai.request.model', 'provider', 'gen_ai.provider.name', 'gen_ai.system',
        'route', 'http.route', 'user_id_hash', 'status', 'error_type', 'error.type',
        'tokens_prompt', 'gen_ai.usage.input_tokens', 'tokens_completion', 'gen_ai.usage.output_tokens',
        'cost_usd', 'gen_ai.usage.cost',
        -- raw identifiers never reach storage, even if a producer bypassed the Collector
        'user_id', 'user_email'
    ] AS mapped_keys
SELECT
    toDateTime64(fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC'), 3, 'UTC') AS ts,
    trace_id_ AS trace_id,
    span_id_ AS span_id,
    lower(JSONExtractString(sp, 'parentSpanId')) AS parent_span_id,
    if(JSONExtractString(sp, 'name') != '', JSONExtractString(sp, 'name'),
       concat(pick(['agent', 'gen_ai.agent.name']), ':', pick(['route', 'http.route']))) AS name,
    pick(['service.name']) AS service,
    pick(['deployment.environment.name', 'deployment.environment']) AS env,
    pick(['agent', 'gen_ai.agent.name']) AS agent,
    pick(['gen_ai.operation.name']) AS operation,
    pick(['model', 'gen_ai.request.model', 'gen_ai.response.model']) AS model,
    pick(['provider', 'gen_ai.provider.name', 'gen_ai.system']) AS provider,
    pick(['route', 'http.route']) AS route,
    pick(['user_id_hash']) AS user_id_hash,
    multiIf(status_attr IN ('ok', 'success', 'unset'), 'ok',
            status_attr != '', status_attr,
            span_failed, 'error',
            -- GenAI conventions mark a failed operation with error.type alone
            pick(['error_type', 'error.type']) != '', 'error',
            'ok') AS status,
    coalesce(nullIf(pick(['error_type', 'error.type']), ''), if(span_failed, 'span_error', '')) AS error_type,
    toUInt32(least(intDiv(greatest(end_ns, start_ns) - start_ns, 1000000), 4294967295)) AS latency_ms,
    toUInt32(greatest(toFloat64OrZero(pick(['tokens_prompt', 'gen_ai.usage.input_tokens'])), 0)) AS tokens_prompt,
    toUInt32(greatest(toFloat64OrZero(pick(['tokens_completion', 'gen_ai.usage.output_tokens'])), 0)) AS tokens_completion,
    toDecimal64OrZero(toString(round(toFloat64OrZero(pick(['cost_usd', 'gen_ai.usage.cost'])), 6)), 6) AS cost_usd,
    toJSONString(mapFilter((k, v) -> NOT has(mapped_keys, k), a)) AS attrs,
    _topic AS source_topic,
    _partition AS partition,
    _offset AS offset,
    multiIf(
        length(_error) > 0, concat('kafka: ', _error),
        NOT isValidJSON(payload), 'payload is not valid JSON',
        sp = '', 'no spans in payload (expected OTLP JSON resourceSpans[].scopeSpans[].spans[])',
        length(trace_id_) != 32 OR NOT match(trace_id_, '^[0-9a-f]+$'), 'span traceId is not 32 hex characters',
        length(span_id_) != 16 OR NOT match(span_id_, '^[0-9a-f]+$'), 'span spanId is not 16 hex characters',
        start_ns = 0, 'span has no startTimeUnixNano',
        end_ns < start_ns, 'span endTimeUnixNano is before startTimeUnixNano',
        '') AS reject_reason,
    if(reject_reason = '', '', if(sp = '', if(length(_error) > 0, _raw_message, payload), sp)) AS raw
FROM kafka_otel_spans
LEFT ARRAY JOIN JSONExtractArrayRaw(payload, 'resourceSpans') AS rs
LEFT ARRAY JOIN JSONExtractArrayRaw(rs, 'scopeSpans') AS ss
LEFT ARRAY JOIN JSONExtractArrayRaw(ss, 'spans') AS sp;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_otel_spans_accept TO agent_events AS
SELECT
    ts, trace_id, span_id, parent_span_id, name, service, env, agent, operation, model, provider,
    route, user_id_hash, status, error_type, latency_ms, tokens_prompt, tokens_completion,
    cost_usd, attrs
FROM otel_spans_mapped
WHERE reject_reason = '';

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_otel_spans_reject TO dead_letters_incoming AS
SELECT source_topic, partition, offset, reject_reason AS error, raw AS payload
FROM otel_spans_mapped
WHERE reject_reason != '';
