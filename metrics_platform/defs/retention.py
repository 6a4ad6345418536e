"""Retention: every table's TTL is the configured one, nothing older survives, sizes over time."""

import dagster as dg

from metrics_platform import retention
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings
from metrics_platform.defs.schema import AGENT_EVENTS_SCHEMA

STORAGE = dg.AssetKey("table_storage")


@dg.asset(
    key=STORAGE,
    group_name="retention",
    deps=[AGENT_EVENTS_SCHEMA],
    pool="clickhouse",
    kinds={"clickhouse"},
)
def table_storage(platform: PlatformSettings, clickhouse: ClickHouseResource) -> dg.MaterializeResult:
    """Rows and bytes of each retained ClickHouse table, as numeric metadata the UI plots.

    Materialized hourly by `retention_schedule`, together with the retention checks.
    """
    tables = retention.inspect(clickhouse.get_client(), platform.get().retention_days)
    metadata: dict[str, dg.MetadataValue] = {}
    for t in tables:
        metadata[f"{t.table}.rows"] = dg.MetadataValue.int(t.rows)
        metadata[f"{t.table}.bytes"] = dg.MetadataValue.int(t.bytes_on_disk)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=STORAGE)
def ttl_matches_configuration(platform: PlatformSettings, clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """Each retained table's TTL equals METRICS_PLATFORM_RETENTION_DAYS."""
    wanted = platform.get().retention_days
    tables = retention.inspect(clickhouse.get_client(), wanted)
    wrong = {t.table: str(t.ttl_days) for t in tables if t.ttl_days != wanted}
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
    tables = retention.inspect(clickhouse.get_client(), days)
    expired = {t.table: t.expired_rows for t in tables if t.expired_rows}
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
