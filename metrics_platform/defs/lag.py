"""Consumer lag of ClickHouse's Kafka engines: plotted in the UI, alerted on when it persists."""

import json
import time

import dagster as dg

from metrics_platform import kafka_lag
from metrics_platform.alerts import Alert
from metrics_platform.defs.kafka import KAFKA_TOPICS
from metrics_platform.defs.resources import AlertsResource, PlatformSettings


def build_consumer_lag_sensor(minimum_interval_seconds: int = 30) -> dg.SensorDefinition:
    """The lag sensor; a factory so tests can build and call it directly."""

    @dg.sensor(
        name="consumer_lag_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[KAFKA_TOPICS],
    )
    def consumer_lag_sensor(
        context: dg.SensorEvaluationContext, platform: PlatformSettings, alerts: AlertsResource
    ) -> dg.SensorResult:
        """Reads committed offsets against high watermarks for ClickHouse's consumer groups.

        Records the lag as an observation of `kafka_topics` (plotted in the UI). Alerts once when a
        group's lag stays above METRICS_PLATFORM_LAG_ALERT_THRESHOLD messages for
        METRICS_PLATFORM_LAG_ALERT_FOR_SECONDS, and sends a recovery message when it clears.
        Only bounded admin calls: a sensor tick must finish well within Dagster's time-out.
        """
        settings = platform.get()
        rules = settings.alerting
        state = json.loads(context.cursor) if context.cursor else {"above_since": {}, "alerting": []}
        now = time.time()
        metadata: dict[str, dg.MetadataValue] = {}
        for group, topic in kafka_lag.clickhouse_groups(settings.kafka).items():
            lag = kafka_lag.total_lag(settings.kafka, group, topic, timeout_s=10)
            metadata[f"lag.{group}"] = dg.MetadataValue.int(lag)
            if lag > rules.lag_threshold:
                since = state["above_since"].setdefault(group, now)
                if now - since >= rules.lag_for_seconds and group not in state["alerting"]:
                    alerts.send(
                        Alert(
                            title=f"Kafka consumer lag: {group}",
                            text=f"{lag:,} messages behind on {topic} for {now - since:.0f}s "
                            f"(threshold {rules.lag_threshold:,}). Is ClickHouse ingesting?",
                            key=f"lag:{group}",
                            fields={"lag": lag, "topic": topic},
                        ),
                        context.log,
                    )
                    state["alerting"].append(group)
            else:
                state["above_since"].pop(group, None)
                if group in state["alerting"]:
                    alerts.send(
                        Alert(
                            title=f"Kafka consumer lag recovered: {group}",
                            text=f"{lag:,} messages behind on {topic} (threshold {rules.lag_threshold:,}).",
                            kind="recovery",
                            key=f"lag:{group}",
                            fields={"lag": lag, "topic": topic},
                        ),
                        context.log,
                    )
                    state["alerting"].remove(group)
        return dg.SensorResult(
            asset_events=[dg.AssetObservation(asset_key=KAFKA_TOPICS, metadata=metadata)],
            cursor=json.dumps(state),
        )

    return consumer_lag_sensor


defs = dg.Definitions(sensors=[build_consumer_lag_sensor()])
