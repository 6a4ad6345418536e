"""Size limits aligned from the OTLP receiver to Kafka: an oversized request is refused with a clear
status before anything is accepted, and a span just under the limit is stored whole."""

from __future__ import annotations

import gzip
import re
import secrets
import time
from dataclasses import replace

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from metrics_platform.settings import Settings
from metrics_platform.stack import collector, kafka_broker
from metrics_platform.stack.process import StackError
from tests.collector_helpers import clickhouse_find, post_otlp, read_topic
from tests.helpers import wait_for

PROTOBUF = "application/x-protobuf"


def _request(trace_id: str, blob: str) -> bytes:
    """One span whose attribute ``blob`` makes up nearly all of the request's size."""
    now = time.time_ns()
    span = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=secrets.token_bytes(8),
        name="big",
        start_time_unix_nano=now - 1_000_000,
        end_time_unix_nano=now,
        attributes=[KeyValue(key="blob", value=AnyValue(string_value=blob))],
    )
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="limits"))])
    spans = ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=[span])])
    return ExportTraceServiceRequest(resource_spans=[spans]).SerializeToString()


def _sized(trace_id: str, size: int, marker: str) -> bytes:
    """A request of exactly ``size`` protobuf bytes whose blob ends with ``marker``."""
    fill = size - len(_request(trace_id, marker))
    for _ in range(4):  # the blob's length prefix grows with it: converge on the exact size
        body = _request(trace_id, "a" * fill + marker)
        if len(body) == size:
            return body
        fill -= len(body) - size
    raise AssertionError(f"could not build a request of {size} bytes")


def test_oversized_requests_are_refused_and_a_span_just_under_the_limit_is_stored(stack, ch):
    limit = stack.collector.max_request_mib * 1024 * 1024
    refused_trace, stored_trace = secrets.token_hex(16), secrets.token_hex(16)
    refused_marker, stored_marker = f"refused-{refused_trace[:12]}", f"stored-{stored_trace[:12]}"
    oversized = _sized(refused_trace, limit + 1024, refused_marker)

    # OTLP/HTTP: refused before anything is accepted, with the reason in the OTLP status.
    status, body = post_otlp(stack, oversized, PROTOBUF)
    assert status == 400 and b"request body too large" in body, (status, body[:200])
    # Compressed small but large once decompressed: the limit applies to the decompressed body.
    status, body = post_otlp(stack, gzip.compress(oversized), PROTOBUF, encoding="gzip")
    assert status == 400 and b"request body too large" in body, (status, body[:200])

    # OTLP/gRPC: RESOURCE_EXHAUSTED, naming both sizes.
    with grpc.insecure_channel(
        f"127.0.0.1:{stack.collector.otlp_grpc_port}", options=[("grpc.max_send_message_length", 2 * limit)]
    ) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            export(oversized, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"vs. {limit}" in refused.value.details()

    # Just under the limit: accepted and stored whole (the marker sits at the very end of the blob).
    status, body = post_otlp(stack, _sized(stored_trace, limit - 1024, stored_marker), PROTOBUF)
    assert status == 200, body[:200]
    wait_for(lambda: clickhouse_find(ch, [stored_marker]), 120, "the span just under the limit in ClickHouse")
    # Sent first, so it would have landed by now had any of the refused requests been accepted.
    assert clickhouse_find(ch, [refused_trace, refused_marker]) == {}
    assert not any(refused_marker.encode() in m for m in read_topic(stack, stack.kafka.spans_topic))
    log = collector.daemon(stack).log_file.read_text(errors="replace")
    assert "exceeds max message size" not in log and "greater than max size" not in log


def test_collector_config_defaults_match_the_settings(monkeypatch):
    """config.yaml's ${env:VAR:-default} fallbacks (for containers) agree with what the launcher sets."""
    for name in ("OTLP_MAX_REQUEST_MIB", "KAFKA_MAX_MESSAGE_BYTES", "COLLECTOR_QUEUE_FSYNC"):
        monkeypatch.delenv(f"METRICS_PLATFORM_{name}", raising=False)
    env = collector.environment(Settings.from_env())
    defaults = dict(re.findall(r"\$\{env:(METRICS_PLATFORM_\w+):-([^}]*)\}", collector.CONFIG.read_text()))
    assert defaults, "config.yaml has no defaulted variables"
    assert {name: env[name] for name in defaults} == defaults


def test_limits_that_could_drop_accepted_spans_are_refused_at_start():
    settings = Settings.from_env()
    collector.check_size_limits(settings)  # the defaults are consistent
    too_big = replace(settings, collector=replace(settings.collector, max_request_mib=8))
    with pytest.raises(StackError, match="KAFKA_MAX_MESSAGE_BYTES"):
        collector.check_size_limits(too_big)
    # The broker accepts what the Collector may produce.
    properties = kafka_broker.render_properties(settings, settings.state_dir / "kafka" / "data")
    assert f"message.max.bytes={settings.kafka.max_message_bytes}" in properties
    assert collector.max_record_bytes(settings) < settings.kafka.max_message_bytes
