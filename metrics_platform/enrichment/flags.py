"""Feature flags per agent or route (flag -> enabled, variant), so metrics can be split by experiment arm.

Parsed from CSV, JSON (flat rows or the nested ``{"agents": {...}, "routes": {...}}`` form) or
JSON Lines and loaded into ``feature_flags``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from metrics_platform.enrichment.loads import LoadReport, store
from metrics_platform.enrichment.records import (
    Parsed,
    RowError,
    iter_records,
    json_document,
    json_items,
    parse_records,
    text_field,
)
from metrics_platform.enrichment.sources import DEFAULT_TIMEOUT_S, SAMPLE_DIR, display_source, read_source

FEATURE_FLAGS_ENV = "METRICS_PLATFORM_FEATURE_FLAGS_SOURCE"
FLAG_SCOPES = ("agent", "route")
FLAG_COLUMNS = ("scope", "target", "flag", "enabled", "variant")

_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


@dataclass(frozen=True)
class FeatureFlag:
    scope: str
    target: str
    flag: str
    enabled: bool
    variant: str


def _flag_row(fields: dict[str, object]) -> FeatureFlag:
    scope = text_field(fields, "scope").lower()
    if scope not in FLAG_SCOPES:
        raise RowError(f"scope must be 'agent' or 'route', got {scope!r}")
    target = text_field(fields, "target")
    flag = text_field(fields, "flag")
    variant = text_field(fields, "variant", required=False)
    raw = fields.get("enabled")
    if isinstance(raw, bool):
        enabled = raw
    else:
        text = text_field(fields, "enabled", required=False).lower()
        if text in _TRUE:
            enabled = True
        elif text in _FALSE:
            enabled = False
        elif not text and variant:
            enabled = True  # naming a variant means the flag is on
        else:
            raise RowError(f"enabled must be true or false, got {text!r}" if text else "enabled is missing")
    return FeatureFlag(scope, target, flag, enabled, variant)


def _nested_flags(document: dict[str, object]) -> Iterator[tuple[str, object]]:
    """Rows of the nested form ``{"agents": {"router": {"flag": true | "variant" | {..}}}}``."""
    for group, scope in (("agents", "agent"), ("routes", "route"), ("agent", "agent"), ("route", "route")):
        targets = document.get(group)
        if targets is None:
            continue
        if not isinstance(targets, dict):
            yield group, RowError(f"{group} must map {scope} names to their flags")
            continue
        for target, flags in targets.items():
            if not isinstance(flags, dict):
                yield f"{group}.{target}", RowError("must map flag names to true/false, a variant or an object")
                continue
            for flag, value in flags.items():
                location = f"{group}.{target}.{flag}"
                base: dict[str, object] = {"scope": scope, "target": target, "flag": flag}
                if isinstance(value, bool):
                    yield location, {**base, "enabled": value}
                elif isinstance(value, str):
                    yield location, {**base, "enabled": True, "variant": value}
                elif isinstance(value, dict):
                    yield location, {**base, **value}
                else:
                    yield location, RowError("value must be true/false, a variant string or an object")


def parse_feature_flags(source: str, text: str, fmt: str) -> Parsed[FeatureFlag]:
    """Validate feature-flag records: scope (agent|route), target, flag, enabled, variant.

    JSON may also use the nested form ``{"agents": {name: {flag: value}}, "routes": {...}}``
    where a value is true/false, a variant name (meaning enabled) or ``{"enabled", "variant"}``.
    A second row for the same scope, target and flag is rejected.
    """
    records: Iterable[tuple[str, object]]
    if fmt == "json":
        document = json_document(source, text)
        if isinstance(document, dict) and any(k in document for k in ("agents", "routes", "agent", "route")):
            records = _nested_flags(document)
        else:
            records = json_items(source, document, ("feature_flags", "flags", "rows"))
    else:
        records = iter_records(source, text, fmt, ("scope", "target", "flag"), ())
    return parse_records(source, records, _flag_row, key=lambda f: (f.scope, f.target, f.flag))


def load_feature_flags(
    ch: Client, source: str, timeout_s: float = DEFAULT_TIMEOUT_S, run_id: str = "", allow_empty: bool = False
) -> LoadReport:
    """Read, validate and load feature flags from ``source``, replacing ``feature_flags``.

    Same rules as ``load_billing_accounts``.
    """
    parsed = parse_feature_flags(display_source(source), *read_source(source, timeout_s))
    return store(
        ch,
        "feature_flags",
        parsed,
        FLAG_COLUMNS,
        lambda f: (f.scope, f.target, f.flag, f.enabled, f.variant),
        run_id,
        allow_empty,
    )


def default_feature_flags_source() -> str:
    """METRICS_PLATFORM_FEATURE_FLAGS_SOURCE if set, else the sample data/enrichment/feature_flags.json."""
    return os.environ.get(FEATURE_FLAGS_ENV, "").strip() or str(SAMPLE_DIR / "feature_flags.json")


def flag_targets_without_traffic(ch: Client, days: int = 7) -> list[tuple[str, str]]:
    """Flag targets (scope, agent or route) with no traffic in the last ``days`` days.

    Usually a typo or a retired agent: the flag can never show up in a metric.
    """
    rows = ch.query(
        """
        SELECT DISTINCT scope, target FROM feature_flags
        WHERE (scope = 'agent' AND target NOT IN
                  (SELECT agent FROM agent_events WHERE toStartOfHour(ts) > now() - toIntervalDay({d:UInt32})
                   GROUP BY agent))
           OR (scope = 'route' AND target NOT IN
                  (SELECT route FROM agent_events WHERE toStartOfHour(ts) > now() - toIntervalDay({d:UInt32})
                   GROUP BY route))
        ORDER BY scope, target
        """,
        parameters={"d": days},
    ).result_rows
    return [(str(scope), str(target)) for scope, target in rows]
