-- Failed requests in 15-minute windows over 24 hours, in percent (the SLO view; rollup p_route_minute).
SELECT toStartOfInterval(ts_min, INTERVAL 15 MINUTE) AS window_start,
       sum(calls) AS requests, round(sum(failed) / requests * 100, 2) AS error_pct
FROM
(
    SELECT toStartOfMinute(ts) AS ts_min, countIf(is_request) AS calls,
           countIf(is_request AND status != 'ok') AS failed
    FROM agent_events
    WHERE toStartOfMinute(ts) >= now() - INTERVAL 1 DAY
    GROUP BY ts_min
)
WHERE calls > 0
GROUP BY window_start
ORDER BY window_start DESC
LIMIT 96

-- Only this rollup is weighed when planning (5-8 ms less at 30M events).
SETTINGS preferred_optimize_projection_name = 'p_route_minute'
