-- Recompute one window of the per-minute rollup from raw events. Same aggregation as
-- mv_agent_metrics_1m (sql/0002_rollup_1m.sql); the audit proves the two agree.
INSERT INTO agent_metrics_1m_state
SELECT
    toStartOfMinute(ts) AS ts_min,
    service, env, agent, route, model, provider,
    count() AS calls,
    countIf(status != 'ok') AS errors,
    sum(tokens_prompt) AS tokens_prompt,
    sum(tokens_completion) AS tokens_completion,
    sum(toDecimal128(cost_usd, 6)) AS cost_usd,
    quantilesTDigestState(0.5, 0.95)(latency_ms) AS latency_q
FROM agent_events
WHERE ts >= {start:DateTime} AND ts < {end:DateTime}
GROUP BY ts_min, service, env, agent, route, model, provider
