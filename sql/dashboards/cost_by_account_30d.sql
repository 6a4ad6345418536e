-- Cost and requests by customer (billing account), last 30 days; refreshed by the cost_by_account_daily asset.
SELECT account_name, plan, sum(calls) AS requests, round(sum(cost_usd), 4) AS cost_usd,
       max(users) AS max_daily_users
FROM cost_by_account_daily
WHERE day >= today() - 30
GROUP BY account_name, plan
ORDER BY cost_usd DESC
LIMIT 20
