"""Helpers for the Collector tests: send raw OTLP, read a topic whole, search ClickHouse generically."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from metrics_platform import kafka_clients
from metrics_platform.settings import Settings


def post_otlp(
    settings: Settings,
    body: bytes | dict,
    content_type: str = "application/json",
    encoding: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[int, bytes]:
    """POST one OTLP/HTTP traces request; returns (HTTP status, response body)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": content_type} | ({"Content-Encoding": encoding} if encoding else {})
    request = urllib.request.Request(f"{settings.collector.otlp_http_endpoint}/v1/traces", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[bytes]:
    """Every message of ``topic`` up to its current end, as raw bytes (all partitions)."""
    consumer = kafka_clients.consumer(settings.kafka, f"test-read-{uuid.uuid4()}")
    try:
        ends = _end_offsets(consumer, topic, timeout_s)
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=1.0):
                if message.error():
                    continue
                values.append(message.value() or b"")
                if message.offset() + 1 >= ends[message.partition()]:
                    pending.discard(message.partition())
        assert not pending, f"could not read {topic} partitions {sorted(pending)} to their end in {timeout_s:.0f}s"
        return values
    finally:
        consumer.close()


def _end_offsets(consumer, topic: str, timeout_s: float) -> dict[int, int]:
    # Right after a broker restart a partition may have no leader yet: retry until it has one.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def kafka_traces(settings: Settings, trace_ids: set[str], timeout_s: float = 60.0) -> list[dict]:
    """The decoded spans-topic records holding any of ``trace_ids``, once all of them have arrived."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [
            json.loads(v)
            for v in read_topic(settings, settings.kafka.spans_topic)
            if any(t.encode() in v for t in trace_ids)
        ]
        seen = {
            span["traceId"]
            for record in records
            for rs in record["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        }
        if trace_ids <= seen or time.monotonic() > deadline:
            assert trace_ids <= seen, f"traces never reached Kafka: {sorted(trace_ids - seen)}"
            return records
        time.sleep(1.0)


# Tables that hold data: Kafka engine tables would consume messages if read, views hold nothing.
_STRING_COLUMNS_SQL = """
SELECT c.table, groupArray(c.name)
FROM system.columns AS c
INNER JOIN system.tables AS t ON c.database = t.database AND c.table = t.name
WHERE c.database = currentDatabase()
  AND (t.engine LIKE '%MergeTree' OR t.engine IN ('Memory', 'Log', 'TinyLog', 'StripeLog'))
  AND (c.type LIKE '%String%' OR c.type LIKE '%JSON%' OR c.type LIKE '%Object%')
GROUP BY c.table
ORDER BY c.table
"""


def clickhouse_find(ch, needles: list[str]) -> dict[str, set[str]]:
    """Which ``needles`` occur in which table, searching every string-like column of every table.

    Tables are discovered at call time, so the check follows schema changes.
    """
    found: dict[str, set[str]] = {}
    for table, columns in ch.query(_STRING_COLUMNS_SQL).result_rows:
        text = "concat(" + ", '\\0', ".join(f"toString(`{c}`)" for c in columns) + ")"
        # multiSearchAny takes at most 255 needles per call.
        for start in range(0, len(needles), 200):
            hits = ch.query(
                f"SELECT groupUniqArrayArray(arrayFilter(n -> position(txt, n) > 0, {{needles:Array(String)}})) "
                f"FROM (SELECT {text} AS txt FROM `{table}`) WHERE multiSearchAny(txt, {{needles:Array(String)}})",
                parameters={"needles": needles[start : start + 200]},
            ).result_rows[0][0]
            if hits:
                found.setdefault(table, set()).update(hits)
    return found
