"""The alert rules file (default deploy/alerts/rules.yaml, or METRICS_PLATFORM_ALERT_RULES), read and checked.

The format is documented in deploy/alerts/README.md. Every problem is reported with the file and
line (from yaml.compose's node marks) and nothing of a bad file is used: the sensor keeps
evaluating the last good rules, a copy of which is kept in the state directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RULE_TYPES = ("error_rate", "latency", "cost_budget", "consumer_lag", "dead_letters", "freshness", "anomaly")
SEVERITIES = ("critical", "warning", "info")
CHANNEL_TYPES = ("slack", "webhook", "email")
# The columns a rule of each scope groups by (its key), in key order; `where` may filter on them.
SCOPE_COLUMNS: dict[str, tuple[str, ...]] = {
    "service": ("service", "env"),
    "route": ("service", "env", "route"),
    "model": ("service", "env", "model", "provider"),
    "account": ("account_id",),
}
ANOMALY_SCOPES: dict[str, tuple[str, ...]] = {"model": ("model", "provider"), "provider": ("provider",)}
ANOMALY_METRICS = ("latency_p95", "latency_p50", "error_rate", "tokens_per_call")
# The dashboard an alert links to when its rule names none.
DEFAULT_DASHBOARDS = {
    "error_rate": "endpoints",
    "latency": "endpoints",
    "cost_budget": "customers",
    "consumer_lag": "pipeline-health",
    "dead_letters": "pipeline-health",
    "freshness": "pipeline-health",
    "anomaly": "models",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class RulesError(ValueError):
    """The rules file cannot be used; the message lists every problem as ``file:line: what``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class BurnWindow:
    """A pair of windows: the rule fires when the burn rate is at least ``burn_rate`` in both."""

    long_minutes: int
    short_minutes: int
    burn_rate: float
    severity: str


# The SRE workbook's pairs: 2 % of a 30-day budget in an hour pages, 5 % in six hours opens a ticket.
DEFAULT_WINDOWS = (BurnWindow(60, 5, 14.4, "critical"), BurnWindow(360, 30, 6.0, "warning"))


@dataclass(frozen=True)
class Channel:
    """Where notifications go: a Slack-compatible webhook, a generic JSON webhook or e-mail."""

    name: str
    type: str
    url: str = field(default="", repr=False)  # slack, webhook (resolved from url_env when given)
    url_env: str = ""
    to: tuple[str, ...] = ()  # email
    line: int = 0


@dataclass(frozen=True)
class Rule:
    """One rule; which fields matter depends on ``type`` (see deploy/alerts/README.md)."""

    name: str
    type: str
    line: int
    severity: str = "critical"
    notify: tuple[str, ...] = ()  # channel names; empty = every channel
    dashboard: str = ""
    description: str = ""
    for_seconds: int = 0
    scope: str = ""
    where: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # error_rate / latency
    objective: float = 0.0
    threshold_ms: float = 0.0
    windows: tuple[BurnWindow, ...] = DEFAULT_WINDOWS
    min_events: int = 20
    # cost_budget
    budget_usd: float | None = None
    budgets: dict[str, float] = field(default_factory=dict)
    # consumer_lag / dead_letters / freshness
    max_messages: int = 0
    max_per_minute: float = 0.0
    window_minutes: int = 10
    max_seconds: float = 0.0
    measure: str = "settling"
    # anomaly
    metrics: tuple[str, ...] = ()
    baseline_hours: int = 24
    threshold: float = 6.0
    min_baseline_buckets: int = 6
    direction: str = "up"

    @property
    def key_columns(self) -> tuple[str, ...]:
        if self.type == "anomaly":
            return ANOMALY_SCOPES[self.scope]
        return SCOPE_COLUMNS.get(self.scope, ())

    @property
    def dashboard_slug(self) -> str:
        return self.dashboard or DEFAULT_DASHBOARDS[self.type]

    def budget_for(self, account_id: str) -> float | None:
        return self.budgets.get(account_id, self.budget_usd)

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a key passes the rule's ``where`` filters."""
        return all(labels.get(column, "") in allowed for column, allowed in self.where.items())


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    channels: dict[str, Channel] = field(default_factory=dict)
    source: str = ""

    def by_name(self) -> dict[str, Rule]:
        return {rule.name: rule for rule in self.rules}

    def channels_for(self, rule: Rule) -> list[Channel]:
        names = rule.notify or tuple(self.channels)
        return [self.channels[name] for name in names]


