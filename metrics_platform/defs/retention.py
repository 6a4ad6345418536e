"""Retention: every table's TTL is the configured one, nothing older survives, sizes over time."""

import dagster as dg

from metrics_platform import retention
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings
from metrics_platform.defs.schema import AGENT_EVENTS_SCHEMA

STORAGE = dg.AssetKey("table_storage")


def _inspect(clickhouse: ClickHouseResource, days: int) -> list[tuple[str, retention.TableRetention]]:
    """Each retained table of each server that holds events: (``"shard <n> "`` on a local cluster, else "",
    the table). Every shard keeps its own tables, TTLs and merges, so each is checked."""
    return [
        (f"{label} " if label else "", t)
        for label, ch in clickhouse.get_server_clients()
        for t in retention.inspect(ch, days)
    ]


@dg.asset(
    key=STORAGE,
    group_name="retention",
    deps=[AGENT_EVENTS_SCHEMA],
    pool="clickhouse",
    kinds={"clickhouse"},
)
def table_storage(platform: PlatformSettings, clickhouse: ClickHouseResource) -> dg.MaterializeResult:
    """Rows and bytes of each retained ClickHouse table, as numeric metadata the UI plots.

    Materialized hourly by `retention_schedule`, together with the retention checks. On a local cluster the
    figures are the sums over the shards.
    """
    totals: dict[str, tuple[int, int]] = {}
    for _, t in _inspect(clickhouse, platform.get().retention_days):
        rows, size = totals.get(t.table, (0, 0))
        totals[t.table] = (rows + t.rows, size + t.bytes_on_disk)
    metadata: dict[str, dg.MetadataValue] = {}
    for table, (rows, size) in totals.items():
        metadata[f"{table}.rows"] = dg.MetadataValue.int(rows)
        metadata[f"{table}.bytes"] = dg.MetadataValue.int(size)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=STORAGE)
def ttl_matches_configuration(platform: PlatformSettings, clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """Each retained table's TTL equals METRICS_PLATFORM_RETENTION_DAYS."""
    wanted = platform.get().retention_days
    wrong = {where + t.table: str(t.ttl_days) for where, t in _inspect(clickhouse, wanted) if t.ttl_days != wanted}
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={"configured_days": wanted, "tables_with_other_ttl": wrong},
    )


@dg.asset_check(asset=STORAGE)
def nothing_past_retention(platform: PlatformSettings, clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """No row older than the retention period survives in any retained table.

    ClickHouse drops expired rows at insert and in TTL merges (at least hourly here:
    merge_with_ttl_timeout); rows found past retention mean TTL merges are not running.
    """
    days = platform.get().retention_days
    expired = {where + t.table: t.expired_rows for where, t in _inspect(clickhouse, days) if t.expired_rows}
    return dg.AssetCheckResult(
        passed=not expired,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"retention_days": days, "expired_rows": {k: str(v) for k, v in expired.items()}},
    )


retention_job = dg.define_asset_job("retention_audit", selection=dg.AssetSelection.assets(STORAGE))
retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[table_storage],
    asset_checks=[ttl_matches_configuration, nothing_past_retention],
    jobs=[retention_job],
    schedules=[retention_schedule],
)
