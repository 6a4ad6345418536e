"""Alert rules evaluated by the Dagster sensor against the real stack: burn rates, anomalies, lag,
a malformed rules file, notifications (webhook and a real SMTP server on loopback), history in
ClickHouse, checks in Dagster, and the pipeline health samples the dashboards plot."""

from __future__ import annotations

import json
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes
from email.policy import default as email_policy

import dagster as dg
import pytest

from metrics_platform.alerting import gather, rules
from metrics_platform.defs.alerts import build_alert_sensor, load_rules
from metrics_platform.defs.health import build_pipeline_health_sensor
from metrics_platform.settings import Settings
from tests.helpers import flat_event, ingest, produce, wait_for
from tests.test_alerts_units import SmtpReceiver


@pytest.fixture()
def smtp():
    receiver = SmtpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture()
def rules_file(tmp_path, monkeypatch, smtp):
    """Where this test's rules go; alerts reach the loopback webhook receiver and SMTP server."""
    path = tmp_path / "rules.yaml"
    monkeypatch.setenv("METRICS_PLATFORM_ALERT_RULES", str(path))
    monkeypatch.setenv("METRICS_PLATFORM_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("METRICS_PLATFORM_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("METRICS_PLATFORM_ALERT_DASHBOARD_URL", "http://dashboards.example")
    return path


def _write(path, receiver_url: str, rules_yaml: str) -> None:
    path.write_text(
        "channels:\n"
        f"  hook: {{type: webhook, url: '{receiver_url}'}}\n"
        "  mail: {type: email, to: [oncall@example.com]}\n"
        f"rules:\n{rules_yaml}"
    )


class Ticker:
    """Calls the alert sensor like the daemon does, carrying its cursor from tick to tick."""

    def __init__(self, resources: dict) -> None:
        self.resources = resources
        # Nothing firing: alerts other tests left in alert_events are not this test's to resolve.
        self.cursor: str | None = json.dumps({"active": [], "reported": {}})

    def __call__(self, cursor: str | None | bool = True) -> dg.SensorResult:
        loaded = load_rules(Settings.from_env(), keep=False).rules.rules
        sensor = build_alert_sensor(checked_rules=loaded)
        context = dg.build_sensor_context(cursor=self.cursor if cursor is True else cursor, resources=self.resources)
        result = sensor(context)
        self.cursor = result.cursor
        return result


def _checks(result: dg.SensorResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)}


