"""Alert rules, burn rates, anomaly scores, state transitions and notifications on plain data (no stack)."""

from __future__ import annotations

import email.policy
import json
import socket
import time
from email import message_from_bytes
from pathlib import Path

import pytest

from metrics_platform.alerting import anomaly, burn, evaluate, notify, rules, state
from metrics_platform.alerting.burn import Counts
from metrics_platform.alerting.evaluate import AnomalyBucket, Freshness, Gathered

ROOT = Path(__file__).resolve().parent.parent


def _rule(text: str) -> rules.Rule:
    return rules.parse_rules("rules:\n" + text).rules[0]


# --- the rules file -------------------------------------------------------------------------------


def test_the_repository_rules_file_is_valid_and_covers_every_rule_type():
    path = ROOT / "deploy" / "alerts" / "rules.yaml"
    ruleset = rules.parse_rules(path.read_text(), path)
    assert {r.type for r in ruleset.rules} == set(rules.RULE_TYPES)
    assert {r.scope for r in ruleset.rules if r.type == "error_rate"} == {"route", "model", "account"}
    assert {r.scope for r in ruleset.rules if r.type == "anomaly"} == {"model", "provider"}


def test_defaults_and_fields_of_each_type():
    latency = _rule("  - {name: slow, type: latency, scope: route, threshold_ms: 2000}")
    assert (latency.objective, latency.windows, latency.min_events) == (0.95, rules.DEFAULT_WINDOWS, 20)
    assert latency.key_columns == ("service", "env", "route")
    lag = _rule("  - {name: lag, type: consumer_lag, max_messages: 5}")
    assert (lag.for_seconds, lag.dashboard_slug) == (120, "pipeline-health")
    budget = _rule("  - {name: b, type: cost_budget, budget_usd: 10, budgets: {acme: 50}}")
    assert (budget.budget_for("acme"), budget.budget_for("other")) == (50, 10)
    custom = _rule(
        "  - name: e\n    type: error_rate\n    scope: model\n    objective: 0.999\n    where: {provider: [openai]}\n"
        "    windows: [{long_minutes: 30, short_minutes: 3, burn_rate: 10, severity: warning}]"
    )
    assert custom.windows == (rules.BurnWindow(30, 3, 10.0, "warning"),)
    assert custom.matches({"provider": "openai"}) and not custom.matches({"provider": "anthropic"})


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("rules:\n  - {name: a, type: error_rate, scope: route}\n", 2, "needs objective"),
        ("rules:\n  - name: a\n    type: error_rate\n    scope: route\n    objective: 1.5\n", 5, "objective must be"),
        ("rules:\n  - name: a\n    type: latency\n    scope: galaxy\n    threshold_ms: 9\n", 4, "scope 'galaxy'"),
        ("rules:\n  - name: a\n    type: nope\n", 3, "type 'nope'"),
        ("rules:\n  - name: a\n    type: consumer_lag\n    max_messages: 5\n    objective: 0.9\n", 5, "does not apply"),
        ("rules:\n  - name: Bad Name\n    type: freshness\n    max_seconds: 5\n", 2, "must match"),
        ("rules:\n  - {name: a, type: freshness, max_seconds: 5}\n  - {name: a, type: freshness, max_seconds: 6}\n",
         3, "already used at line 2"),
        ("rules:\n  - {name: a, type: freshness, max_seconds: 5, notify: [pager]}\n", 2, "unknown channel"),
        ("channels:\n  x: {type: email}\n", 2, "needs to:"),
        ("channels:\n  x: {type: slack, url: ftp://x}\n", 2, "must start with http"),
        ("rules:\n  - name: a\n    type: error_rate\n    scope: route\n    objective: 0.9\n    where: {model: x}\n",
         6, "unknown field 'model'"),
        ("rules:\n  - name: a\n    type: error_rate\n    scope: route\n    objective: 0.9\n"
         "    windows: [{long_minutes: 5, short_minutes: 60, burn_rate: 2}]\n", 6, "must be shorter"),
        ("rules:\n  - {name: a, type: cost_budget}\n", 2, "needs budget_usd"),
        ("rules:\n  - {name: a, type: anomaly, scope: model, metrics: [vibes]}\n", 2, "vibes unknown"),
        ("rules:\n  - name: a\n    type: freshness\n   max_seconds: 5\n", 4, "not valid YAML"),
    ],
)  # fmt: skip
def test_a_malformed_rules_file_is_rejected_with_its_line(text, line, message):
    with pytest.raises(rules.RulesError) as error:
        rules.parse_rules(text, "alerts.yaml")
    assert any(p.startswith(f"alerts.yaml:{line}:") and message in p for p in error.value.problems), error.value


