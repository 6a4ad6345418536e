-- Tokens by type and cost per model, last 7 days: input (cached reads and cache writes among them), output (reasoning among them) (rollup p_model_hour).
SELECT model, provider, count() AS llm_calls,
       sum(tokens_prompt) AS input_tokens, sum(tokens_cache_read) AS cached_input_tokens,
       sum(tokens_cache_write) AS cache_write_tokens, sum(tokens_completion) AS output_tokens,
       sum(tokens_reasoning) AS reasoning_tokens, round(sum(cost_usd), 4) AS cost_usd
FROM agent_events
WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 7 DAY) AND kind = 'llm'
GROUP BY model, provider
ORDER BY cost_usd DESC
LIMIT 20

-- Only this rollup is weighed when planning (5-8 ms less at 30M events).
SETTINGS preferred_optimize_projection_name = 'p_model_hour'