# --- reading nodes -------------------------------------------------------------------------------


class _Reader:
    """Reads values out of composed YAML nodes, collecting problems with their lines."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.problems: list[str] = []

    def at(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def problem(self, node: yaml.Node, text: str) -> None:
        self.problems.append(f"{self.at(node)}: {text}")

    def mapping(self, node: yaml.Node, allowed: set[str], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping")
            return {}
        fields: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key not in allowed:
                self.problem(key_node, f"{what}: unknown field {key!r} (expected one of {', '.join(sorted(allowed))})")
            elif key in fields:
                self.problem(key_node, f"{what}: {key!r} given twice")
            else:
                fields[key] = value_node
        return fields

    def text(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            self.problem(node, f"{what} must be a non-empty string")
            return None
        return str(node.value)

    def number(
        self, node: yaml.Node, what: str, low: float, high: float, integer: bool = False, open_low: bool = False
    ) -> float | None:
        raw = node.value if isinstance(node, yaml.ScalarNode) else None
        try:
            value = float(raw) if raw is not None and not integer else int(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = None
        if value is None or value != value or value < low or value > high or (open_low and value == low):
            kind = "a whole number" if integer else "a number"
            bounds = f"{'above' if open_low else 'from'} {low:g} {'up to' if not open_low else 'to'} {high:g}"
            self.problem(node, f"{what} must be {kind} {bounds}, not {raw!r}")
            return None
        return value

    def strings(self, node: yaml.Node, what: str) -> tuple[str, ...] | None:
        if isinstance(node, yaml.ScalarNode) and node.value != "":
            return (str(node.value),)
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.ScalarNode) and item.value != "" for item in node.value
        ):
            return tuple(str(item.value) for item in node.value)
        self.problem(node, f"{what} must be a string or a list of strings")
        return None

    def choice(self, node: yaml.Node, what: str, options: tuple[str, ...] | list[str]) -> str | None:
        value = self.text(node, what)
        if value is not None and value not in options:
            self.problem(node, f"{what} {value!r} is not one of {', '.join(options)}")
            return None
        return value


# Fields each rule type accepts, besides the common ones.
_COMMON = {"name", "type", "severity", "notify", "dashboard", "description", "for_seconds"}
_TYPE_FIELDS: dict[str, set[str]] = {
    "error_rate": {"scope", "where", "objective", "windows", "min_events"},
    "latency": {"scope", "where", "objective", "threshold_ms", "windows", "min_events"},
    "cost_budget": {"where", "budget_usd", "budgets"},
    "consumer_lag": {"max_messages"},
    "dead_letters": {"max_per_minute", "window_minutes"},
    "freshness": {"max_seconds", "measure"},
    "anomaly": {
        "scope", "where", "metrics", "window_minutes", "baseline_hours", "threshold", "min_events",
        "min_baseline_buckets", "direction",
    },
}  # fmt: skip
_REQUIRED: dict[str, tuple[str, ...]] = {
    "error_rate": ("scope", "objective"),
    "latency": ("scope", "threshold_ms"),
    "cost_budget": (),
    "consumer_lag": ("max_messages",),
    "dead_letters": ("max_per_minute",),
    "freshness": ("max_seconds",),
    "anomaly": ("scope",),
}


def _windows(r: _Reader, node: yaml.Node) -> tuple[BurnWindow, ...] | None:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        r.problem(node, "windows must be a non-empty list of {long_minutes, short_minutes, burn_rate, severity}")
        return None
    windows = []
    for item in node.value:
        fields = r.mapping(item, {"long_minutes", "short_minutes", "burn_rate", "severity"}, "window")
        missing = [k for k in ("long_minutes", "short_minutes", "burn_rate") if k not in fields]
        if missing:
            r.problem(item, f"window needs {', '.join(missing)}")
            continue
        long = r.number(fields["long_minutes"], "long_minutes", 1, 7 * 24 * 60, integer=True)
        short = r.number(fields["short_minutes"], "short_minutes", 1, 7 * 24 * 60, integer=True)
        rate = r.number(fields["burn_rate"], "burn_rate", 0, 1e6, open_low=True)
        severity = r.choice(fields["severity"], "severity", SEVERITIES) if "severity" in fields else "critical"
        if long is not None and short is not None and short >= long:
            r.problem(item, f"short_minutes ({short}) must be shorter than long_minutes ({long})")
        elif None not in (long, short, rate, severity):
            windows.append(BurnWindow(int(long), int(short), float(rate), str(severity)))  # type: ignore[arg-type]
    return tuple(windows)


def _rule(r: _Reader, node: yaml.Node, channels: dict[str, Channel]) -> Rule | None:
    before = len(r.problems)
    line = node.start_mark.line + 1
    every_field = set().union(_COMMON, *_TYPE_FIELDS.values())
    fields = r.mapping(node, every_field, "rule")
    if not fields:
        return None
    name = r.text(fields["name"], "name") if "name" in fields else None
    if "name" not in fields:
        r.problem(node, "rule needs a name")
    elif name is not None and not _NAME.fullmatch(name):
        r.problem(fields["name"], f"name {name!r} must match {_NAME.pattern} (lower case, digits, - and _)")
    if "type" not in fields:
        r.problem(node, f"rule {name or ''} needs a type ({', '.join(RULE_TYPES)})".replace("  ", " "))
        return None
    kind = r.choice(fields["type"], "type", RULE_TYPES)
    if kind is None:
        return None
    what = f"rule {name!r} ({kind})"
    for key, value_node in fields.items():
        if key not in _COMMON and key not in _TYPE_FIELDS[kind]:
            r.problem(value_node, f"{what}: field {key!r} does not apply to {kind} rules")
    for key in _REQUIRED[kind]:
        if key not in fields:
            r.problem(node, f"{what} needs {key}")
    values: dict[str, Any] = {}
    number_fields: dict[str, tuple[float, float, bool, bool]] = {
        # name: (low, high, integer, open_low)
        "objective": (0, 1, False, True),
        "threshold_ms": (0, 1e9, False, True),
        "min_events": (1, 1e9, True, False),
        "budget_usd": (0, 1e12, False, False),
        "max_messages": (0, 1e15, True, False),
        "max_per_minute": (0, 1e9, False, False),
        "window_minutes": (1, 24 * 60, True, False),
        "max_seconds": (0, 1e9, False, True),
        "baseline_hours": (1, 31 * 24, True, False),
        "threshold": (0, 1e6, False, True),
        "min_baseline_buckets": (2, 10_000, True, False),
        "for_seconds": (0, 7 * 24 * 3600, True, False),
    }
    for key, (low, high, integer, open_low) in number_fields.items():
        if key in fields:
            values[key] = r.number(fields[key], key, low, high, integer=integer, open_low=open_low)
    if values.get("objective") == 1:
        r.problem(fields["objective"], "objective must be below 1 (1 leaves no error budget)")
    if "severity" in fields:
        values["severity"] = r.choice(fields["severity"], "severity", SEVERITIES)
    for key in ("dashboard", "description"):
        if key in fields:
            values[key] = r.text(fields[key], key)
    if "notify" in fields:
        notify = r.strings(fields["notify"], "notify") or ()
        unknown = [n for n in notify if n not in channels]
        if unknown:
            r.problem(fields["notify"], f"notify names unknown channel(s) {', '.join(unknown)} "
                      f"(defined: {', '.join(channels) or 'none'})")  # fmt: skip
        values["notify"] = notify
    if "scope" in fields:
        scopes = tuple(ANOMALY_SCOPES if kind == "anomaly" else SCOPE_COLUMNS)
        values["scope"] = r.choice(fields["scope"], "scope", scopes)
    scope = values.get("scope")
    if "where" in fields:
        if kind == "cost_budget":
            allowed = ("account_id",)
        elif scope:
            allowed = (ANOMALY_SCOPES if kind == "anomaly" else SCOPE_COLUMNS)[scope]
        else:
            allowed = ()
        where: dict[str, tuple[str, ...]] = {}
        # Without a valid scope its problem is already reported; the filters cannot be checked.
        columns = r.mapping(fields["where"], set(allowed), "where").items() if allowed else ()
        for column, value_node in columns:
            chosen = r.strings(value_node, f"where.{column}")
            if chosen is not None:
                where[column] = chosen
        values["where"] = where
    if "windows" in fields:
        values["windows"] = _windows(r, fields["windows"])
    if "budgets" in fields:
        budgets: dict[str, float] = {}
        for account, value_node in r.mapping(fields["budgets"], _AnyKey(), "budgets").items():
            amount = r.number(value_node, f"budgets.{account}", 0, 1e12)
            if amount is not None:
                budgets[account] = float(amount)
        values["budgets"] = budgets
    if kind == "cost_budget" and "budget_usd" not in fields and "budgets" not in fields:
        r.problem(node, f"{what} needs budget_usd (every account) or budgets (per account id)")
    if "measure" in fields:
        values["measure"] = r.choice(fields["measure"], "measure", ("settling", "newest"))
    if "direction" in fields:
        values["direction"] = r.choice(fields["direction"], "direction", ("up", "down", "both"))
    if "metrics" in fields:
        chosen = r.strings(fields["metrics"], "metrics") or ()
        unknown = [m for m in chosen if m not in ANOMALY_METRICS]
        if unknown:
            r.problem(fields["metrics"], f"metrics {', '.join(unknown)} unknown (one of {', '.join(ANOMALY_METRICS)})")
        values["metrics"] = chosen
    if len(r.problems) > before or name is None:
        return None
    defaults: dict[str, Any] = {}
    if kind == "latency":
        defaults["objective"] = 0.95  # "p95 under threshold_ms"
    if kind == "anomaly":
        defaults["metrics"] = ("latency_p95", "error_rate", "tokens_per_call")
    if kind == "consumer_lag":
        defaults["for_seconds"] = 120
    merged = {**defaults, **{k: v for k, v in values.items() if v is not None}}
    for key in ("min_events", "max_messages", "window_minutes", "baseline_hours", "min_baseline_buckets",
                "for_seconds"):  # fmt: skip
        if key in merged:
            merged[key] = int(merged[key])
    return Rule(name=name, type=kind, line=line, **merged)


class _AnyKey(set):
    """Allows every key (a budgets mapping is keyed by account ids)."""

    def __contains__(self, item: object) -> bool:
        return True


def _channel(r: _Reader, name: str, node: yaml.Node) -> Channel | None:
    before = len(r.problems)
    fields = r.mapping(node, {"type", "url", "url_env", "to"}, f"channel {name!r}")
    if not _NAME.fullmatch(name):
        r.problem(node, f"channel name {name!r} must match {_NAME.pattern}")
    if "type" not in fields:
        r.problem(node, f"channel {name!r} needs a type ({', '.join(CHANNEL_TYPES)})")
        return None
    kind = r.choice(fields["type"], f"channel {name!r}: type", CHANNEL_TYPES)
    values: dict[str, Any] = {}
    if kind in ("slack", "webhook"):
        if ("url" in fields) == ("url_env" in fields):
            r.problem(node, f"channel {name!r} needs either url or url_env (the variable holding the URL)")
        elif "url" in fields:
            url = r.text(fields["url"], "url")
            if url is not None and not url.startswith(("http://", "https://")):
                r.problem(fields["url"], f"url {url!r} must start with http:// or https://")
            values["url"] = url or ""
        else:
            values["url_env"] = r.text(fields["url_env"], "url_env") or ""
        if "to" in fields:
            r.problem(fields["to"], f"channel {name!r}: 'to' is for email channels")
    elif kind == "email":
        if "to" not in fields:
            r.problem(node, f"channel {name!r} needs to: the recipients' addresses")
        else:
            to = r.strings(fields["to"], "to") or ()
            bad = [a for a in to if not re.fullmatch(r"[^@\s]+@[^@\s]+", a)]
            if bad:
                r.problem(fields["to"], f"not e-mail addresses: {', '.join(bad)}")
            values["to"] = to
        for key in ("url", "url_env"):
            if key in fields:
                r.problem(fields[key], f"channel {name!r}: {key} is for webhook channels")
    if len(r.problems) > before or kind is None:
        return None
    return Channel(name=name, type=kind, line=node.start_mark.line + 1, **values)


def parse_rules(text: str, path: Path | str = "rules.yaml") -> RuleSet:
    """Check a rules document; raises RulesError listing every problem with its line."""
    r = _Reader(path)
    try:
        document = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise RulesError([f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if document is None:
        return RuleSet(source=str(path))
    top = r.mapping(document, {"channels", "rules"}, "the rules file")
    channels: dict[str, Channel] = {}
    if "channels" in top and not _empty(top["channels"]):
        for key_node, value_node in _pairs(r, top["channels"], "channels"):
            channel = _channel(r, str(key_node.value), value_node)
            if channel is not None:
                channels[channel.name] = channel
    rules: list[Rule] = []
    if "rules" in top and not _empty(top["rules"]):
        node = top["rules"]
        if not isinstance(node, yaml.SequenceNode):
            r.problem(node, "rules must be a list")
        else:
            seen: dict[str, int] = {}
            for item in node.value:
                rule = _rule(r, item, channels)
                if rule is None:
                    continue
                # Dagster check names allow no '-': a-b and a_b would be one check.
                same = rule.name.replace("-", "_")
                if same in seen:
                    r.problem(item, f"rule name {rule.name!r} is already used at line {seen[same]}")
                    continue
                seen[same] = rule.line
                rules.append(rule)
    if r.problems:
        raise RulesError(r.problems)
    return RuleSet(rules=tuple(rules), channels=channels, source=str(path))


def _empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")


def _pairs(r: _Reader, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        r.problem(node, f"{what} must be a mapping of names to definitions")
        return []
    return list(node.value)


# --- loading, with the last good rules kept -------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The rules in force and, when the file is bad, why it was not used."""

    rules: RuleSet
    error: str | None  # the file's problems; the rules above are then the last good ones
    from_last_good: bool


def load(path: Path, last_good: Path, keep: bool = True) -> Loaded:
    """Read ``path``; on success keep a copy at ``last_good`` (unless ``keep`` is false), on failure
    fall back to that copy. A missing rules file means no rules (nothing to evaluate), not an error.
    """
    if not path.exists():
        return Loaded(RuleSet(source=str(path)), None, False)
    text = path.read_text()
    try:
        rules = parse_rules(text, path)
    except RulesError as exc:
        if last_good.exists():
            try:
                return Loaded(parse_rules(last_good.read_text(), path), str(exc), True)
            except RulesError:
                pass  # a copy the current schema no longer accepts: nothing good to fall back on
        return Loaded(RuleSet(source=str(path)), str(exc), False)
    if keep and (not last_good.exists() or last_good.read_text() != text):
        last_good.parent.mkdir(parents=True, exist_ok=True)
        staging = last_good.with_name(f".{last_good.name}.tmp")
        staging.write_text(text)
        staging.replace(last_good)
    return Loaded(rules, None, False)