def test_every_problem_is_reported_at_once():
    text = "rules:\n  - {name: a, type: error_rate}\n  - {name: b, type: latency, scope: route}\n"
    with pytest.raises(rules.RulesError) as error:
        rules.parse_rules(text, "f.yaml")
    assert len(error.value.problems) >= 3  # scope and objective of a; threshold_ms of b


def test_a_bad_file_keeps_the_last_good_rules(tmp_path):
    path, last_good = tmp_path / "rules.yaml", tmp_path / "state" / "last-good.yaml"
    assert rules.load(path, last_good).rules.rules == ()  # no file: no rules, no error
    path.write_text("rules:\n  - {name: lag, type: consumer_lag, max_messages: 5}\n")
    good = rules.load(path, last_good)
    assert good.error is None and [r.name for r in good.rules.rules] == ["lag"] and last_good.exists()
    path.write_text("rules:\n  - {name: lag, type: consumer_lag, max_messages: -5}\n")
    bad = rules.load(path, last_good)
    assert bad.from_last_good and "rules.yaml:2:" in (bad.error or "")
    assert [(r.name, r.max_messages) for r in bad.rules.rules] == [("lag", 5)]


# --- burn rates ---------------------------------------------------------------------------------------


def test_burn_rate_pairs_fire_only_when_both_windows_burn():
    windows = rules.DEFAULT_WINDOWS
    # 50 % failures in the last 5 minutes and the hour: 50x a 1 % budget.
    burst = {5: Counts(40, 20), 30: Counts(40, 20), 60: Counts(40, 20), 360: Counts(40, 20)}
    result = burn.evaluate(burst, 0.99, windows, 20, "failed")
    assert (result.breached, result.severity, result.threshold) == (True, "critical", 14.4)
    assert result.value == pytest.approx(50.0)
    assert "20/40 failed" in result.detail
    # The burst is over: the short window is clean, so the page resolves although the hour still burns.
    over = {5: Counts(100, 0), 30: Counts(400, 20), 60: Counts(440, 40), 360: Counts(440, 40)}
    assert not burn.evaluate(over, 0.99, windows, 20, "failed").breached
    # Slow burn: 8 % over six hours and the last half hour only reaches the warning pair.
    slow = {5: Counts(50, 4), 30: Counts(300, 24), 60: Counts(600, 48), 360: Counts(3600, 288)}
    result = burn.evaluate(slow, 0.99, windows, 20, "failed")
    assert (result.breached, result.severity, round(result.value, 6)) == (True, "warning", 8.0)
    # Too few events in the long window never fire.
    assert not burn.evaluate({5: Counts(3, 3), 60: Counts(3, 3)}, 0.99, windows, 20, "failed").breached


# --- anomalies ----------------------------------------------------------------------------------------


def test_robust_z_ignores_outliers_in_the_baseline_and_floors_a_flat_one():
    baseline = [500, 510, 490, 505, 495, 5000]  # one bad window yesterday
    s = anomaly.score(900, baseline, absolute_floor=5)
    assert s.median == 502.5 and s.mad == 7.5
    assert s.scale == pytest.approx(50.25)  # 10 % of the median beats 1.4826 * 7.5
    assert s.z == pytest.approx((900 - 502.5) / 50.25)
    assert anomaly.is_anomalous(s, 6) and not anomaly.is_anomalous(s, 6, "down")
    flat = anomaly.score(0.02, [0.0] * 10, absolute_floor=0.01)
    assert flat.z == pytest.approx(2.0) and not anomaly.is_anomalous(flat, 6)


def _buckets(p95s: list[float], calls: int = 50) -> list[AnomalyBucket]:
    return [AnomalyBucket(i, calls, 1, calls * 100, p / 2, p) for i, p in enumerate(p95s)]


def test_a_latency_anomaly_fires_for_that_model_only():
    rule = _rule("  - {name: m, type: anomaly, scope: model, metrics: [latency_p95, error_rate], min_events: 20}")
    data = Gathered(
        buckets={
            ("gpt-4.1", "openai"): _buckets([4000, 800, 810, 790, 805, 795, 800, 820]),
            ("claude", "anthropic"): _buckets([1010, 1000, 990, 1005, 1020, 980, 1000, 995]),
            ("tiny", "groq"): _buckets([9000, 100, 100], calls=50),  # too short a baseline
        }
    )
    verdicts = evaluate.evaluate(rule, data)
    fired = [(v.key, round(v.value)) for v in verdicts if v.breached]
    assert fired == [("model=gpt-4.1 provider=openai metric=latency_p95", 40)]
    assert {v.labels["model"] for v in verdicts} == {"gpt-4.1", "claude"}


