-- Error percentage in 15-minute windows over 24 hours (the SLO view; 2 % is the default target).
SELECT toStartOfInterval(ts_min, INTERVAL 15 MINUTE) AS window_start,
       sum(calls) AS calls, round(sum(errors) / calls * 100, 2) AS error_pct
FROM agent_metrics_1m_state
WHERE ts_min >= now() - INTERVAL 1 DAY
GROUP BY window_start
ORDER BY window_start DESC
LIMIT 96
