-- Rollup vs raw for one window: one row per key present on either side.
-- Counts, tokens and cost must be equal; latency quantiles are compared by the caller with a
-- tolerance (t-digest states merged across parts vs a t-digest over the raw rows).
WITH
rollup AS
(
    SELECT ts_min, service, env, agent, route, model, provider,
           sum(calls) AS calls, sum(errors) AS errors,
           sum(tokens_prompt) AS tokens_prompt, sum(tokens_completion) AS tokens_completion,
           sum(cost_usd) AS cost_usd,
           quantilesTDigestMerge(0.5, 0.95)(latency_q) AS q
    FROM agent_metrics_1m_state
    WHERE ts_min >= {start:DateTime} AND ts_min < {end:DateTime}
    GROUP BY ts_min, service, env, agent, route, model, provider
),
raw AS
(
    SELECT toStartOfMinute(ts) AS ts_min, service, env, agent, route, model, provider,
           toUInt64(count()) AS calls, toUInt64(countIf(status != 'ok')) AS errors,
           toUInt64(sum(tokens_prompt)) AS tokens_prompt, toUInt64(sum(tokens_completion)) AS tokens_completion,
           sum(toDecimal128(cost_usd, 6)) AS cost_usd,
           quantilesTDigest(0.5, 0.95)(latency_ms) AS q
    FROM agent_events
    WHERE ts >= {start:DateTime} AND ts < {end:DateTime}
    GROUP BY ts_min, service, env, agent, route, model, provider
)
SELECT
    ts_min, service, env, agent, route, model, provider,
    rollup.calls, raw.calls, rollup.errors, raw.errors,
    rollup.tokens_prompt, raw.tokens_prompt, rollup.tokens_completion, raw.tokens_completion,
    rollup.cost_usd, raw.cost_usd,
    rollup.q, raw.q
FROM rollup
FULL OUTER JOIN raw USING (ts_min, service, env, agent, route, model, provider)
ORDER BY ts_min, service, env, agent, route, model, provider
