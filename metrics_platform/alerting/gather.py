"""The numbers each rule needs, from ClickHouse (rollup projections where one fits) and Kafka.

| rule | read from |
|---|---|
| error_rate, scope service/route | p_route_minute: requests and failed requests per minute |
| error_rate, scope model | p_model_minute: LLM calls and failures per minute |
| error_rate, scope account; latency | raw agent_events of the longest window (1) |
| cost_budget | p_user_day (today) joined with billing_accounts |
| anomaly | p_model_minute, in windows of the rule's length over the baseline hours |
| consumer_lag | Kafka: committed offsets vs high watermarks |
| dead_letters, freshness | dead_letters; span_inbox and agent_events (metrics_platform/pipeline_health.py) |

(1) No projection has per-account keys, nor counts of requests slower than a threshold.

``query(rule)`` returns the SQL and parameters so tests can check with EXPLAIN which table answers.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

from metrics_platform import kafka_lag, pipeline_health
from metrics_platform.alerting.burn import Counts
from metrics_platform.alerting.evaluate import AnomalyBucket, Freshness, Gathered
from metrics_platform.alerting.rules import Rule
from metrics_platform.settings import Settings

Query = tuple[str, dict[str, Any]]


def _filters(rule: Rule, alias: str = "") -> tuple[str, dict[str, Any]]:
    """``AND column IN {...}`` for the rule's ``where``, with its parameters."""
    sql, params = "", {}
    for i, (column, allowed) in enumerate(sorted(rule.where.items())):
        sql += f" AND {alias}{column} IN {{w{i}:Array(String)}}"
        params[f"w{i}"] = list(allowed)
    return sql, params


def _window_sums(windows: list[int], total: str, bad: str, time: str) -> str:
    return ", ".join(
        f"sumIf({total}, {time} > toStartOfMinute(now()) - toIntervalMinute({w})) AS total_{w}, "
        f"sumIf({bad}, {time} > toStartOfMinute(now()) - toIntervalMinute({w})) AS bad_{w}"
        for w in windows
    )


def _window_counts(windows: list[int], bad: str, time: str) -> str:
    return ", ".join(
        f"countIf({time} >= now64(3) - toIntervalMinute({w})) AS total_{w}, "
        f"countIf({time} >= now64(3) - toIntervalMinute({w}) AND {bad}) AS bad_{w}"
        for w in windows
    )


def windows_of(rule: Rule) -> list[int]:
    return sorted({m for pair in rule.windows for m in (pair.long_minutes, pair.short_minutes)})


def burn_query(rule: Rule) -> Query:
    """Events and bad events per key in each of the rule's windows."""
    windows = windows_of(rule)
    longest = max(windows)
    keys = ", ".join(rule.key_columns)
    params: dict[str, Any] = {}
    if rule.scope == "account":
        where, params = _filters(rule, "b.")
        bad = "e.status != 'ok'" if rule.type == "error_rate" else f"e.latency_ms > {float(rule.threshold_ms)!r}"
        sql = (
            f"SELECT b.account_id AS account_id, {_window_counts(windows, bad, 'e.ts')} "
            "FROM agent_events AS e INNER JOIN billing_accounts AS b ON e.user_id_hash = b.user_id_hash "
            f"WHERE e.is_request AND e.ts >= now64(3) - toIntervalMinute({longest}){where} GROUP BY account_id"
        )
        return sql, params
    where, params = _filters(rule)
    if rule.type == "latency":
        which = "kind = 'llm'" if rule.scope == "model" else "is_request"
        bad = f"latency_ms > {float(rule.threshold_ms)!r}"
        sql = (
            f"SELECT {keys}, {_window_counts(windows, bad, 'ts')} FROM agent_events "
            f"WHERE {which} AND ts >= now64(3) - toIntervalMinute({longest}){where} GROUP BY {keys}"
        )
        return sql, params
    # error_rate: per-minute counts from a projection, summed into windows outside it.
    if rule.scope == "model":
        inner = (
            f"SELECT toStartOfMinute(ts) AS minute, {keys}, count() AS total, countIf(status != 'ok') AS bad "
            f"FROM agent_events WHERE toStartOfMinute(ts) > toStartOfMinute(now()) - toIntervalMinute({longest}) "
            f"AND kind = 'llm'{where} GROUP BY minute, {keys}"
        )
    else:
        inner = (
            f"SELECT toStartOfMinute(ts) AS minute, {keys}, countIf(is_request) AS total, "
            "countIf(is_request AND status != 'ok') AS bad FROM agent_events "
            f"WHERE toStartOfMinute(ts) > toStartOfMinute(now()) - toIntervalMinute({longest}){where} "
            f"GROUP BY minute, {keys}"
        )
    sql = f"SELECT {keys}, {_window_sums(windows, 'total', 'bad', 'minute')} FROM ({inner}) GROUP BY {keys}"
    return sql, params