# --- other rule types -----------------------------------------------------------------------------


def test_budgets_lag_dead_letters_and_freshness():
    budget = _rule(
        "  - {name: b, type: cost_budget, budget_usd: 10, budgets: {big: 100}, where: {account_id: [a, big]}}"
    )
    found = evaluate.evaluate(budget, Gathered(costs={"a": 12.5, "big": 50.0, "c": 99.0}))
    assert [(v.key, v.breached, v.threshold) for v in found] == [
        ("account_id=a", True, 10),
        ("account_id=big", False, 100),
    ]
    lag = _rule("  - {name: l, type: consumer_lag, max_messages: 100}")
    assert [v.breached for v in evaluate.evaluate(lag, Gathered(lags={"g1": 101, "g2": 3}))] == [True, False]
    dead = _rule("  - {name: d, type: dead_letters, max_per_minute: 2, window_minutes: 10}")
    (verdict,) = evaluate.evaluate(dead, Gathered(dead_letters=25))
    assert verdict.breached and verdict.value == 2.5
    fresh = _rule("  - {name: f, type: freshness, max_seconds: 60}")
    assert evaluate.evaluate(fresh, Gathered(freshness=Freshness(75.0, 3.0)))[0].breached
    newest = _rule("  - {name: n, type: freshness, max_seconds: 60, measure: newest}")
    assert evaluate.evaluate(newest, Gathered(freshness=Freshness(0.0, None))) == []


# --- state ------------------------------------------------------------------------------------------


def _verdict(rule: str, key: str, breached: bool, value: float = 1.0) -> evaluate.Evaluation:
    return evaluate.Evaluation(rule, "error_rate", key, {}, breached, value, 14.4, "critical", f"value {value}")


def test_each_transition_happens_once():
    by_name = {"r": _rule("  - {name: r, type: error_rate, scope: route, objective: 0.99}")}
    active, t1 = state.step({}, {"r": [_verdict("r", "k", True, 50)]}, by_name, now=100)
    assert [(t.state, t.value) for t in t1] == [("firing", 50)]
    active, t2 = state.step(active, {"r": [_verdict("r", "k", True, 60)]}, by_name, now=130)
    assert t2 == [] and active[("r", "k")].value == 60
    active, t3 = state.step(active, {"r": None}, by_name, now=160)  # ClickHouse unreachable: no change
    assert t3 == [] and ("r", "k") in active
    active, t4 = state.step(active, {"r": [_verdict("r", "k", False, 0.5)]}, by_name, now=190)
    assert [t.state for t in t4] == ["resolved"] and active == {}
    _, t5 = state.step(active, {"r": [_verdict("r", "k", False)]}, by_name, now=220)
    assert t5 == []


def test_for_seconds_holds_a_breach_pending_and_removed_rules_resolve():
    by_name = {"lag": _rule("  - {name: lag, type: consumer_lag, max_messages: 1, for_seconds: 60}")}
    active, t = state.step({}, {"lag": [_verdict("lag", "g", True)]}, by_name, now=0)
    assert t == [] and active[("lag", "g")].state == "pending"
    active, t = state.step(active, {"lag": [_verdict("lag", "g", True)]}, by_name, now=59)
    assert t == []
    active, t = state.step(active, {"lag": [_verdict("lag", "g", True)]}, by_name, now=61)
    assert [x.state for x in t] == ["firing"]
    assert state.decode(json.loads(json.dumps(state.encode(active)))) == active
    _, t = state.step(active, {}, {}, now=90)
    assert [(x.state, x.detail) for x in t] == [("resolved", "the rule was removed from the rules file")]


# --- notifications -----------------------------------------------------------------------------------


