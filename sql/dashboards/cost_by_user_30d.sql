-- Cost by user (keyed hash), last 30 days, from the per-user daily rollup.
SELECT user_id_hash, sum(calls) AS calls, sum(errors) AS errors, round(sum(cost_usd), 4) AS cost_usd
FROM user_cost_1d_state
WHERE day >= today() - 30 AND user_id_hash != ''
GROUP BY user_id_hash
ORDER BY cost_usd DESC
LIMIT 50
