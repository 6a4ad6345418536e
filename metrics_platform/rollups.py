"""Every rollup of agent_events, described once for the audit and the repair.

The materialized views in sql/ fill the rollups as events arrive; this registry says how each
rollup buckets and groups raw events, so one piece of code can recompute any window from raw
(to verify it, or to rebuild it). The rollup test and the audit prove the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exact sums every rollup carries, with the expression that computes each from raw events.
SUMS: dict[str, str] = {
    "calls": "toUInt64(count())",
    "errors": "toUInt64(countIf(status != 'ok'))",
    "tokens_prompt": "toUInt64(sum(tokens_prompt))",
    "tokens_completion": "toUInt64(sum(tokens_completion))",
    "cost_usd": "sum(toDecimal128(cost_usd, 6))",
}
QUANTILES = "quantilesTDigest(0.5, 0.95)"


@dataclass(frozen=True)
class Rollup:
    """One rollup table: its time bucket over raw ``ts``, its dimensions, whether it keeps latency."""

    name: str
    table: str
    bucket_column: str
    bucket: str  # SQL over agent_events.ts
    keys: tuple[str, ...]
    latency: bool
    migration: str  # the sql/ file that creates it
    audit_hours: int  # default audit window: a few of its buckets, not a sliver of one

    @property
    def group_columns(self) -> tuple[str, ...]:
        return (self.bucket_column, *self.keys)

    def raw_select(self, with_states: bool) -> str:
        """Aggregates recomputed from raw events for buckets in [{start}, {end})."""
        columns = [f"{self.bucket} AS {self.bucket_column}", *self.keys]
        columns += [f"{expr} AS {name}" for name, expr in SUMS.items()]
        if self.latency:
            function = f"{QUANTILES.replace('(', 'State(', 1)}" if with_states else QUANTILES
            columns.append(f"{function}(latency_ms) AS {'latency_q' if with_states else 'q'}")
        # The bucket bounds are compared on the bucket itself (whole buckets on both sides); the
        # wider ts bounds only let ClickHouse prune partitions.
        return (
            f"SELECT {', '.join(columns)} FROM agent_events "
            f"WHERE ts >= {{start:DateTime}} - INTERVAL 1 DAY AND ts < {{end:DateTime}} + INTERVAL 1 DAY "
            f"AND {self.bucket} >= {{start:DateTime}} AND {self.bucket} < {{end:DateTime}} "
            f"GROUP BY {', '.join(self.group_columns)}"
        )

    def rollup_select(self) -> str:
        """The rollup's own aggregates for buckets in [{start}, {end}), merged across parts."""
        columns = [*self.group_columns, *(f"sum({name}) AS {name}" for name in SUMS)]
        if self.latency:
            columns.append(f"{QUANTILES.replace('(', 'Merge(', 1)}(latency_q) AS q")
        return (
            f"SELECT {', '.join(columns)} FROM {self.table} "
            f"WHERE {self.bucket_column} >= {{start:DateTime}} AND {self.bucket_column} < {{end:DateTime}} "
            f"GROUP BY {', '.join(self.group_columns)}"
        )


ROLLUPS: dict[str, Rollup] = {
    rollup.name: rollup
    for rollup in (
        Rollup(
            "agent_metrics_1m",
            "agent_metrics_1m_state",
            "ts_min",
            "toStartOfMinute(ts)",
            ("service", "env", "agent", "route", "model", "provider"),
            latency=True,
            migration="0002_rollup_1m",
            audit_hours=3,
        ),
        Rollup(
            "route_metrics_1h",
            "route_metrics_1h_state",
            "ts_hour",
            "toStartOfHour(ts)",
            ("service", "env", "route"),
            latency=True,
            migration="0008_sized_rollups",
            audit_hours=24,
        ),
        Rollup(
            "route_metrics_1d",
            "route_metrics_1d_state",
            "day",
            "toDate(ts)",
            ("service", "env", "route"),
            latency=True,
            migration="0008_sized_rollups",
            audit_hours=72,
        ),
        Rollup(
            "user_cost_1d",
            "user_cost_1d_state",
            "day",
            "toDate(ts)",
            ("user_id_hash",),
            latency=False,
            migration="0008_sized_rollups",
            audit_hours=72,
        ),
    )
}
