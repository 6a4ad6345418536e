"""From a rule and the numbers gathered for it to one verdict per key (pure functions).

gather.py fills the plain data classes below from ClickHouse and Kafka; nothing here does I/O, so
every decision is unit-tested on hand-made numbers (tests/test_alerts_units.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from metrics_platform.alerting import anomaly, burn
from metrics_platform.alerting.burn import Counts
from metrics_platform.alerting.rules import Rule

Labels = tuple[str, ...]  # a key's values, in the order of the rule's key columns


@dataclass(frozen=True)
class Evaluation:
    """One rule's verdict for one key at one moment."""

    rule: str
    rule_type: str
    key: str  # "service=api env=prod route=POST /v1/answer"
    labels: dict[str, str]
    breached: bool
    value: float
    threshold: float
    severity: str
    detail: str

    @property
    def account_id(self) -> str:
        return self.labels.get("account_id", "")


@dataclass(frozen=True)
class AnomalyBucket:
    """One window of a model's LLM calls; index 0 is the current window, 1.. the baseline (older)."""

    index: int
    calls: int
    errors: int
    tokens: int
    p50_ms: float
    p95_ms: float

    def metric(self, name: str) -> float:
        return {
            "latency_p95": self.p95_ms,
            "latency_p50": self.p50_ms,
            "error_rate": self.errors / self.calls if self.calls else 0.0,
            "tokens_per_call": self.tokens / self.calls if self.calls else 0.0,
        }[name]


@dataclass(frozen=True)
class Freshness:
    """Age of the oldest span still waiting to become final, and of the newest final span (None: none)."""

    oldest_settling_s: float
    newest_span_s: float | None


@dataclass
class Gathered:
    """What gather.py found for one rule; only the field of the rule's type is filled."""

    windows: dict[Labels, dict[int, Counts]] = field(default_factory=dict)  # error_rate, latency
    costs: dict[str, float] = field(default_factory=dict)  # cost_budget: account_id -> USD today
    lags: dict[str, int] = field(default_factory=dict)  # consumer_lag: group -> messages behind
    dead_letters: int = 0  # dead_letters: count in the rule's window
    freshness: Freshness | None = None
    buckets: dict[Labels, list[AnomalyBucket]] = field(default_factory=dict)  # anomaly


def key_text(columns: Sequence[str], values: Sequence[str]) -> str:
    """The key as people read it: ``service=api env=prod``; empty values show as ``(none)``."""
    return " ".join(f"{c}={v or '(none)'}" for c, v in zip(columns, values, strict=True))


def _one(rule: Rule, columns: Sequence[str], values: Sequence[str], **verdict: object) -> Evaluation:
    return Evaluation(
        rule=rule.name,
        rule_type=rule.type,
        key=key_text(columns, values),
        labels=dict(zip(columns, values, strict=True)),
        **verdict,  # type: ignore[arg-type]
    )


def _burn(rule: Rule, data: Gathered) -> list[Evaluation]:
    bad_name = "failed" if rule.type == "error_rate" else f"slower than {rule.threshold_ms:g} ms"
    out = []
    for values, counts in sorted(data.windows.items()):
        labels = dict(zip(rule.key_columns, values, strict=True))
        if not rule.matches(labels):
            continue
        result = burn.evaluate(counts, rule.objective, rule.windows, rule.min_events, bad_name)
        what = (
            "error budget"
            if rule.type == "error_rate"
            else f"latency budget (p{rule.objective * 100:g} under {rule.threshold_ms:g} ms)"
        )
        out.append(
            _one(rule, rule.key_columns, values, breached=result.breached, value=result.value,
                 threshold=result.threshold, severity=result.severity if result.breached else rule.severity,
                 detail=f"{what}: {result.detail}")
        )  # fmt: skip
    return out


def _cost(rule: Rule, data: Gathered) -> list[Evaluation]:
    out = []
    for account, cost in sorted(data.costs.items()):
        budget = rule.budget_for(account)
        if budget is None or not rule.matches({"account_id": account}):
            continue
        share = f" ({cost / budget:.0%})" if budget else ""
        detail = f"cost today ${cost:,.2f} of a ${budget:,.2f} daily budget{share}"
        out.append(
            _one(rule, ("account_id",), (account,), breached=cost > budget, value=cost, threshold=budget,
                 severity=rule.severity, detail=detail)
        )  # fmt: skip
    return out


