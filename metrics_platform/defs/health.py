"""Pipeline health in the UI: Collector queue, ClickHouse freshness and insert delay, component restarts."""

import dagster as dg

from metrics_platform import empty_messages, pipeline_health
from metrics_platform.alerting import store
from metrics_platform.defs.kafka import KAFKA_TOPICS
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings
from metrics_platform.defs.schema import AGENT_EVENTS_SCHEMA, migration_asset
from metrics_platform.settings import Settings
from metrics_platform.stack.supervisor import Supervisor

PIPELINE = dg.AssetSpec(
    key="pipeline_health",
    group_name="health",
    description=(
        "The live ingest path (Collector → Kafka → ClickHouse). Not materialized: the "
        "pipeline_health_sensor records observations whose numbers the UI plots over time."
    ),
    kinds={"opentelemetry", "clickhouse"},
)

# The tables ClickHouse fills by itself from Kafka: observed (row counts) by the health sensor and
# checked for keeping up, rather than materialized.
_STREAM_TEXT = {
    "span_inbox": "Every span within a second of reaching ClickHouse, before attribution (sql/0010).",
    "agent_events": "Final events, one row per span, attributed and priced, with the rollup projections (sql/0011).",
    "dead_letters": "Messages and spans ClickHouse rejected, with the reason and the Kafka position (sql/0010).",
}
_STREAM_DEPS = {
    "span_inbox": [migration_asset("0010_span_inbox"), KAFKA_TOPICS],
    "agent_events": [AGENT_EVENTS_SCHEMA, dg.AssetKey("span_inbox")],
    "dead_letters": [migration_asset("0010_span_inbox"), KAFKA_TOPICS],
}
STREAMS = {
    name: dg.AssetSpec(
        key=name,
        group_name="ingest",
        deps=_STREAM_DEPS[name],
        description=f"{text} Streamed: written continuously by ClickHouse, observed every minute by "
        "pipeline_health_sensor (rows, rows in the last 5 minutes); its check up_to_date fails while it falls behind.",
        kinds={"clickhouse"},
    )
    for name, text in _STREAM_TEXT.items()
}
UP_TO_DATE = [dg.AssetCheckSpec("up_to_date", asset=spec.key) for spec in STREAMS.values()]


def _stream_verdicts(settings: Settings, health: dict[str, float], lags: dict[str, int] | None):
    spans_group = f"{settings.kafka.consumer_group_prefix}_otel_spans"
    # A span waits the attribution delay on purpose; a few finalizer rounds and a minute more is late.
    margin = 2 * settings.ingest.finalizer_interval_s + 60
    return pipeline_health.streams_up_to_date(health, lags, spans_group, settings.ingest.attribution_delay_s, margin)


@dg.multi_asset_check(specs=UP_TO_DATE, can_subset=True)
def streams_up_to_date(
    context: dg.AssetCheckExecutionContext, platform: PlatformSettings, clickhouse: ClickHouseResource
):
    """Each streamed table keeps up: Kafka consumers not behind, no span waiting far past the attribution
    delay (the pipeline_health_sensor reports the same verdicts every minute)."""
    settings = platform.get()
    health = pipeline_health.clickhouse_health(clickhouse.get_reader())
    lags = pipeline_health.consumer_lags(settings.kafka)
    for name, (ok, why) in _stream_verdicts(settings, health, lags).items():
        key = dg.AssetCheckKey(dg.AssetKey(name), "up_to_date")
        if key in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(asset_key=name, check_name="up_to_date", passed=ok, description=why)


