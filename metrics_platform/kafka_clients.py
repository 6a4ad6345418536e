"""The one place Kafka clients are configured, so security settings reach every one of them."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from metrics_platform.settings import KafkaSettings

# librdkafka's own log lines (a broker that cannot be reached, retries) go to this logger instead of
# raw "%3|...|rdkafka#producer-1|" lines on stderr: long-running processes see them through Python
# logging; the CLI turns it off and reports a failure in its own words.
LIBRDKAFKA_LOG = logging.getLogger("metrics_platform.librdkafka")


def _config(settings: KafkaSettings, **extra: Any) -> dict[str, Any]:
    # SASL/TLS from the platform's settings, METRICS_PLATFORM_KAFKA_PROP_* on top.
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "logger": LIBRDKAFKA_LOG,
        **settings.librdkafka_security(),
        **extra,
    }


def admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(_config(settings))


def producer(settings: KafkaSettings, **extra: Any) -> Producer:
    """An idempotent producer: retries after a lost ack cannot write a message twice."""
    return Producer(_config(settings, **{"enable.idempotence": True, "acks": "all", "linger.ms": 20, **extra}))


def consumer(settings: KafkaSettings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(_config(settings, **{"group.id": group_id, "enable.auto.commit": False, **extra}))


def ensure_topics(settings: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the platform's topics with their partitions and retention; returns those created.

    Existing topics are left as they are (partition counts only grow by an explicit change).
    """
    client = admin(settings)
    existing = set(client.list_topics(timeout=timeout_s).topics)
    retention_ms = str(settings.retention_hours * 3600 * 1000)
    wanted = [
        NewTopic(
            topic,
            num_partitions=settings.partitions,
            replication_factor=-1,
            config={
                "retention.ms": retention_ms,
                # The Collector's record limit; ClickHouse skips a message it already stored by its
                # offset and broker timestamp (sql/0010), so the broker sets the timestamp.
                "max.message.bytes": str(settings.max_message_bytes),
                "message.timestamp.type": "LogAppendTime",
            },
        )
        for topic in (settings.spans_topic, settings.events_topic)
        if topic not in existing
    ]
    if not wanted:
        return []
    for topic, future in client.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:
            raise RuntimeError(f"creating Kafka topic {topic} on {settings.bootstrap_servers} failed: {exc}") from exc
    return [t.topic for t in wanted]
