"""Pipeline health in the UI: Collector queue, ClickHouse freshness and insert delay."""

import dagster as dg

from metrics_platform import pipeline_health
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings

PIPELINE = dg.AssetSpec(
    key="pipeline_health",
    group_name="health",
    description=(
        "The live ingest path (Collector → Kafka → ClickHouse). Not materialized: the "
        "pipeline_health_sensor records observations whose numbers the UI plots over time."
    ),
    kinds={"opentelemetry", "clickhouse"},
)


def build_pipeline_health_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    """The health sensor; a factory so tests can build and call it directly."""

    @dg.sensor(
        name="pipeline_health_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[PIPELINE.key],
    )
    def pipeline_health_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformSettings, clickhouse: ClickHouseResource
    ) -> dg.SensorResult:
        """Observes the Collector's Kafka queue size, ClickHouse freshness (now − newest event),
        insert delay (span end → stored, p50/p95 over 5 min) and recent dead letters.

        A component that cannot be reached is reported in the observation rather than failing
        the tick, so the other numbers keep flowing.
        """
        settings = platform.get()
        metadata: dict[str, float | str] = {}
        try:
            metadata |= pipeline_health.collector_queue(settings.collector.metrics_port)
        except (OSError, RuntimeError) as exc:
            metadata["collector_error"] = str(exc)[:300]
        try:
            metadata |= pipeline_health.clickhouse_health(clickhouse.get_client())
        except Exception as exc:  # clickhouse-connect raises several types; all mean "unreachable"
            metadata["clickhouse_error"] = str(exc)[:300]
        context.log.info(f"pipeline health: {metadata}")
        return dg.SensorResult(asset_events=[dg.AssetObservation(asset_key=PIPELINE.key, metadata=metadata)])

    return pipeline_health_sensor


defs = dg.Definitions(assets=[PIPELINE], sensors=[build_pipeline_health_sensor()])
