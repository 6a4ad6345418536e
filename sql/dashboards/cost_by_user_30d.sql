-- Cost and requests by user (keyed hash), last 30 days (rollup p_user_day).
SELECT user_id_hash, sum(requests) AS requests, sum(failed) AS failed_requests, round(sum(cost), 4) AS cost_usd
FROM
(
    SELECT user_id_hash, countIf(is_request) AS requests, countIf(is_request AND status != 'ok') AS failed,
           sum(cost_usd) AS cost
    FROM agent_events
    WHERE toDate(ts) >= today() - 30 AND user_id_hash != ''
    GROUP BY toDate(ts), user_id_hash
)
GROUP BY user_id_hash
ORDER BY cost_usd DESC
LIMIT 50
