-- Errors by model and provider, last 24 hours (from the per-minute rollup).
SELECT model, provider, sum(errors) AS errors, sum(calls) AS calls,
       round(errors / calls * 100, 2) AS error_pct
FROM agent_metrics_1m_state
WHERE ts_min >= now() - INTERVAL 1 DAY AND model != ''
GROUP BY model, provider
ORDER BY errors DESC
LIMIT 20
