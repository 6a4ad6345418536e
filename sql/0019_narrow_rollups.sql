-- Narrower hourly rollups for the dashboards' busiest 24-hour questions. Their answers merge one t-digest
-- state per bucket and key, and the wide rollups keep apart what these questions add up: p_route_hour env,
-- kind and is_request (2,880 request states a day at 40 routes and 3 envs), p_model_hour service, env and
-- error_type (5,760 states a day for 8 models), p_agent_hour service and env (14,400 tool states a day for
-- 20 agents and 10 tools). Merging them was most of those questions' time at 30M events; these rollups
-- merge 960, 192 and 4,800 a day. Written with every finalizer insert like the others; adding the first two
-- did not change the insert rate measurably (1M rows a day: 2.9-3.3 s with or without them).

-- Per endpoint (service + route): requests, their failures and latency, LLM calls, their tokens, and cost.
ALTER TABLE agent_events ADD PROJECTION IF NOT EXISTS p_endpoint_hour
(
    SELECT toStartOfHour(ts), service, route,
           count(), countIf(is_request), countIf(is_request AND status != 'ok'),
           sumIf(tokens_prompt, kind = 'llm'), sumIf(tokens_completion, kind = 'llm'), sum(cost_usd),
           countIf(kind = 'llm'), quantilesTDigestIf(0.5, 0.95)(latency_ms, is_request)
    GROUP BY toStartOfHour(ts), service, route
);
ALTER TABLE agent_events MATERIALIZE PROJECTION p_endpoint_hour;

-- Per model, provider and kind: calls, failures and latency, across services and envs.
ALTER TABLE agent_events ADD PROJECTION IF NOT EXISTS p_model_calls_hour
(
    SELECT toStartOfHour(ts), model, provider, kind,
           count(), countIf(status != 'ok'), quantilesTDigest(0.5, 0.95)(latency_ms)
    GROUP BY toStartOfHour(ts), model, provider, kind
);
ALTER TABLE agent_events MATERIALIZE PROJECTION p_model_calls_hour;

-- Per agent, tool and kind: calls, failures and latency, across services and envs (tool success, agent steps).
ALTER TABLE agent_events ADD PROJECTION IF NOT EXISTS p_agent_calls_hour
(
    SELECT toStartOfHour(ts), agent, tool, kind,
           count(), countIf(status != 'ok'), quantilesTDigest(0.5, 0.95)(latency_ms)
    GROUP BY toStartOfHour(ts), agent, tool, kind
);
ALTER TABLE agent_events MATERIALIZE PROJECTION p_agent_calls_hour;
