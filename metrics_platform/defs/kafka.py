"""Kafka topics as an asset: partitions and retention from configuration."""

import dagster as dg
from confluent_kafka.admin import ConfigResource, ResourceType

from metrics_platform import kafka_clients
from metrics_platform.defs.resources import KafkaResource, PlatformSettings

KAFKA_TOPICS = dg.AssetKey("kafka_topics")


def describe_topics(kafka: KafkaResource, topics: list[str], timeout_s: float = 10.0) -> dict[str, dict[str, int]]:
    """Partition count and retention.ms of each topic (bounded admin calls)."""
    admin = kafka.admin()
    metadata = admin.list_topics(timeout=timeout_s)
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics if t in metadata.topics]
    configs = admin.describe_configs(resources, request_timeout=timeout_s)
    described: dict[str, dict[str, int]] = {}
    for resource, future in configs.items():
        entries = future.result(timeout=timeout_s)
        described[resource.name] = {
            "partitions": len(metadata.topics[resource.name].partitions),
            "retention_ms": int(entries["retention.ms"].value),
        }
    return described


@dg.asset(
    key=KAFKA_TOPICS,
    group_name="kafka",
    pool="kafka",
    kinds={"kafka"},
)
def kafka_topics(context: dg.AssetExecutionContext, platform: PlatformSettings, kafka: KafkaResource):
    """The platform's Kafka topics: OTLP spans from the Collector and flat events from producers.

    Materializing creates missing topics with the configured partitions and retention
    (METRICS_PLATFORM_KAFKA_PARTITIONS, METRICS_PLATFORM_KAFKA_RETENTION_HOURS); existing topics are
    left as they are and their actual settings reported, so the retention check can compare.
    """
    settings = platform.get().kafka
    created = kafka_clients.ensure_topics(settings)
    if created:
        context.log.info(f"created topics {created}")
    described = describe_topics(kafka, [settings.spans_topic, settings.events_topic])
    metadata: dict[str, object] = {"created": created, "bootstrap_servers": settings.bootstrap_servers}
    for topic, facts in described.items():
        metadata[f"{topic}.partitions"] = facts["partitions"]
        metadata[f"{topic}.retention_hours"] = facts["retention_ms"] / 3_600_000
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=KAFKA_TOPICS, description="Topic retention equals METRICS_PLATFORM_KAFKA_RETENTION_HOURS.")
def kafka_topic_retention(platform: PlatformSettings, kafka: KafkaResource) -> dg.AssetCheckResult:
    """Each topic keeps data as long as configured (24-48 h leaves room to replay after an outage)."""
    settings = platform.get().kafka
    wanted_ms = settings.retention_hours * 3_600_000
    described = describe_topics(kafka, [settings.spans_topic, settings.events_topic])
    wrong = {t: f["retention_ms"] / 3_600_000 for t, f in described.items() if f["retention_ms"] != wanted_ms}
    missing = {settings.spans_topic, settings.events_topic} - described.keys()
    return dg.AssetCheckResult(
        passed=not wrong and not missing,
        metadata={
            "configured_hours": settings.retention_hours,
            "mismatched_hours": {t: str(h) for t, h in wrong.items()},
            "missing_topics": sorted(missing),
        },
    )


defs = dg.Definitions(assets=[kafka_topics], asset_checks=[kafka_topic_retention])