class SmtpReceiver:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[bytes] = []
        received = self.messages

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
                received.append(envelope.content)
                return "250 OK"

        with socket.socket() as probe:  # a free port: aiosmtpd's own start-up check needs a real one
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def test_notifications_reach_slack_webhook_and_email_receivers(alert_receiver):
    smtpd = SmtpReceiver()
    try:
        key = "service=api env=prod route=POST /pay"
        transition = state.Transition("request-errors", "error_rate", key, "", "firing", "critical", 50.0, 14.4,
                                      "burn rate 50.0x over 1 h", time.time())  # fmt: skip
        rule = _rule("  - {name: request-errors, type: error_rate, scope: route, objective: 0.99, description: Fix it}")
        item = notify.notice(transition, rule, "http://superset.example:8088")
        channels = [
            rules.Channel("chat", "slack", url=alert_receiver.url),
            rules.Channel("ops", "webhook", url_env="OPS_HOOK"),
            rules.Channel("mail", "email", to=("oncall@example.com",)),
            rules.Channel("unset", "slack", url_env="NOT_SET_ANYWHERE"),
        ]
        smtp = notify.Smtp("127.0.0.1", smtpd.port, sender="alerts@example.com")
        delivered, problems = notify.deliver(item, channels, smtp, environ={"OPS_HOOK": alert_receiver.url})
        assert delivered == ["chat", "ops", "mail"]
        assert problems == ["channel unset: NOT_SET_ANYWHERE is not set; not sent"]
        slack, generic = alert_receiver.messages
        assert set(slack) == {"text"} and "FIRING [critical] request-errors" in slack["text"]
        assert "<http://superset.example:8088/superset/dashboard/endpoints/|Open the dashboard>" in slack["text"]
        assert (generic["rule"], generic["state"], generic["value"], generic["threshold"]) == (
            "request-errors", "firing", 50.0, 14.4
        )  # fmt: skip
        mail = message_from_bytes(smtpd.messages[0], policy=email.policy.default)
        assert mail["Subject"].strip() == "FIRING [critical] request-errors: service=api env=prod route=POST /pay"
        assert mail["To"] == "oncall@example.com"
        body = mail.get_content()
        assert "burn rate 50.0x" in body and "Fix it" in body and "/superset/dashboard/endpoints/" in body
    finally:
        smtpd.stop()


def test_a_failing_channel_is_reported_and_does_not_stop_the_others(alert_receiver):
    transition = state.Transition("r", "freshness", "settling", "", "resolved", "warning", 1, 60, "ok again", 0)
    item = notify.notice(transition, None, "http://x")
    channels = [rules.Channel("dead", "webhook", url="http://127.0.0.1:9/none"),
                rules.Channel("live", "webhook", url=alert_receiver.url)]  # fmt: skip
    delivered, problems = notify.deliver(item, channels, None, timeout_s=3)
    assert delivered == ["live"] and problems[0].startswith("channel dead (webhook): POST to 127.0.0.1:9 failed")
    assert alert_receiver.messages[0]["state"] == "resolved"


# --- what Dagster shows ----------------------------------------------------------------------------


def test_streams_are_up_to_date_unless_consumers_lag_or_spans_wait_too_long():
    from metrics_platform.pipeline_health import streams_up_to_date

    idle = {"settling_spans": 0.0, "stranded_spans": 0.0}
    verdicts = streams_up_to_date(idle, {"g_spans": 0, "g_events": 0}, "g_spans", 30, 70)
    assert all(ok for ok, _ in verdicts.values())
    late = streams_up_to_date(
        {**idle, "oldest_settling_s": 150.0}, {"g_spans": 50_000, "g_events": 0}, "g_spans", 30, 70
    )
    assert {name: ok for name, (ok, _) in late.items()} == {
        "span_inbox": False,
        "dead_letters": False,
        "agent_events": False,
    }
    assert "150 s (limit 100 s)" in late["agent_events"][1]
    unknown = streams_up_to_date({}, None, "g_spans", 30, 70)
    assert not any(ok for ok, _ in unknown.values())


def test_replay_partitions_start_at_the_first_day_with_history(tmp_path, monkeypatch):
    from metrics_platform.defs.replay import first_history_day, partitions_start
    from metrics_platform.settings import Settings

    assert first_history_day(tmp_path / "missing") is None
    for name in ("2026-03-04.jsonl.gz", "2026-02-30.jsonl", "2026-05-01.jsonl", "notes.jsonl", "2026-01-09.txt"):
        (tmp_path / name).write_text("")
    assert str(first_history_day(tmp_path)) == "2026-03-04"  # 02-30 is no day, .txt no history
    monkeypatch.setenv("METRICS_PLATFORM_HISTORY_DIR", str(tmp_path))
    monkeypatch.setenv("METRICS_PLATFORM_HISTORY_START_DATE", "")
    assert partitions_start(Settings.from_env()) == "2026-03-04"
    monkeypatch.setenv("METRICS_PLATFORM_HISTORY_START_DATE", "2025-12-01")  # an explicit start wins
    assert partitions_start(Settings.from_env()) == "2025-12-01"
