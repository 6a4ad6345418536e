-- The OTLP mapping (0016's mv_map_otlp_spans) with the message kept once, not once per span.
--
-- 0016 carried the message (`payload`) through its ARRAY JOINs, for `raw` (the whole message, kept with a
-- rejected span) and for the UTF-8 and JSON checks. Computing `raw` copied the message into every span's row,
-- so a block needed memory of spans x message size: records of 100 traces (500 spans, ~280 KB) asked for
-- 16.5 GiB, the embedded server exceeded its memory limit and exited, and after its restart it read the same
-- uncommitted block again. One trace per record bounds that by the largest trace, but a trace of thousands of
-- spans in one batch (the record limit is ~16 MB) reaches it too.
--
-- Now, once per message and before its spans are joined: the UTF-8 and JSON checks, the parse, and the message
-- as a LowCardinality value its spans share (one copy in the block's dictionary; spans_mapped.raw becomes
-- LowCardinality). `raw` holds the message on every span's row; the reject view reads it for its own rows
-- only, so dead letters are unchanged.
--
-- Same rows, same rejects and reasons, same dead-letter payloads (every column's hash, on 20,000 one-trace
-- messages, and on good ones mixed with each message-level reject and two span-level ones). The mapping of those
-- 20,000 messages took 1.01-1.05 s against 1.06-1.09 s; of 200 records of 100 traces, 0.8 s within 300 MB
-- against 2.6-3.0 s and 5.2 GiB asked for.
--
-- Changed in place (MODIFY QUERY): the view is the only one of kafka_otel_spans, and dropping it would stop
-- the stream until the new one exists. The target's column first: the old query's String converts on insert.
ALTER TABLE spans_mapped MODIFY COLUMN raw LowCardinality(String);

ALTER TABLE mv_map_otlp_spans MODIFY QUERY
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
    ['tokens_prompt', 'gen_ai.usage.input_tokens', 'gen_ai.usage.prompt_tokens',
     'llm.usage.prompt_tokens'] AS k_tokens_prompt,
    ['tokens_completion', 'gen_ai.usage.output_tokens', 'gen_ai.usage.completion_tokens',
     'llm.usage.completion_tokens'] AS k_tokens_completion,
    ['tokens_cache_read', 'gen_ai.usage.cache_read.input_tokens',
     'gen_ai.usage.cache_read_input_tokens'] AS k_tokens_cache_read,
    ['tokens_cache_write', 'gen_ai.usage.cache_creation.input_tokens',
     'gen_ai.usage.cache_creation_input_tokens'] AS k_tokens_cache_write,
    ['tokens_reasoning', 'gen_ai.usage.reasoning.output_tokens',
     'gen_ai.usage.reasoning_tokens'] AS k_tokens_reasoning,
    ['cost_usd', 'gen_ai.usage.cost'] AS k_cost,
    arrayConcat(k_service, k_env, k_agent, k_operation, k_model, k_response_model, k_provider,
                k_route, k_tool, k_status, k_error_type, k_kind) AS string_keys,
    -- Identity keys never reach storage from this path even if a producer bypassed the
    -- Collector (which hashes user ids into user_id_hash and drops the rest, see deploy/otelcol).
    ['user_id', 'user_email', 'enduser.id', 'enduser.email', 'user.id', 'user.email', 'user.name',
     'gen_ai.request.user', 'gen_ai.user'] AS pii_keys,
    arrayConcat(string_keys, k_tokens_prompt, k_tokens_completion, k_tokens_cache_read,
                k_tokens_cache_write, k_tokens_reasoning, k_cost, ['user_id_hash'], pii_keys)
        AS mapped_keys,
    ['tokens_prompt', 'tokens_completion', 'tokens_cache_read', 'tokens_cache_write', 'tokens_reasoning']
        AS count_names
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
    toUInt32(if(counts_bad[1] OR counts[1] = '', 0, counts_f[1])) AS tokens_prompt,
    toUInt32(if(counts_bad[2] OR counts[2] = '', 0, counts_f[2])) AS tokens_completion,
    toUInt32(if(counts_bad[3] OR counts[3] = '', 0, counts_f[3])) AS tokens_cache_read,
    toUInt32(if(counts_bad[4] OR counts[4] = '', 0, counts_f[4])) AS tokens_cache_write,
    toUInt32(if(counts_bad[5] OR counts[5] = '', 0, counts_f[5])) AS tokens_reasoning,
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
    -- the whole message, kept with a rejected span (a fixed producer can send it again): one copy per message
    -- that its spans share (spans_mapped.raw is LowCardinality), which the reject view reads for its rows only
    kept_message AS raw
FROM
(
    -- decide: why the span cannot be stored, or ''
    SELECT
        *,
        multiIf(kind_ IN ('1', 'SPAN_KIND_INTERNAL'), 'internal', kind_ IN ('2', 'SPAN_KIND_SERVER'), 'server',
                kind_ IN ('3', 'SPAN_KIND_CLIENT'), 'client', kind_ IN ('4', 'SPAN_KIND_PRODUCER'), 'producer',
                kind_ IN ('5', 'SPAN_KIND_CONSUMER'), 'consumer', '') AS span_kind_name,
        lower(a_status) AS status_attr,
        multiIf(
            kafka_error != '', concat('kafka: ', kafka_error),
            NOT utf8_ok, 'payload is not valid UTF-8',
            NOT json_ok, 'payload is not valid JSON',
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
    FROM
    (
        -- judge numbers: a token count is bad unless a whole number in UInt32's range (its attribute text, ''
        -- when absent), a reported cost unless a finite amount from 0 to 1e8 USD
        SELECT
            *,
            toDateTime64(fromUnixTimestamp64Nano(toInt64(start_ns), 'UTC'), 3, 'UTC') AS ts_,
            intDiv(greatest(end_ns, start_ns) - start_ns, 1000000) AS latency_ms_,
            arrayMap((t, f) -> t != '' AND NOT (isFinite(f) AND f >= 0 AND f <= 4294967295 AND f = floor(f)),
                     counts, counts_f) AS counts_bad,
            arrayFirstIndex(b -> b, counts_bad) AS bad_count_at,
            a_cost != '' AND NOT (isFinite(cost_f) AND cost_f >= 0 AND cost_f < 100000000) AS bad_cost
        FROM
        (
            -- parse numbers: each token count and the reported cost once
            SELECT *, arrayMap(t -> toFloat64OrDefault(t, nan), counts) AS counts_f, toFloat64OrDefault(a_cost, nan) AS cost_f
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
                    [pick(k_tokens_prompt), pick(k_tokens_completion), pick(k_tokens_cache_read),
                     pick(k_tokens_cache_write), pick(k_tokens_reasoning)] AS counts,
                    -- a string column fed from a non-string attribute (array, map, number) would store its text
                    -- as if it were a name: such spans are rejected instead
                    arrayFirst(kv -> kv.3 NOT IN ('stringValue', '') AND has(string_keys, kv.1),
                               arrayConcat(span_kvs, resource_kvs)) AS non_string_kv,
                    arrayExists(k -> mapContains(span_attrs, k),
                                ['http.request.method', 'http.method', 'url.full', 'http.url']) AS is_http_,
                    toJSONString(mapFilter((k, v) -> NOT has(mapped_keys, k), mapUpdate(resource_attrs, span_attrs)))
                        AS attrs_
                FROM
                (
                    -- attribute maps, span and resource
                    SELECT
                        *,
                        mapFromArrays(arrayMap(x -> x.1, span_kvs), arrayMap(x -> x.2, span_kvs)) AS span_attrs,
                        mapFromArrays(arrayMap(x -> x.1, resource_kvs), arrayMap(x -> x.2, resource_kvs))
                            AS resource_attrs
                    FROM
                    (
                        -- parse: one attribute as (key, value text, kind); an array as a plain JSON array of
                        -- its elements, e.g. ["stop","content_filter"]
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
                            kept_message, utf8_ok, json_ok, topic_, partition_, offset_, kafka_ts_, kafka_error,
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
                        FROM
                        (
                            -- once per message, before its spans are joined: the checks on the whole message, the
                            -- parse, and the message itself as one shared copy (a String column joined to n spans
                            -- would be copied n times: memory of spans x message size)
                            SELECT
                                _topic AS topic_, _partition AS partition_, _offset AS offset_,
                                _timestamp_ms AS kafka_ts_, _error AS kafka_error,
                                toLowCardinality(if(_error != '', _raw_message, payload)) AS kept_message,
                                isValidUTF8(payload) AS utf8_ok,
                                isValidJSON(payload) AS json_ok,
                                JSONExtract(payload, 'resourceSpans',
                                'Array(Tuple(resource Tuple(attributes Array(Tuple(key String, value Tuple(stringValue Nullable(String),
                                     intValue Nullable(String), doubleValue Nullable(String), boolValue Nullable(String),
                                     arrayValue Nullable(String), kvlistValue Nullable(String), bytesValue Nullable(String))))),
                                   scopeSpans Array(Tuple(spans Array(Tuple(traceId String, spanId String, parentSpanId String,
                                     name String, kind String, startTimeUnixNano String, endTimeUnixNano String,
                                     attributes Array(Tuple(key String, value Tuple(stringValue Nullable(String),
                                       intValue Nullable(String), doubleValue Nullable(String), boolValue Nullable(String),
                                       arrayValue Nullable(String), kvlistValue Nullable(String), bytesValue Nullable(String)))),
                                     status Tuple(code Nullable(String), message Nullable(String))))))))') AS resource_spans
                            FROM kafka_otel_spans
                        )
                        LEFT ARRAY JOIN resource_spans AS rs
                        LEFT ARRAY JOIN rs.scopeSpans AS ss
                        LEFT ARRAY JOIN ss.spans AS sp
                    )
                )
            )
        )
    )
);
