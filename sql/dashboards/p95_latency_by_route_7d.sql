-- p50/p95 latency by route over 7 days: merged t-digest states, never averaged percentiles.
SELECT route, calls, round(q[1]) AS p50_ms, round(q[2]) AS p95_ms
FROM
(
    SELECT route, sum(calls) AS calls, quantilesTDigestMerge(0.5, 0.95)(latency_q) AS q
    FROM agent_metrics_1m_state
    WHERE ts_min >= now() - INTERVAL 7 DAY
    GROUP BY route
)
ORDER BY p95_ms DESC
LIMIT 20