def _lag(rule: Rule, data: Gathered) -> list[Evaluation]:
    return [
        _one(rule, ("group",), (group,), breached=lag > rule.max_messages, value=float(lag),
             threshold=float(rule.max_messages), severity=rule.severity,
             detail=f"{lag:,} messages behind (limit {rule.max_messages:,}): is ClickHouse consuming?")
        for group, lag in sorted(data.lags.items())
    ]  # fmt: skip


def _dead_letters(rule: Rule, data: Gathered) -> list[Evaluation]:
    rate = data.dead_letters / rule.window_minutes
    detail = (
        f"{data.dead_letters:,} dead letters in {rule.window_minutes} min = {rate:.1f}/min "
        f"(limit {rule.max_per_minute:g}/min); see dead_letters for the reasons"
    )
    return [
        Evaluation(rule.name, rule.type, "all", {}, rate > rule.max_per_minute, rate, rule.max_per_minute,
                   rule.severity, detail)
    ]  # fmt: skip


def _freshness(rule: Rule, data: Gathered) -> list[Evaluation]:
    fresh = data.freshness
    if fresh is None:
        return []
    if rule.measure == "settling":
        age, what = fresh.oldest_settling_s, "oldest span still waiting to become final"
    elif fresh.newest_span_s is None:
        return []  # no span in the last day: nothing to be stale
    else:
        age, what = fresh.newest_span_s, "newest final span"
    detail = f"{what}: {age:,.0f} s old (limit {rule.max_seconds:g} s)"
    return [
        Evaluation(rule.name, rule.type, rule.measure, {}, age > rule.max_seconds, age, rule.max_seconds,
                   rule.severity, detail)
    ]  # fmt: skip


def _anomaly(rule: Rule, data: Gathered) -> list[Evaluation]:
    out = []
    for values, buckets in sorted(data.buckets.items()):
        labels = dict(zip(rule.key_columns, values, strict=True))
        if not rule.matches(labels):
            continue
        current = next((b for b in buckets if b.index == 0 and b.calls >= rule.min_events), None)
        baseline = [b for b in buckets if b.index > 0 and b.calls >= rule.min_events]
        if current is None or len(baseline) < rule.min_baseline_buckets:
            continue  # too little traffic to judge
        for metric in rule.metrics:
            s = anomaly.score(current.metric(metric), [b.metric(metric) for b in baseline],
                              anomaly.ABSOLUTE_FLOORS[metric])  # fmt: skip
            breached = anomaly.is_anomalous(s, rule.threshold, rule.direction)
            detail = (
                f"{metric} {_fmt(metric, s.current)} over the last {rule.window_minutes} min ({current.calls} calls) "
                f"vs baseline median {_fmt(metric, s.median)} (MAD {_fmt(metric, s.mad)}, {s.baseline_size} windows "
                f"over {rule.baseline_hours} h): robust z {s.z:+.1f}, fires at {rule.threshold:g}"
            )
            out.append(
                _one(rule, (*rule.key_columns, "metric"), (*values, metric), breached=breached, value=s.z,
                     threshold=rule.threshold, severity=rule.severity, detail=detail)
            )  # fmt: skip
    return out


def _fmt(metric: str, value: float) -> str:
    if metric.startswith("latency"):
        return f"{value:,.0f} ms"
    if metric == "error_rate":
        return f"{value:.1%}"
    return f"{value:,.0f}"


_EVALUATORS = {
    "error_rate": _burn,
    "latency": _burn,
    "cost_budget": _cost,
    "consumer_lag": _lag,
    "dead_letters": _dead_letters,
    "freshness": _freshness,
    "anomaly": _anomaly,
}


def evaluate(rule: Rule, data: Gathered) -> list[Evaluation]:
    """Every key's verdict for ``rule`` (keys outside its ``where`` filters are left out)."""
    return _EVALUATORS[rule.type](rule, data)
