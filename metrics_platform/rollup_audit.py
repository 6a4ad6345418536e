"""Verifying a rollup against raw events, and rebuilding a window of it from raw.

Counts, errors, tokens and cost must match exactly. p50/p95 come from merged t-digest states and
are compared with a t-digest over the raw rows: they must agree within ``QUANTILE_TOLERANCE``
(relative) or 1 ms, whichever is larger. Windows cover whole buckets (minutes, hours or days
whose start lies in [start, end)); see metrics_platform/rollups.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from metrics_platform.rollups import ROLLUPS, SUMS, Rollup

QUANTILE_TOLERANCE = 0.05
DEFAULT = ROLLUPS["agent_metrics_1m"]


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


def parse_utc(text: str) -> datetime:
    """An ISO time as the naive UTC datetime ClickHouse's DateTime parameters expect."""
    value = datetime.fromisoformat(text)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _within(rollup: float, raw: float) -> bool:
    return abs(rollup - raw) <= max(QUANTILE_TOLERANCE * abs(raw), 1.0)


def audit(ch: Client, start: datetime, end: datetime, rollup: Rollup = DEFAULT) -> AuditResult:
    """Compare ``rollup`` with raw aggregates for its buckets in [start, end)."""
    result = AuditResult(start, end)
    keys = ", ".join(rollup.group_columns)
    quantiles = ", rollup.q, raw.q" if rollup.latency else ""
    sql = (
        f"SELECT {keys}, "
        + ", ".join(f"rollup.{name}, raw.{name}" for name in SUMS)
        + f"{quantiles} FROM ({rollup.rollup_select()}) AS rollup "
        f"FULL OUTER JOIN ({rollup.raw_select(with_states=False)}) AS raw USING ({keys}) ORDER BY {keys}"
    )
    width = len(rollup.group_columns)
    for row in ch.query(sql, parameters={"start": start, "end": end}).result_rows:
        key = tuple(str(part) for part in row[:width])
        values = row[width:]
        result.groups += 1
        result.raw_calls += int(values[1])
        for index, name in enumerate(SUMS):
            rolled, raw = values[2 * index], values[2 * index + 1]
            if Decimal(str(rolled)) != Decimal(str(raw)):
                result.mismatches.append(Mismatch(key, name, str(rolled), str(raw)))
        if rollup.latency:
            rolled_q, raw_q = values[2 * len(SUMS)], values[2 * len(SUMS) + 1]
            for name, rolled, raw in zip(("p50_ms", "p95_ms"), rolled_q or [0, 0], raw_q or [0, 0], strict=True):
                if raw:
                    result.max_quantile_error = max(result.max_quantile_error, abs(rolled - raw) / raw)
                if not _within(rolled, raw):
                    result.mismatches.append(Mismatch(key, name, f"{rolled:.1f}", f"{raw:.1f}"))
    return result


def rebuild(ch: Client, start: datetime, end: datetime, rollup: Rollup = DEFAULT) -> int:
    """Replace ``rollup``'s buckets in [start, end) with aggregates recomputed from raw.

    Run it on windows that are no longer receiving events: a span arriving between the delete and
    the insert would be counted twice. Returns the number of rollup rows written.
    """
    params = {"start": start, "end": end}
    window = f"{rollup.bucket_column} >= {{start:DateTime}} AND {rollup.bucket_column} < {{end:DateTime}}"
    ch.command(f"ALTER TABLE {rollup.table} DELETE WHERE {window}", parameters=params, settings={"mutations_sync": 2})
    ch.command(f"INSERT INTO {rollup.table} {rollup.raw_select(with_states=True)}", parameters=params)
    return int(ch.query(f"SELECT count() FROM {rollup.table} WHERE {window}", parameters=params).result_rows[0][0])