def test_an_error_burst_on_one_route_fires_once_and_recovers_once(
    stack, ch, dagster_resources, alert_receiver, smtp, rules_file
):
    service = f"alert-{uuid.uuid4().hex[:8]}"
    recent = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    burst = [flat_event(service, ts=recent, route="POST /pay", status="error" if i % 2 else "ok") for i in range(40)]
    calm = [flat_event(service, ts=recent, route="GET /ok") for _ in range(40)]
    ingest(stack.kafka, ch, service, burst + calm)
    _write(
        rules_file,
        alert_receiver.url,
        f"  - {{name: pay-errors, type: error_rate, scope: route, objective: 0.99, where: {{service: [{service}]}}}}\n",
    )
    tick = Ticker(dagster_resources)

    first = tick()
    assert "FIRING pay-errors" in first.skip_reason.skip_message
    assert _checks(first)["alert_pay_errors"] is False and _checks(first)["rules_file_valid"] is True
    (alert,) = alert_receiver.messages
    assert (alert["rule"], alert["state"], alert["key"]) == (
        "pay-errors",
        "firing",
        f"service={service} env=test route=POST /pay",
    )
    assert alert["value"] == pytest.approx(50.0)  # 20 of 40 failed against a 1 % budget
    assert alert["threshold"] == 14.4 and "20/40 failed" in alert["message"]
    assert alert["dashboard_url"] == "http://dashboards.example/superset/dashboard/endpoints/"
    mail = message_from_bytes(smtp.messages[0], policy=email_policy)
    assert mail["Subject"].strip() == f"FIRING [critical] pay-errors: service={service} env=test route=POST /pay"

    # The projections answer the rule's question (not raw rows).
    rule = load_rules(Settings.from_env(), keep=False).rules.rules[0]
    sql, params = gather.burn_query(rule)
    assert set(re.findall(r"ReadFromMergeTree \((\w+)\)", str(ch.command(f"EXPLAIN {sql}", parameters=params)))) == {
        "p_route_minute"
    }

    second = tick()
    assert len(alert_receiver.messages) == 1 and "no alert fired" in second.skip_reason.skip_message
    # Without its cursor (a new Dagster instance) the sensor resumes from alert_events: no second page.
    tick(cursor=None)
    assert len(alert_receiver.messages) == 1

    # A broken rules file is rejected with its line; the last good rules keep running (nothing resolves).
    good = rules_file.read_text()
    rules_file.write_text(good + "  - name: broken\n    type: latency\n    scope: route\n    threshold_ms: -3\n")
    rejected = tick()
    bad_line = len(good.splitlines()) + 4
    assert f"rules.yaml:{bad_line}: threshold_ms must be" in rejected.skip_reason.skip_message
    assert "last good rules in force" in rejected.skip_reason.skip_message
    assert _checks(rejected)["rules_file_valid"] is False and len(alert_receiver.messages) == 1
    rules_file.write_text(good)

    healthy = [flat_event(service, ts=recent, route="POST /pay") for _ in range(1000)]
    ingest(stack.kafka, ch, service, healthy, expected=1080)
    resolved = tick()
    assert "RESOLVED pay-errors" in resolved.skip_reason.skip_message
    assert _checks(resolved)["alert_pay_errors"] is True
    assert [(m["state"], m["rule"]) for m in alert_receiver.messages] == [
        ("firing", "pay-errors"),
        ("resolved", "pay-errors"),
    ]
    tick()
    assert len(alert_receiver.messages) == 2 and len(smtp.messages) == 2

    history = ch.query(
        "SELECT state, round(value, 1), notified FROM alert_events WHERE rule = 'pay-errors' AND key LIKE {k:String} "
        "ORDER BY ts",
        parameters={"k": f"service={service}%"},
    ).result_rows
    assert [(s, n) for s, _, n in history] == [("firing", ["hook", "mail"]), ("resolved", ["hook", "mail"])]
    assert history[0][1] == 50.0
    status = ch.query(
        "SELECT key, argMax(state, evaluated_at) FROM alert_status WHERE rule = 'pay-errors' AND key LIKE {k:String} "
        "GROUP BY key ORDER BY key",
        parameters={"k": f"service={service}%"},
    ).result_rows
    assert status == [
        (f"service={service} env=test route=GET /ok", "ok"),
        (f"service={service} env=test route=POST /pay", "ok"),
    ]


def _llm_rows(provider: str, model: str, at: datetime, latency_ms: float, rng: random.Random, n: int) -> list[list]:
    return [
        [at - timedelta(seconds=rng.randint(0, 300)), uuid.uuid4().hex, uuid.uuid4().hex[:16], "anomaly-svc", "test",
         "llm", False, model, provider, "ok", max(1, int(rng.gauss(latency_ms, latency_ms * 0.05))), 100, 20,
         Decimal("0.001"), datetime.now(UTC)]
        for _ in range(n)
    ]  # fmt: skip


