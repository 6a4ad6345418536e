-- Identities nested in attributes (issue 8): a producer writing straight to Kafka (bypassing the
-- Collector's PII policy) could store raw identities that 0010 only drops or rejects at the top level:
-- an OTLP kvlist attribute such as user = {id: ...} or request = {user.email: ...} was stored in
-- agent_events.attrs as its JSON text, a flat event's attrs.user = {name: ...} was stored, and a
-- rejected message kept nested ids ({"user": {"id": ...}}) raw in dead_letters.
--
-- Spans with such attributes now go to dead_letters (both paths), and the dead-letter scrub blanks
-- whole user/enduser objects and kvlists. The three views are replaced by new ones created before the
-- old ones are dropped, so no block passes while neither exists (dropping first would lose it): a
-- block seen by both accept or both reject views is written once, since the second finds it below
-- its table's ledger (see 0010's top comment); in the instant both scrubs exist a dead letter may be
-- written twice, which is harmless.

-- attrs as the mapping writes them: flat events' JSON object as sent; OTLP attributes as a JSON object
-- of value texts, where a kvlist is its own JSON (escaped, hence the unescaping).
CREATE FUNCTION IF NOT EXISTS mp_nested_identity AS (attrs) ->
    match(replaceAll(attrs, '\\"', '"'),
          concat('"', '(?:user_id|user_email|enduser\\.id|enduser\\.email|user\\.id|user\\.email|user\\.name|gen_ai\\.request\\.user|gen_ai\\.user)', '"\\s*:',
                 '|"key"\\s*:\\s*"(?:user_id|user_email|enduser\\.id|enduser\\.email|user\\.id|user\\.email|user\\.name|gen_ai\\.request\\.user|gen_ai\\.user)"',
                 '|"(?:user|enduser)"\\s*:\\s*\\{[^{}]*"(?:id|email|name)"\\s*:',
                 '|"(?:user|enduser)"\\s*:\\s*"\\{"values"\\s*:\\s*\\[[^\\]]*"key"\\s*:\\s*"(?:id|email|name)"'));

-- Downstream first, as in 0010.
CREATE MATERIALIZED VIEW IF NOT EXISTS mv_dead_letters_scrub_nested TO dead_letters AS
WITH
    '(?:user_id|user_email|email|enduser\\.id|enduser\\.email|user\\.id|user\\.email|user\\.name|gen_ai\\.request\\.user|gen_ai\\.user)' AS pii_keys
SELECT
    source_topic, partition, offset, kafka_ts, error,
    replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(
    replaceRegexpAll(replaceRegexpAll(
        payload,
        -- new in 0013: a whole user/enduser object (flat JSON) or kvlist (OTLP), whatever its keys
        '("(?:user|enduser)"\\s*:\\s*)\\{[^{}]*\\}', '\\1"[redacted]"'),
        '("key"\\s*:\\s*"(?:user|enduser)"\\s*,\\s*"value"\\s*:\\s*)\\{\\s*"kvlistValue"\\s*:\\s*\\{\\s*"values"\\s*:\\s*\\[[^\\]]*\\]\\s*\\}\\s*\\}',
        '\\1{"stringValue":"[redacted]"}'),
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
DROP VIEW IF EXISTS mv_dead_letters_scrub;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_reject_spans_checked TO dead_letters_incoming AS
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
    FROM dead_letters GROUP BY source_topic, partition
) AS ledger ON m.source_topic = ledger.source_topic AND m.partition = ledger.partition
WHERE (m.reject_reason != '' OR mp_nested_identity(m.attrs))
  AND NOT (ledger.done_ts > toDateTime64(0, 3, 'UTC') AND m.offset <= ledger.done_offset AND m.kafka_ts <= ledger.done_ts);
DROP VIEW IF EXISTS mv_reject_spans;

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_accept_spans_checked TO span_inbox AS
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
        WHERE m.reject_reason = '' AND NOT mp_nested_identity(m.attrs)
          -- not already stored (see the ledger note at the top); no ledger row joins as 0 / 1970
          AND NOT (ledger.done_ts > toDateTime64(0, 3, 'UTC') AND m.offset <= ledger.done_offset
                   AND m.kafka_ts <= ledger.done_ts)
    )
);
DROP VIEW IF EXISTS mv_accept_spans;
