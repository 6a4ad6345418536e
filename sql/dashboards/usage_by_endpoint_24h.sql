-- Per endpoint (service + route), last 24 hours: requests, their error rate and p95, and the LLM calls, tokens and cost spent serving them (rollup p_route_hour).
SELECT r.service AS service, r.route AS route, r.requests AS requests, r.error_pct AS error_pct, r.p95_ms AS p95_ms,
       c.llm_calls AS llm_calls, c.tokens AS tokens, round(c.cost_usd, 4) AS cost_usd
FROM
(
    SELECT service, route, count() AS requests, round(countIf(status != 'ok') / requests * 100, 2) AS error_pct,
           round(quantilesTDigest(0.5, 0.95)(latency_ms)[2]) AS p95_ms
    FROM agent_events
    WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 1 DAY) AND is_request
    GROUP BY service, route
) AS r
LEFT JOIN
(
    SELECT service, route, sumIf(spans, kind = 'llm') AS llm_calls,
           sumIf(prompt + completion, kind = 'llm') AS tokens, sum(cost) AS cost_usd
    FROM
    (
        SELECT service, route, kind, count() AS spans, sum(tokens_prompt) AS prompt,
               sum(tokens_completion) AS completion, sum(cost_usd) AS cost
        FROM agent_events
        WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 1 DAY)
        GROUP BY service, route, kind
    )
    GROUP BY service, route
) AS c USING (service, route)
ORDER BY cost_usd DESC, requests DESC
LIMIT 20
