-- Agent tool calls: success rate and latency per tool, last 24 hours (raw spans: tools are few).
SELECT toString(attrs.gen_ai.tool.name) AS tool, agent, count() AS calls,
       round(countIf(status = 'ok') / count() * 100, 2) AS success_pct,
       round(quantile(0.95)(latency_ms)) AS p95_ms
FROM agent_events
WHERE ts >= now() - INTERVAL 1 DAY AND operation = 'execute_tool'
GROUP BY tool, agent
ORDER BY calls DESC
LIMIT 20
