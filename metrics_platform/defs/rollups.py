"""Rollups of agent_events (its projections): audited against raw events every hour, repairable.

One asset and one check per rollup in metrics_platform/rollups.py, built by the same factory.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from metrics_platform import rollup_audit
from metrics_platform.cluster import merge_audits
from metrics_platform.defs.resources import ClickHouseResource
from metrics_platform.defs.schema import AGENT_EVENTS_SCHEMA
from metrics_platform.rollups import ROLLUPS, Rollup

MAX_KEYS_SHOWN = 25


class WindowConfig(dg.Config):
    """A window [start, end) in UTC; buckets (minutes, hours, days) starting in it are covered."""

    start: str | None = None
    """ISO time, e.g. 2026-11-27T08:00:00; default end - hours."""
    end: str | None = None
    """ISO time; default now - settle_minutes (minutes still receiving events are skipped)."""
    hours: int | None = None
    """Default window length when start is not given (default: a few buckets of the rollup)."""
    settle_minutes: int = 2

    def window(self, default_hours: int) -> tuple[datetime, datetime]:
        now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
        end = rollup_audit.parse_utc(self.end) if self.end else now - timedelta(minutes=self.settle_minutes)
        start = rollup_audit.parse_utc(self.start) if self.start else end - timedelta(hours=self.hours or default_hours)
        if start >= end:
            raise ValueError(f"empty window: start {start} is not before end {end}")
        return start, end


def build_rollup(rollup: Rollup) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The asset (materializing = repairing a window) and the audit check of one rollup."""
    key = dg.AssetKey(rollup.name)
    hours = rollup.audit_hours
    key_columns = ", ".join(rollup.group_columns)

    @dg.asset(
        key=key,
        group_name="rollups",
        deps=[AGENT_EVENTS_SCHEMA],
        pool="clickhouse",
        kinds={"clickhouse"},
        description=(
            f"Rollup `{rollup.name}`: a projection of agent_events by ({key_columns}) with exact sums "
            f"({', '.join(rollup.sums)}){', and p50/p95 t-digest states' if rollup.latency else ''}. "
            "ClickHouse writes it in the same part as the raw rows, so it cannot disagree with them. "
            "Materializing this asset *repairs* a window: parts that lack the projection (written before it "
            "existed) get it built, and the audit check runs right after, in the same run."
        ),
    )
    def repair(context: dg.AssetExecutionContext, config: WindowConfig, clickhouse: ClickHouseResource):
        start, end = config.window(hours)
        # Each server's parts carry their own projection: repaired on every shard of a local cluster.
        parts = sum(rollup_audit.repair(ch, start, end, rollup) for _, ch in clickhouse.get_server_clients())
        context.log.info(f"materialized {rollup.name} for {parts} part(s) of [{start}, {end})")
        return dg.MaterializeResult(
            metadata={"window_start": start.isoformat(), "window_end": end.isoformat(), "parts_materialized": parts}
        )

    @dg.asset_check(
        asset=key,
        name="rollup_matches_raw",
        blocking=False,
        description=(
            "The rollup equals aggregates recomputed from raw events for the window: its counts and sums "
            "exactly; p50/p95 within 5 % (or 1 ms) of a t-digest over the raw rows; every part of the "
            "window carries the projection. Mismatching keys are listed; repair with the `repair_rollup` job. "
            "On a local cluster every shard is audited against its own raw rows and the verdicts are merged."
        ),
    )
    def audit(config: WindowConfig, clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
        start, end = config.window(hours)
        audits = [(label, rollup_audit.audit(ch, start, end, rollup)) for label, ch in clickhouse.get_server_clients()]
        result = merge_audits(start, end, audits)
        lines = [f"| {m.key} | {m.field} | {m.rollup} | {m.raw} |" for m in result.mismatches[:MAX_KEYS_SHOWN]]
        table = f"| key ({key_columns}) | field | rollup | raw |\n|---|---|---|---|\n" + "\n".join(lines)
        return dg.AssetCheckResult(
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
                "groups_checked": result.groups,
                "raw_spans": result.raw_spans,
                "parts_without_projection": result.parts_without_projection,
                "mismatched_keys": len(result.mismatched_keys()),
                "max_quantile_relative_error": float(result.max_quantile_error),
                "mismatches": dg.MetadataValue.md(table if lines else "none"),
            },
        )

    return repair, audit


_BUILT = {name: build_rollup(rollup) for name, rollup in ROLLUPS.items()}
ROLLUP_ASSETS = [asset for asset, _ in _BUILT.values()]
ROLLUP_CHECKS = [check for _, check in _BUILT.values()]


rollup_audit_job = dg.define_asset_job(
    "rollup_audit",
    selection=dg.AssetSelection.checks(*ROLLUP_CHECKS),
    description="Audit every rollup against raw events over its recent buckets.",
)
repair_rollup_job = dg.define_asset_job(
    "repair_rollup",
    selection=dg.AssetSelection.assets(*ROLLUP_ASSETS),
    description="Build the rollups for a window's parts that lack them, then audit them (set start/end in the config).",
)
hourly_rollup_audit = dg.ScheduleDefinition(
    name="hourly_rollup_audit",
    job=rollup_audit_job,
    cron_schedule="7 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=ROLLUP_ASSETS,
    asset_checks=ROLLUP_CHECKS,
    jobs=[rollup_audit_job, repair_rollup_job],
    schedules=[hourly_rollup_audit],
)
