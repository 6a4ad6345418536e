"""Delivery under faults: spans the Collector accepted are not lost when Kafka and the Collector fail."""

from __future__ import annotations

import uuid

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from metrics_platform.stack import collector, kafka_broker
from tests.helpers import wait_for


def _send_spans(settings, service: str, count: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "agent": "fault-agent"}))
    exporter = OTLPSpanExporter(endpoint=f"{settings.collector.otlp_http_endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=count, max_export_batch_size=500))
    tracer = provider.get_tracer("faults")
    for i in range(count):
        with tracer.start_as_current_span("llm_call") as span:
            span.set_attribute("gen_ai.request.model", "gpt-4.1")
            span.set_attribute("gen_ai.usage.input_tokens", i)
    # force_flush returns once the Collector has answered every export with success.
    assert provider.force_flush(30_000), "the Collector did not accept the spans"
    provider.shutdown()


def test_spans_accepted_while_kafka_is_down_survive_a_collector_restart(stack, ch):
    service = f"faults-{uuid.uuid4().hex[:8]}"
    count = 2000
    assert kafka_broker.stop(stack), "Kafka was not running"
    try:
        _send_spans(stack, service, count)  # accepted into the Collector's persistent queue
        assert collector.stop(stack)
        collector.start(stack)  # the queue is read back from disk
    finally:
        kafka_broker.start(stack)

    def stored():
        total, unique = ch.query(
            "SELECT count(), uniqExact(span_id) FROM agent_events WHERE service = {s:String}",
            parameters={"s": service},
        ).result_rows[0]
        return (total, unique) if total >= count else None

    total, unique = wait_for(stored, 120, f"{count} spans after Kafka and the Collector came back")
    assert unique == count, f"{count - unique} spans were lost"
    assert total == count, f"{total - count} spans were stored twice"
