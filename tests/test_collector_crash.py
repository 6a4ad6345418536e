"""A 200 from the Collector means the span is on disk: kill -9 under load loses no acknowledged span."""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import threading
import time
import uuid

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from metrics_platform.stack import collector
from tests.helpers import wait_for

SPANS_PER_REQUEST = 100


def _request(service: str) -> tuple[bytes, list[str]]:
    now = time.time_ns()
    spans = [
        Span(
            trace_id=secrets.token_bytes(16),
            span_id=secrets.token_bytes(8),
            name="llm_call",
            start_time_unix_nano=now - 1_000_000,
            end_time_unix_nano=now,
            attributes=[KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4.1"))],
        )
        for _ in range(SPANS_PER_REQUEST)
    ]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    ).SerializeToString()
    return body, [s.span_id.hex() for s in spans]


class Sender(threading.Thread):
    """Sends requests until stopped (or a bound is reached); keeps the span ids acknowledged with 200."""

    def __init__(self, port: int, service: str, max_requests: int = 400) -> None:
        super().__init__(daemon=True)
        self.port, self.service, self.max_requests = port, service, max_requests
        self.acknowledged: list[str] = []
        # Spans of requests that got no answer (the Collector died mid-request): it may have queued them.
        self.unanswered: list[str] = []
        self.refused = 0
        self.stop = threading.Event()

    def run(self) -> None:
        connection = None
        for _ in range(self.max_requests):
            if self.stop.is_set():
                break
            body, span_ids = _request(self.service)
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.acknowledged.extend(span_ids)
                else:
                    self.refused += 1
            except OSError:  # the Collector is down: those spans were never acknowledged
                self.refused += 1
                self.unanswered.extend(span_ids)
                connection = None
                time.sleep(0.05)


def test_kill_9_under_load_loses_no_acknowledged_span(stack, ch):
    service = f"crash-{uuid.uuid4().hex[:8]}"
    senders = [Sender(stack.collector.otlp_http_port, service) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        wait_for(lambda: sum(len(s.acknowledged) for s in senders) >= 5_000, 60, "load on the Collector")
        pid = collector.daemon(stack).pid()
        os.kill(pid, signal.SIGKILL)
        # no operator: the supervisor starts it again, and it reads its queue back from disk
        wait_for(
            lambda: collector.daemon(stack).pid() not in (None, pid) and collector.healthy(stack),
            60,
            "the Collector restarted by its supervisor",
        )
        time.sleep(1.0)  # some load on the restarted Collector as well
    finally:
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.join(30)
    acknowledged = {span_id for s in senders for span_id in s.acknowledged}
    assert len(acknowledged) >= 5_000

    def missing() -> set[str]:
        rows = ch.query(
            "SELECT DISTINCT span_id FROM agent_events WHERE service = {s:String}", parameters={"s": service}
        ).result_rows
        return acknowledged - {r[0] for r in rows}

    deadline = time.monotonic() + 120
    while (lost := missing()) and time.monotonic() < deadline:
        time.sleep(1.0)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged spans never reached ClickHouse"
    time.sleep(5)  # a resent copy, if any, has been finalized or dropped by now
    rows = ch.query(
        "SELECT span_id, count() FROM agent_events WHERE service = {s:String} GROUP BY span_id",
        parameters={"s": service},
    ).result_rows
    # The Collector delivers at least once (a batch in Kafka but not yet marked done when the process
    # died is sent again); the finalizer stores a span seen again within its lookback once.
    twice = [span_id for span_id, n in rows if n > 1]
    assert not twice, f"{len(twice)} span(s) stored twice, e.g. {twice[:3]}"
    # Besides the acknowledged spans, only those of a request the Collector had queued when it died, before it
    # could answer, may arrive (their sender saw an error; a real client would retry them).
    unanswered = {span_id for s in senders for span_id in s.unanswered}
    unacknowledged = {span_id for span_id, _ in rows} - acknowledged
    assert unacknowledged <= unanswered, f"{len(unacknowledged - unanswered)} stored span(s) were never sent"