def cost_query(rule: Rule) -> Query:
    """Cost so far today per billing account (users without one: 'unassigned')."""
    sql = (
        "SELECT if(b.account_id = '', 'unassigned', b.account_id) AS account_id, toFloat64(sum(u.cost)) AS cost "
        "FROM (SELECT user_id_hash, sum(cost_usd) AS cost FROM agent_events WHERE toDate(ts) = today() "
        "GROUP BY toDate(ts), user_id_hash) AS u "
        "LEFT JOIN billing_accounts AS b ON u.user_id_hash = b.user_id_hash GROUP BY account_id"
    )
    return sql, {}


def anomaly_query(rule: Rule) -> Query:
    """LLM calls per key in consecutive windows of ``window_minutes``; window 0 ends now."""
    keys = ", ".join(rule.key_columns)
    where, params = _filters(rule)
    span = rule.baseline_hours * 60 + rule.window_minutes
    sql = (
        f"SELECT intDiv(dateDiff('minute', toStartOfMinute(ts), toStartOfMinute(now())), {rule.window_minutes}) "
        f"AS window, {keys}, count() AS calls, countIf(status != 'ok') AS errors, "
        "sum(tokens_prompt) + sum(tokens_completion) AS tokens, quantilesTDigest(0.5, 0.95)(latency_ms) AS q "
        f"FROM agent_events WHERE toStartOfMinute(ts) > toStartOfMinute(now()) - toIntervalMinute({span}) "
        f"AND kind = 'llm'{where} GROUP BY window, {keys}"
    )
    return sql, params


def query(rule: Rule) -> Query | None:
    """The ClickHouse question of a rule, or None for rules that ask Kafka or several tables."""
    if rule.type in ("error_rate", "latency"):
        return burn_query(rule)
    if rule.type == "cost_budget":
        return cost_query(rule)
    if rule.type == "anomaly":
        return anomaly_query(rule)
    return None


def gather(rule: Rule, ch: Client, settings: Settings) -> Gathered:
    """Everything ``rule`` needs this tick; raises on an unreachable ClickHouse or Kafka."""
    data = Gathered()
    if rule.type in ("error_rate", "latency"):
        sql, params = burn_query(rule)
        windows = windows_of(rule)
        n = len(rule.key_columns)
        for row in ch.query(sql, parameters=params).result_rows:
            values = tuple(str(v) for v in row[:n])
            sums = row[n:]
            data.windows[values] = {w: Counts(int(sums[2 * i]), int(sums[2 * i + 1])) for i, w in enumerate(windows)}
    elif rule.type == "cost_budget":
        sql, params = cost_query(rule)
        data.costs = {str(a): float(c) for a, c in ch.query(sql, parameters=params).result_rows}
    elif rule.type == "anomaly":
        sql, params = anomaly_query(rule)
        n = len(rule.key_columns)
        for row in ch.query(sql, parameters=params).result_rows:
            values, (calls, errors, tokens, q) = tuple(str(v) for v in row[1 : n + 1]), row[n + 1 :]
            bucket = AnomalyBucket(int(row[0]), int(calls), int(errors), int(tokens), float(q[0]), float(q[1]))
            data.buckets.setdefault(values, []).append(bucket)
    elif rule.type == "consumer_lag":
        data.lags = {
            group: kafka_lag.total_lag(settings.kafka, group, topic, timeout_s=10)
            for group, topic in kafka_lag.clickhouse_groups(settings.kafka).items()
        }
    elif rule.type == "dead_letters":
        data.dead_letters = int(
            ch.command(
                "SELECT count() FROM dead_letters WHERE received_at >= now64(3) - toIntervalMinute({w:UInt32})",
                parameters={"w": rule.window_minutes},
            )
        )
    elif rule.type == "freshness":
        health = pipeline_health.clickhouse_health(ch)
        data.freshness = Freshness(health.get("oldest_settling_s", 0.0), health.get("clickhouse_freshness_s"))
    return data
