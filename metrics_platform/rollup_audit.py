"""Verifying the per-minute rollup against raw events, and rebuilding a window from raw.

Counts, errors, tokens and cost must match exactly. p50/p95 come from merged t-digest states and
are compared with a t-digest over the raw rows: they must agree within ``QUANTILE_TOLERANCE``
(relative) or 1 ms, whichever is larger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from metrics_platform.paths import SQL_DIR

QUANTILE_TOLERANCE = 0.05
_AUDIT_SQL = SQL_DIR / "queries" / "rollup_1m_audit.sql"
_REBUILD_SQL = SQL_DIR / "queries" / "rollup_1m_rebuild.sql"
_EXACT = ("calls", "errors", "tokens_prompt", "tokens_completion", "cost_usd")


@dataclass(frozen=True)
class Mismatch:
    key: tuple[str, ...]
    field: str
    rollup: str
    raw: str


@dataclass
class AuditResult:
    start: datetime
    end: datetime
    groups: int = 0
    raw_calls: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    max_quantile_error: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def mismatched_keys(self) -> list[tuple[str, ...]]:
        return sorted({m.key for m in self.mismatches})


def _within(rollup: float, raw: float) -> bool:
    return abs(rollup - raw) <= max(QUANTILE_TOLERANCE * abs(raw), 1.0)


def audit(ch: Client, start: datetime, end: datetime) -> AuditResult:
    """Compare the rollup with raw aggregates for minutes in [start, end)."""
    result = AuditResult(start, end)
    rows = ch.query(_AUDIT_SQL.read_text(), parameters={"start": start, "end": end}).result_rows
    for row in rows:
        key = (row[0].isoformat(), *row[1:7])
        values = row[7:]
        result.groups += 1
        result.raw_calls += int(values[1])
        for index, name in enumerate(_EXACT):
            rolled, raw = values[2 * index], values[2 * index + 1]
            if Decimal(str(rolled)) != Decimal(str(raw)):
                result.mismatches.append(Mismatch(key, name, str(rolled), str(raw)))
        rolled_q, raw_q = values[10], values[11]
        for name, rolled, raw in zip(("p50_ms", "p95_ms"), rolled_q or [0, 0], raw_q or [0, 0], strict=True):
            if raw:
                result.max_quantile_error = max(result.max_quantile_error, abs(rolled - raw) / raw)
            if not _within(rolled, raw):
                result.mismatches.append(Mismatch(key, name, f"{rolled:.1f}", f"{raw:.1f}"))
    return result


def rebuild(ch: Client, start: datetime, end: datetime) -> int:
    """Replace the rollup's minutes in [start, end) with aggregates recomputed from raw.

    Run it on windows that are no longer receiving events: a span arriving between the delete and
    the insert would be counted twice. Returns the number of rollup rows written.
    """
    params = {"start": start, "end": end}
    ch.command(
        "ALTER TABLE agent_metrics_1m_state DELETE WHERE ts_min >= {start:DateTime} AND ts_min < {end:DateTime}",
        parameters=params,
        settings={"mutations_sync": 2},
    )
    summary = ch.command(_REBUILD_SQL.read_text(), parameters=params)
    written = getattr(summary, "written_rows", None)
    if written is None:
        written = ch.query(
            "SELECT count() FROM agent_metrics_1m_state WHERE ts_min >= {start:DateTime} AND ts_min < {end:DateTime}",
            parameters=params,
        ).result_rows[0][0]
    return int(written)
