-- Agent steps (invoke_agent spans) per agent, last 24 hours: count, failures, p50/p95 duration (rollup p_agent_calls_hour).
SELECT agent, steps, failed, round(q[1]) AS p50_ms, round(q[2]) AS p95_ms
FROM
(
    SELECT agent, count() AS steps, countIf(status != 'ok') AS failed,
           quantilesTDigest(0.5, 0.95)(latency_ms) AS q
    FROM agent_events
    WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 1 DAY) AND kind = 'agent'
    GROUP BY agent
)
ORDER BY steps DESC
LIMIT 20

-- Only this rollup is weighed when planning (5-8 ms less at 30M events).
SETTINGS preferred_optimize_projection_name = 'p_agent_calls_hour'
