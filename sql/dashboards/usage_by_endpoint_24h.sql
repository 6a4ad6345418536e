-- Latency, tokens and cost per endpoint (service + route), last 24 hours (hourly route rollup).
SELECT service, route, sum(calls) AS calls,
       round(quantilesTDigestMerge(0.95)(latency_q)[1]) AS p95_ms,
       sum(tokens_prompt) AS tokens_prompt, sum(tokens_completion) AS tokens_completion,
       round(sum(cost_usd), 4) AS cost_usd
FROM route_metrics_1h_state
WHERE ts_hour >= toStartOfHour(now() - INTERVAL 1 DAY)
GROUP BY service, route
ORDER BY cost_usd DESC
LIMIT 20
