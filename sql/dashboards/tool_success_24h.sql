-- Tool calls per tool and agent, last 24 hours: success rate and p95 (rollup p_agent_calls_hour).
SELECT tool, agent, count() AS calls,
       round(100 - countIf(status != 'ok') / calls * 100, 2) AS success_pct,
       round(quantilesTDigest(0.5, 0.95)(latency_ms)[2]) AS p95_ms
FROM agent_events
WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 1 DAY) AND kind = 'tool'
GROUP BY tool, agent
ORDER BY calls DESC
LIMIT 20

-- Only this rollup is weighed when planning (5-8 ms less at 30M events).
SETTINGS preferred_optimize_projection_name = 'p_agent_calls_hour'