def build_pipeline_health_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    """The health sensor; a factory so tests can build and call it directly."""

    @dg.sensor(
        name="pipeline_health_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[PIPELINE.key, KAFKA_TOPICS, *(spec.key for spec in STREAMS.values())],
    )
    def pipeline_health_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformSettings, clickhouse: ClickHouseResource
    ) -> dg.SensorResult:
        """Observes the Collector's Kafka queue size, ClickHouse freshness (now − newest event),
        insert delay (span end → stored, p50/p95 over 5 min), recent dead letters, and how often
        each component of the stack died and was restarted by the supervisor (``restarts_<name>``).

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
            metadata |= pipeline_health.clickhouse_health(clickhouse.get_reader())
        except Exception as exc:  # clickhouse-connect raises several types; all mean "unreachable"
            metadata["clickhouse_error"] = str(exc)[:300]
        metadata |= pipeline_health.component_restarts(Supervisor(settings.run_dir, settings.log_dir))
        events = _streams_and_samples(context, settings, clickhouse, metadata)
        context.log.info(f"pipeline health: {metadata}")
        behind = [e.asset_key.path[-1] for e in events if isinstance(e, dg.AssetCheckEvaluation) and not e.passed]
        summary = f"behind: {', '.join(behind)}" if behind else "span_inbox, agent_events, dead_letters up to date"
        return dg.SensorResult(
            asset_events=[dg.AssetObservation(asset_key=PIPELINE.key, metadata=metadata), *events],
            skip_reason=f"{summary}; {len(metadata)} numbers observed",
        )

    return pipeline_health_sensor


def _streams_and_samples(
    context: dg.SensorEvaluationContext, settings: Settings, clickhouse: ClickHouseResource, metadata: dict
) -> list:
    """Consumer lag (on kafka_topics), the streamed tables' rows and verdicts, and the numbers as
    pipeline_health_samples rows for the Pipeline health dashboard."""
    events: list = []
    lags: dict[str, int] | None = None
    try:
        lags = pipeline_health.consumer_lags(settings.kafka)
        events.append(
            dg.AssetObservation(
                asset_key=KAFKA_TOPICS, metadata={f"lag.{g}": dg.MetadataValue.int(v) for g, v in lags.items()}
            )
        )
    except Exception as exc:  # confluent-kafka raises KafkaException and others; all mean "unreachable"
        metadata["kafka_error"] = str(exc)[:300]
    numbers = {k: float(v) for k, v in metadata.items() if isinstance(v, int | float)}
    for name, (ok, why) in _stream_verdicts(settings, numbers, lags).items():
        events.append(dg.AssetCheckEvaluation(asset_key=dg.AssetKey(name), check_name="up_to_date", passed=ok,
                                              description=why, metadata={"why": why}))  # fmt: skip
    try:
        ch = clickhouse.get_client()
        for name, facts in pipeline_health.stream_rows(ch).items():
            rows = {"dagster/row_count": dg.MetadataValue.int(int(facts["rows"]))}
            rows["rows_last_5m"] = dg.MetadataValue.int(int(facts.get("rows_last_5m", 0)))
            events.append(dg.AssetObservation(asset_key=name, metadata=rows))
        labelled = {("consumer_lag", group): float(lag) for group, lag in (lags or {}).items()}
        totals = {"consumer_lag_total": float(sum(lags.values()))} if lags is not None else {}
        store.record_samples(ch, numbers | totals, labelled)
    except Exception as exc:  # ClickHouse unreachable: the observation above already says so
        context.log.warning(f"streamed tables not observed: {exc}")
    return events


# Zero-byte messages are rare and their dead letters only account for offsets (nothing in them can be stored),
# so every five minutes is soon enough; each tick costs Dagster ~0.3 s of CPU (tick records, the instance
# and resources in the code server), and this sensor ticking every minute was ~0.6 % of a core at idle.
EMPTY_MESSAGES_INTERVAL_S = 300


def build_empty_messages_sensor(minimum_interval_seconds: int = EMPTY_MESSAGES_INTERVAL_S) -> dg.SensorDefinition:
    """The sensor that dead-letters consumed Kafka messages that left no row; a factory so tests can call it."""

    @dg.sensor(
        name="empty_messages_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[STREAMS["dead_letters"].key],
    )
    def empty_messages_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformSettings, clickhouse: ClickHouseResource
    ) -> dg.SensorResult:
        """Writes one dead letter (reason: empty Kafka message) for every offset ClickHouse's consumer groups
        committed since the last tick that left no row in span_inbox or dead_letters: zero-byte messages,
        which ClickHouse's Kafka engine reads without yielding a row. The cursor keeps the next offset per
        topic partition; ``empty_messages_recorded`` on dead_letters counts what a tick wrote.
        """
        settings = platform.get()
        cursor = empty_messages.Cursor.decode(context.cursor)
        result = empty_messages.check(
            settings.kafka,
            clickhouse.get_reader(),
            clickhouse.get_client(),
            cursor,
            settings.ingest.inbox_retention_hours,
        )
        where = ", ".join(f"{t}[{p}]: {len(o)}" for (t, p), o in sorted(result.recorded.items()))
        if result.count:
            context.log.warning(f"{result.count} empty Kafka message(s) recorded in dead_letters ({where})")
        observation = dg.AssetObservation(
            asset_key=STREAMS["dead_letters"].key,
            metadata={"empty_messages_recorded": result.count, "offsets_examined": result.examined},
        )
        return dg.SensorResult(
            asset_events=[observation],
            cursor=result.cursor.encode(),
            skip_reason=f"{result.count} empty Kafka messages recorded in dead_letters"
            f"{f' ({where})' if where else ''}; {result.examined:,} consumed offsets examined",
        )

    return empty_messages_sensor


defs = dg.Definitions(
    assets=[PIPELINE, *STREAMS.values()],
    asset_checks=[streams_up_to_date],
    sensors=[build_pipeline_health_sensor(), build_empty_messages_sensor()],
)
