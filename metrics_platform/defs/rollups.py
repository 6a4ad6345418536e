"""The per-minute rollup: audited against raw events every hour, repairable for any window."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from metrics_platform import rollup_audit
from metrics_platform.defs.resources import ClickHouseResource

ROLLUP = dg.AssetKey("agent_metrics_1m")
MAX_KEYS_SHOWN = 25


class WindowConfig(dg.Config):
    """A window of whole minutes, [start, end) in UTC. Default: the last ``hours`` hours."""

    start: str | None = None
    """ISO time, e.g. 2026-11-27T08:00:00; default end - hours."""
    end: str | None = None
    """ISO time; default now - settle_minutes (minutes still receiving events are skipped)."""
    hours: int = 3
    settle_minutes: int = 2

    def window(self) -> tuple[datetime, datetime]:
        def parse(text: str) -> datetime:
            value = datetime.fromisoformat(text)
            return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value

        now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
        end = parse(self.end) if self.end else now - timedelta(minutes=self.settle_minutes)
        start = parse(self.start) if self.start else end - timedelta(hours=self.hours)
        if start >= end:
            raise ValueError(f"empty window: start {start} is not before end {end}")
        return start, end


@dg.asset(
    key=ROLLUP,
    group_name="rollups",
    deps=[dg.AssetKey(["schema", "0002_rollup_1m"])],
    pool="clickhouse",
    kinds={"clickhouse"},
)
def agent_metrics_1m(
    context: dg.AssetExecutionContext, config: WindowConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    """Per-minute rollup (calls, errors, tokens, cost, p50/p95 states) of agent_events.

    A materialized view keeps it current as events arrive. Materializing this asset *repairs* a
    window: the window's rollup rows are deleted and recomputed from raw events. Its audit check
    runs right after, in the same run.
    """
    start, end = config.window()
    written = rollup_audit.rebuild(clickhouse.get_client(), start, end)
    context.log.info(f"rebuilt {written} rollup rows for [{start}, {end})")
    return dg.MaterializeResult(
        metadata={"window_start": start.isoformat(), "window_end": end.isoformat(), "rows_written": written}
    )


@dg.asset_check(asset=ROLLUP, blocking=False)
def rollup_matches_raw(config: WindowConfig, clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """The rollup equals aggregates recomputed from raw events for the window.

    Calls, errors, tokens and cost must be equal; p50/p95 within 5 % (or 1 ms) of a t-digest over
    the raw rows. Mismatching keys are listed; repair with the `repair_rollup` job.
    """
    start, end = config.window()
    result = rollup_audit.audit(clickhouse.get_client(), start, end)
    keys = result.mismatched_keys()
    lines = [f"| {m.key} | {m.field} | {m.rollup} | {m.raw} |" for m in result.mismatches[:MAX_KEYS_SHOWN]]
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "groups_checked": result.groups,
            "raw_calls": result.raw_calls,
            "mismatched_keys": len(keys),
            "max_quantile_relative_error": float(result.max_quantile_error),
            "mismatches": dg.MetadataValue.md(
                "| key (minute, service, env, agent, route, model, provider) | field | rollup | raw |\n"
                "|---|---|---|---|\n" + "\n".join(lines)
                if lines
                else "none"
            ),
        },
    )


rollup_audit_job = dg.define_asset_job(
    "rollup_audit", selection=dg.AssetSelection.checks(rollup_matches_raw), description="Audit the last 3 hours."
)
repair_rollup_job = dg.define_asset_job(
    "repair_rollup",
    selection=dg.AssetSelection.assets(ROLLUP),
    description="Rebuild a window of the rollup from raw events, then audit it (set start/end in the config).",
)
hourly_rollup_audit = dg.ScheduleDefinition(
    name="hourly_rollup_audit",
    job=rollup_audit_job,
    cron_schedule="7 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[agent_metrics_1m],
    asset_checks=[rollup_matches_raw],
    jobs=[rollup_audit_job, repair_rollup_job],
    schedules=[hourly_rollup_audit],
)
