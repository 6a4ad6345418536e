-- p50/p95 latency by route over the last 7 days: merged t-digest states of the daily route rollup.
SELECT route, calls, round(q[1]) AS p50_ms, round(q[2]) AS p95_ms
FROM
(
    SELECT route, sum(calls) AS calls, quantilesTDigestMerge(0.5, 0.95)(latency_q) AS q
    FROM route_metrics_1d_state
    WHERE day >= today() - 6
    GROUP BY route
)
ORDER BY p95_ms DESC
LIMIT 20
