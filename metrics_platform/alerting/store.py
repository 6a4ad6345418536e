"""Alert history and status in ClickHouse (tables of sql/0012_alerts.sql), for dashboards and restarts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from metrics_platform.alerting.evaluate import Evaluation
from metrics_platform.alerting.state import Active, StateKey, Transition, status

_EVENT_COLUMNS = ["ts", "rule", "rule_type", "key", "account_id", "state", "severity", "value", "threshold",
                  "message", "dashboard_url", "notified"]  # fmt: skip
_STATUS_COLUMNS = ["evaluated_at", "rule", "rule_type", "key", "account_id", "state", "severity", "value",
                   "threshold", "detail"]  # fmt: skip


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def record_transitions(ch: Client, rows: Iterable[tuple[Transition, str, list[str]]]) -> int:
    """Append transitions (with their dashboard link and the channels that took them) to alert_events."""
    data = [
        [_time(t.at), t.rule, t.rule_type, t.key, t.account_id, t.state, t.severity, float(t.value),
         float(t.threshold), t.detail, url, notified]
        for t, url, notified in rows
    ]  # fmt: skip
    if data:
        ch.insert("alert_events", data, column_names=_EVENT_COLUMNS)
    return len(data)


def record_status(
    ch: Client, evaluations: Iterable[Evaluation], following: Mapping[StateKey, Active], now: float
) -> int:
    """One alert_status row per verdict: ok, pending or firing, with value and threshold."""
    at = _time(now)
    data = [
        [at, e.rule, e.rule_type, e.key, e.account_id, status(e, following), e.severity, float(e.value),
         float(e.threshold), e.detail]
        for e in evaluations
    ]  # fmt: skip
    if data:
        ch.insert("alert_status", data, column_names=_STATUS_COLUMNS)
    return len(data)


def firing_from_history(ch: Client) -> dict[StateKey, Active]:
    """Keys whose latest alert_events row says firing: the state to resume from without a cursor."""
    rows = ch.query(
        "SELECT rule, key, argMax(rule_type, ts), argMax(account_id, ts), argMax(state, ts), "
        "toUnixTimestamp64Milli(max(ts)), argMax(severity, ts), argMax(value, ts), argMax(threshold, ts), "
        "argMax(message, ts) FROM alert_events GROUP BY rule, key HAVING argMax(state, ts) = 'firing'"
    ).result_rows
    return {
        (rule, key): Active("firing", ms / 1000, rule_type, account, severity, value, threshold, message)
        for rule, key, rule_type, account, _, ms, severity, value, threshold, message in rows
    }


def record_samples(ch: Client, numbers: Mapping[str, float], labelled: Mapping[tuple[str, str], float]) -> int:
    """pipeline_health_samples rows for one sample: plain numbers, and numbers per label (lag per group)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    data = [[now, metric, "", float(v)] for metric, v in numbers.items()]
    data += [[now, metric, label, float(v)] for (metric, label), v in labelled.items()]
    if data:
        ch.insert("pipeline_health_samples", data, column_names=["ts", "metric", "label", "value"])
    return len(data)
