"""Alert state per rule and key: ok → (pending →) firing → resolved, and the transitions to announce.

Pure: the sensor passes the previous state (from its cursor), this tick's verdicts and the time,
and gets the new state and the transitions; each transition is stored and notified exactly once.

- A breached key fires at once, or after ``for_seconds`` of being breached without a break (pending).
- A firing key resolves when its verdict is no longer breached, or when it has no verdict at all
  (no traffic left in the windows); a pending key that clears is dropped silently.
- A rule that could not be evaluated this tick (ClickHouse or Kafka unreachable) keeps its state:
  an outage of the measurement is not a recovery.
- A rule removed from the file resolves its firing keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from metrics_platform.alerting.evaluate import Evaluation
from metrics_platform.alerting.rules import Rule

StateKey = tuple[str, str]  # (rule name, key)


@dataclass(frozen=True)
class Active:
    """A key that is pending or firing."""

    state: str  # pending | firing
    since: float  # epoch seconds when it became breached
    rule_type: str
    account_id: str
    severity: str
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class Transition:
    """A change to announce: a key started firing, or resolved."""

    rule: str
    rule_type: str
    key: str
    account_id: str
    state: str  # firing | resolved
    severity: str
    value: float
    threshold: float
    detail: str
    at: float


def _active(e: Evaluation, state: str, since: float) -> Active:
    return Active(state, since, e.rule_type, e.account_id, e.severity, e.value, e.threshold, e.detail)


def step(
    active: Mapping[StateKey, Active],
    results: Mapping[str, list[Evaluation] | None],
    rules: Mapping[str, Rule],
    now: float,
) -> tuple[dict[StateKey, Active], list[Transition]]:
    """The next state and the transitions, from this tick's verdicts per rule (None: not evaluated)."""
    following: dict[StateKey, Active] = {}
    transitions: list[Transition] = []

    def resolve(key: StateKey, before: Active, value: float, detail: str) -> None:
        if before.state == "firing":
            transitions.append(
                Transition(key[0], before.rule_type, key[1], before.account_id, "resolved", before.severity, value,
                           before.threshold, detail, now)
            )  # fmt: skip

    for (rule_name, key), before in active.items():
        if rule_name not in rules:
            resolve((rule_name, key), before, before.value, "the rule was removed from the rules file")
        elif results.get(rule_name) is None:
            following[(rule_name, key)] = before  # not evaluated this tick: unchanged
    for rule_name, evaluations in results.items():
        if evaluations is None or rule_name not in rules:
            continue
        rule = rules[rule_name]
        seen: set[str] = set()
        for e in evaluations:
            seen.add(e.key)
            sk = (rule_name, e.key)
            before = active.get(sk)
            if not e.breached:
                if before is not None:
                    resolve(sk, before, e.value, e.detail)
                continue
            since = before.since if before is not None else now
            firing = (before is not None and before.state == "firing") or now - since >= rule.for_seconds
            following[sk] = _active(e, "firing" if firing else "pending", since)
            if firing and (before is None or before.state != "firing"):
                transitions.append(
                    Transition(rule_name, e.rule_type, e.key, e.account_id, "firing", e.severity, e.value,
                               e.threshold, e.detail, now)
                )  # fmt: skip
        for (name, key), before in active.items():
            if name == rule_name and key not in seen:
                resolve((name, key), before, 0.0, "no data in the rule's windows any more")
    return following, transitions


def status(evaluation: Evaluation, following: Mapping[StateKey, Active]) -> str:
    """ok, pending or firing: a verdict's state after the step (for the alert_status table)."""
    current = following.get((evaluation.rule, evaluation.key))
    return current.state if current is not None else "ok"


def encode(active: Mapping[StateKey, Active]) -> list[list[object]]:
    """The state as JSON-able data (for the sensor's cursor)."""
    return [[rule, key, asdict(a)] for (rule, key), a in sorted(active.items())]


def decode(data: list[list[object]] | None) -> dict[StateKey, Active]:
    """The state from ``encode``'s data (empty for none)."""
    return {(str(rule), str(key)): Active(**fields) for rule, key, fields in data or []}  # type: ignore[arg-type]
