-- Failed requests in 15-minute windows over 24 hours, in percent (the SLO view; rollup p_route_minute).
SELECT toStartOfInterval(ts_min, INTERVAL 15 MINUTE) AS window_start,
       sum(requests) AS requests, round(sum(failed) / requests * 100, 2) AS error_pct
FROM
(
    SELECT toStartOfMinute(ts) AS ts_min, count() AS requests, countIf(status != 'ok') AS failed
    FROM agent_events
    WHERE toStartOfMinute(ts) >= now() - INTERVAL 1 DAY AND is_request
    GROUP BY ts_min
)
GROUP BY window_start
ORDER BY window_start DESC
LIMIT 96
