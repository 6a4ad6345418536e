"""Consumer lag from committed offsets and high watermarks, with bounded admin calls only."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec

from metrics_platform import kafka_clients
from metrics_platform.settings import KafkaSettings


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int  # -1 when the group never committed on this partition
    high_watermark: int

    @property
    def lag(self) -> int:
        # A partition never committed counts from its start: everything in it is unread.
        return self.high_watermark - max(self.committed, 0)


def clickhouse_groups(settings: KafkaSettings) -> dict[str, str]:
    """The ClickHouse Kafka-engine consumer groups and the topic each reads."""
    prefix = settings.consumer_group_prefix
    return {f"{prefix}_otel_spans": settings.spans_topic, f"{prefix}_agent_events": settings.events_topic}


def group_lag(settings: KafkaSettings, group: str, topic: str, timeout_s: float = 10.0) -> list[PartitionLag]:
    """Lag of ``group`` on every partition of ``topic``."""
    admin = kafka_clients.admin(settings)
    metadata = admin.list_topics(topic, timeout=timeout_s)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise RuntimeError(f"Kafka topic {topic} not found on {settings.bootstrap_servers}")
    partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    committed_future = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group]
    committed = {tp.partition: tp.offset for tp in committed_future.result(timeout=timeout_s).topic_partitions}
    latest = admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions}, request_timeout=timeout_s)
    result = []
    for tp, future in latest.items():
        high = future.result(timeout=timeout_s).offset
        result.append(PartitionLag(topic, tp.partition, committed.get(tp.partition, -1), high))
    return sorted(result, key=lambda p: p.partition)


def total_lag(settings: KafkaSettings, group: str, topic: str, timeout_s: float = 10.0) -> int:
    return sum(p.lag for p in group_lag(settings, group, topic, timeout_s))