def test_a_latency_anomaly_on_one_model_fires_for_that_model_only(
    stack, ch, dagster_resources, alert_receiver, rules_file
):
    provider = f"anomaly-{uuid.uuid4().hex[:6]}"
    rng = random.Random(11)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for window in range(1, 13):  # two hours of 10-minute windows, ~500 ms for both models
        middle = now - timedelta(minutes=10 * window + 5)
        rows += _llm_rows(provider, "steady-model", middle, 500, rng, 15) + _llm_rows(
            provider, "slow-model", middle, 500, rng, 15
        )
    current = now - timedelta(minutes=1)
    rows += _llm_rows(provider, "steady-model", current, 500, rng, 15) + _llm_rows(
        provider, "slow-model", current, 4000, rng, 15
    )
    ch.insert(
        "agent_events",
        rows,
        column_names=["ts", "trace_id", "span_id", "service", "env", "kind", "is_request", "model", "provider",
                      "status", "latency_ms", "tokens_prompt", "tokens_completion", "cost_usd", "ingested_at"],
    )  # fmt: skip
    _write(
        rules_file,
        alert_receiver.url,
        "  - name: model-latency\n    type: anomaly\n    scope: model\n"
        "    metrics: [latency_p95, error_rate, tokens_per_call]\n"
        f"    window_minutes: 10\n    baseline_hours: 2\n    min_events: 10\n    where: {{provider: [{provider}]}}\n",
    )
    tick = Ticker(dagster_resources)
    result = tick()
    fired = [(m["key"], m["state"]) for m in alert_receiver.messages]
    assert fired == [(f"model=slow-model provider={provider} metric=latency_p95", "firing")], result.skip_reason
    assert alert_receiver.messages[0]["value"] > 6  # the robust z-score
    assert "baseline median" in alert_receiver.messages[0]["message"]
    evaluated = ch.query(
        "SELECT count(), countIf(state = 'firing') FROM alert_status "
        "WHERE rule = 'model-latency' AND key LIKE {p:String}",
        parameters={"p": f"%provider={provider}%"},
    ).result_rows[0]
    assert evaluated == (6, 1)  # two models x three metrics, one firing

    rule = load_rules(Settings.from_env(), keep=False).rules.rules[0]
    sql, params = gather.anomaly_query(rule)
    plan = str(ch.command(f"EXPLAIN {sql}", parameters=params))
    assert set(re.findall(r"ReadFromMergeTree \((\w+)\)", plan)) == {"p_model_minute"}
    # Removing the rule resolves what it fired (and leaves no firing alert to the next test).
    _write(rules_file, alert_receiver.url, "  []\n")
    tick()
    assert [m["state"] for m in alert_receiver.messages] == ["firing", "resolved"]
    assert alert_receiver.messages[1]["message"] == "the rule was removed from the rules file"


def test_consumer_lag_alerts_when_clickhouse_stops_consuming_and_recovers(
    stack, ch, dagster_resources, alert_receiver, rules_file
):
    _write(rules_file, alert_receiver.url, "  - {name: lag, type: consumer_lag, max_messages: 20, for_seconds: 0}\n")
    group = f"{stack.kafka.consumer_group_prefix}_agent_events"
    tick = Ticker(dagster_resources)
    tick()
    assert alert_receiver.messages == []

    ch.command("DETACH TABLE kafka_agent_events")  # ClickHouse's consumer stops
    try:
        produce(stack.kafka, stack.kafka.events_topic, [flat_event("lag-test") for _ in range(100)])
        tick()
        tick()  # still lagging: no second page
    finally:
        ch.command("ATTACH TABLE kafka_agent_events")
    assert [(m["key"], m["state"]) for m in alert_receiver.messages] == [(f"group={group}", "firing")]
    assert alert_receiver.messages[0]["value"] >= 100 and "behind" in alert_receiver.messages[0]["message"]

    def recovered() -> bool:
        tick()
        return [m["state"] for m in alert_receiver.messages] == ["firing", "resolved"]

    wait_for(recovered, 90, "the recovery message")


def test_health_sensor_observes_streams_and_writes_samples(stack, ch, dagster_resources):
    before = int(ch.command("SELECT count() FROM pipeline_health_samples"))
    result = build_pipeline_health_sensor()(dg.build_sensor_context(resources=dagster_resources))
    checks = {e.asset_key.path[0]: e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)}
    assert set(checks) == {"span_inbox", "agent_events", "dead_letters"}
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    observed = {e.asset_key.path[0] for e in result.asset_events if isinstance(e, dg.AssetObservation)}
    assert {"pipeline_health", "kafka_topics", "span_inbox", "agent_events", "dead_letters"} <= observed
    metrics = {m for (m,) in ch.query("SELECT DISTINCT metric FROM pipeline_health_samples").result_rows}
    assert {"consumer_lag", "consumer_lag_total", "collector_queue_size", "settling_spans"} <= metrics
    assert int(ch.command("SELECT count() FROM pipeline_health_samples")) > before


def test_the_shipped_rules_evaluate_on_the_real_stack(stack, dagster_resources, monkeypatch):
    monkeypatch.delenv("METRICS_PLATFORM_ALERT_RULES", raising=False)
    loaded = load_rules(Settings.from_env(), keep=False)
    assert loaded.error is None and {r.type for r in loaded.rules.rules} == set(rules.RULE_TYPES)
    result = Ticker(dagster_resources)()
    text = result.skip_reason.skip_message
    assert f"{len(loaded.rules.rules)} rules" in text and "not evaluated" not in text, text
