-- Cost and requests by user (keyed hash), last 30 days (user_cost_30d: the newest snapshot, taken every 5 minutes from the per-user daily rollup).
-- Grouped again: on a cluster each shard holds its own row for a user whose traces it received.
SELECT user_id_hash, sum(requests) AS requests, sum(failed_requests) AS failed_requests,
       round(sum(cost_usd), 4) AS cost_usd
FROM user_cost_30d
GROUP BY user_id_hash
ORDER BY cost_usd DESC
LIMIT 50
