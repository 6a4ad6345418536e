"""Verifying a rollup (a projection of agent_events) against raw events, and repairing it.

The same query runs twice over a window: once forced onto the projection, once with projections
off (raw rows). Counts, errors, tokens and cost must be equal; p50/p95 from merged t-digest states
within ``QUANTILE_TOLERANCE`` (relative) or 1 ms of a t-digest over the raw rows, or else, where values
cluster and a small error in rank moves the value a lot, at a rank among the raw latencies within
``RANK_TOLERANCE`` of 0.5/0.95 (t-digest bounds its error in rank, not in value). Parts of the
window that lack the projection (written before it existed) are reported too: ClickHouse answers
them from raw rows, correctly but slowly, and the repair materializes the projection for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from metrics_platform.rollups import Rollup

QUANTILE_TOLERANCE = 0.05
RANK_TOLERANCE = 0.05


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
    raw_spans: int = 0
    parts_without_projection: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    max_quantile_error: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches and not self.parts_without_projection

    def mismatched_keys(self) -> list[tuple[str, ...]]:
        return sorted({m.key for m in self.mismatches})


def parse_utc(text: str) -> datetime:
    """An ISO time as the naive UTC datetime ClickHouse's DateTime parameters expect."""
    value = datetime.fromisoformat(text)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _within(rollup: float, raw: float) -> bool:
    if math.isnan(raw) or math.isnan(rollup):  # a conditional quantile over no rows (e.g. no requests)
        return math.isnan(raw) and math.isnan(rollup)
    return abs(rollup - raw) <= max(QUANTILE_TOLERANCE * abs(raw), 1.0)


def _at_rank(ch: Client, rollup: Rollup, key: tuple[str, ...], q: float, value: float) -> bool:
    """Whether ``value`` sits at rank ``q`` (± ``RANK_TOLERANCE``) among the raw latencies of ``key``'s bucket."""
    if math.isnan(value):
        return False
    columns = (rollup.bucket, *rollup.keys)
    conditions = [f"lower(toString({c})) = lower({{k{i}:String}})" for i, c in enumerate(columns)]
    conditions.append(rollup.latency_rows)
    below, at_or_below = ch.query(
        f"SELECT countIf(latency_ms < {{v:Float64}}) / count(), countIf(latency_ms <= {{v:Float64}}) / count() "
        f"FROM agent_events WHERE {' AND '.join(conditions)}",
        parameters={"v": value, **{f"k{i}": k for i, k in enumerate(key)}},
        settings={"optimize_use_projections": 0},
    ).result_rows[0]
    return below - RANK_TOLERANCE <= q <= at_or_below + RANK_TOLERANCE


def _answers(ch: Client, rollup: Rollup, params: dict[str, object], settings: dict[str, object]) -> dict[tuple, tuple]:
    width = len(rollup.group_columns)
    rows = ch.query(rollup.query(), parameters=params, settings=settings).result_rows
    return {tuple(str(v) for v in row[:width]): tuple(row[width:]) for row in rows}


def _partitions(ch: Client, start: datetime, end: datetime) -> list[str]:
    """Partitions (ingest days) holding rows of the window; late rows can sit in later days."""
    rows = ch.query(
        "SELECT DISTINCT _partition_id FROM agent_events WHERE ts >= {start:DateTime} - INTERVAL 1 DAY "
        "AND ts < {end:DateTime} + INTERVAL 1 DAY",
        parameters={"start": start, "end": end},
    ).result_rows
    return [str(p) for (p,) in rows]


def _parts_without(ch: Client, rollup: Rollup, partitions: list[str]) -> list[tuple[str, str]]:
    rows = ch.query(
        """
        SELECT partition_id, name FROM system.parts
        WHERE database = currentDatabase() AND table = 'agent_events' AND active AND partition_id IN {p:Array(String)}
          AND name NOT IN (SELECT parent_name FROM system.projection_parts WHERE database = currentDatabase()
                           AND table = 'agent_events' AND active AND name = {n:String})
        """,
        parameters={"p": partitions, "n": rollup.name},
    ).result_rows
    return [(str(p), str(n)) for p, n in rows]


def audit(ch: Client, start: datetime, end: datetime, rollup: Rollup) -> AuditResult:
    """Compare ``rollup`` with raw aggregates for its buckets in [start, end)."""
    result = AuditResult(start, end)
    params = {"start": start, "end": end}
    try:
        rolled = _answers(ch, rollup, params, {"force_optimize_projection_name": rollup.name})
    except DatabaseError as exc:
        # No part of the window has the projection (or the window is empty): ClickHouse answers
        # from raw rows; the parts count below says whether that is a gap.
        if "force_optimize_projection_name" not in str(exc):
            raise
        rolled = _answers(ch, rollup, params, {})
    raw = _answers(ch, rollup, params, {"optimize_use_projections": 0})
    empty = tuple([0] * len(rollup.sums) + ([[0.0, 0.0]] if rollup.latency else []))
    for key in sorted(rolled.keys() | raw.keys()):
        mine, truth = rolled.get(key, empty), raw.get(key, empty)
        result.groups += 1
        result.raw_spans += int(truth[0])  # every rollup's first sum is spans = count()
        for index, name in enumerate(rollup.sums):
            if Decimal(str(mine[index])) != Decimal(str(truth[index])):
                result.mismatches.append(Mismatch(key, name, str(mine[index]), str(truth[index])))
        if rollup.latency:
            quantiles = zip((0.5, 0.95), mine[-1] or [0, 0], truth[-1] or [0, 0], strict=True)
            for q, value, exact in quantiles:
                if exact and not math.isnan(exact) and not math.isnan(value):
                    result.max_quantile_error = max(result.max_quantile_error, abs(value - exact) / exact)
                if not _within(value, exact) and not _at_rank(ch, rollup, key, q, value):
                    result.mismatches.append(Mismatch(key, f"p{round(q * 100)}_ms", f"{value:.1f}", f"{exact:.1f}"))
    result.parts_without_projection = len(_parts_without(ch, rollup, _partitions(ch, start, end)))
    return result


def repair(ch: Client, start: datetime, end: datetime, rollup: Rollup) -> int:
    """Materialize ``rollup`` for the window's parts that lack it; returns how many parts that was.

    Safe while events arrive: the projection is rebuilt from the parts' own rows.
    """
    missing = _parts_without(ch, rollup, _partitions(ch, start, end))
    for partition in sorted({p for p, _ in missing}):
        ch.command(
            f"ALTER TABLE agent_events MATERIALIZE PROJECTION {rollup.name} IN PARTITION ID {{p:String}}",
            parameters={"p": partition},
            settings={"mutations_sync": 2},
        )
    return len(missing)
