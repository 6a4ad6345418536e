"""Schema migrations as assets: one per ``sql/NNNN_*.sql`` file, applied by the CLI's runner."""

import dagster as dg

from metrics_platform import clickhouse, migrations
from metrics_platform.defs.resources import PlatformSettings

GROUP = "schema"


def _migration_asset(migration: migrations.Migration, previous: dg.AssetKey | None) -> dg.AssetsDefinition:
    key = dg.AssetKey(["schema", f"{migration.version:04d}_{migration.name}"])

    @dg.asset(
        key=key,
        group_name=GROUP,
        deps=[previous] if previous else [],
        pool="clickhouse",
        description=(
            f"ClickHouse migration `{migration.path.name}`. Materializing applies it and every earlier "
            "pending migration through the same runner as `metrics-platform migrate` (idempotent; "
            "refuses if an applied file was edited)."
        ),
        metadata={"file": migration.path.name, "ddl": dg.MetadataValue.md(f"```sql\n{migration.template}\n```")},
        kinds={"clickhouse", "sql"},
    )
    def apply(context: dg.AssetExecutionContext, platform: PlatformSettings) -> dg.MaterializeResult:
        from metrics_platform.stack import topology

        upto = [m for m in migrations.discover() if m.version <= migration.version]
        settings = platform.get()
        applied: list[migrations.Migration] = []
        # The same servers as `metrics-platform migrate`: each local shard (its own ledger), the configured server
        # of a cluster whose DDL is cluster-wide, every server of one whose DDL is not; then the read layers.
        for label, server in topology.migration_servers(settings):
            ch = clickhouse.client(server.clickhouse)
            try:
                applied = migrations.migrate(ch, server, upto)
                versions = [f"{s.migration.version:04d}" for s in migrations.status(ch) if s.applied]
            finally:
                ch.close()
            for m in applied:
                context.log.info(f"{label or 'ClickHouse'}: applied {m.path.name}")
        for label in topology.ensure_read_layers(settings):
            context.log.info(f"{label}: read layer up to date")
        return dg.MaterializeResult(
            metadata={
                "applied_now": [m.path.name for m in applied],
                "applied_versions": versions,
                "checksum": migration.checksum,
            }
        )

    return apply


def _build() -> dict[str, dg.AssetsDefinition]:
    assets: dict[str, dg.AssetsDefinition] = {}
    previous: dg.AssetKey | None = None
    for migration in migrations.discover():
        asset = _migration_asset(migration, previous)
        assets[f"{migration.version:04d}_{migration.name}"] = asset
        previous = asset.key
    return assets


MIGRATION_ASSETS = _build()


def migration_asset(stem: str) -> dg.AssetsDefinition:
    """The asset of migration ``sql/<stem>.sql``, for other assets' deps; fails at load time if it is gone."""
    if stem not in MIGRATION_ASSETS:
        raise KeyError(f"no migration sql/{stem}.sql (known: {', '.join(MIGRATION_ASSETS)})")
    return MIGRATION_ASSETS[stem]


# The schema versions other assets build on.
AGENT_EVENTS_SCHEMA = migration_asset("0011_agent_events_final")
PRICES_SCHEMA = migration_asset("0009_model_prices")
ENRICHMENT_SCHEMA = migration_asset("0006_enrichment")
DRIFT_SCHEMA = migration_asset("0007_model_drift")

defs = dg.Definitions(assets=list(MIGRATION_ASSETS.values()))
