"""OTLP spans through the real Collector, Kafka and ClickHouse land as agent_events rows."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from decimal import Decimal

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from metrics_platform import kafka_clients
from tests.helpers import ingest_state, wait_for

SEED_RESOURCE = {
    "service.name": "api",
    "deployment.environment": "prod",
    "agent": "order_bot",
    "model": "gpt-4.1",
    "provider": "openai",
    "route": "POST /v1/answer",
}


def _provider(settings, resource: dict) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create(resource))
    exporter = OTLPSpanExporter(endpoint=f"{settings.collector.otlp_http_endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _rows(ch, trace_id: str, expected: int) -> list[dict]:
    def fetch():
        result = ch.query(
            "SELECT * EXCEPT attrs, toJSONString(attrs) AS attrs_json FROM agent_events "
            "WHERE trace_id = {t:String} ORDER BY ts, span_id",
            parameters={"t": trace_id},
        )
        rows = list(result.named_results())
        return rows if len(rows) >= expected else None

    return wait_for(fetch, 60, f"{expected} row(s) of trace {trace_id}", lambda: ingest_state(ch, trace_id))


def test_seed_client_example_lands_with_hashed_user_and_no_email(stack, ch):
    # The original design's client example, unchanged apart from the endpoint (and an email
    # attribute added to prove the Collector drops it).
    provider = _provider(stack, SEED_RESOURCE)
    with provider.get_tracer("api").start_as_current_span("agent_step") as span:
        span.set_attribute("tokens_prompt", 512)
        span.set_attribute("tokens_completion", 128)
        span.set_attribute("cost_usd", 0.0032)
        span.set_attribute("status", "ok")
        span.set_attribute("user_id", "12345")
        span.set_attribute("user_email", "jane.doe@example.com")
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.force_flush()
    provider.shutdown()

    (row,) = _rows(ch, trace_id, 1)
    assert (row["service"], row["env"], row["agent"], row["model"], row["provider"], row["route"]) == (
        "api",
        "prod",
        "order_bot",
        "gpt-4.1",
        "openai",
        "POST /v1/answer",
    )
    assert row["name"] == "agent_step"
    assert (row["tokens_prompt"], row["tokens_completion"]) == (512, 128)
    assert float(row["cost_usd"]) == 0.0032
    assert row["status"] == "ok" and row["error_type"] == ""
    expected_hash = hashlib.sha256(b"test-salt-not-secret12345").hexdigest()
    assert row["user_id_hash"] == expected_hash
    assert "12345" not in row["attrs_json"] and "example.com" not in row["attrs_json"]
    assert "user_id" not in json.loads(row["attrs_json"])

    # Nothing identifying reached Kafka either: read the spans topic from the start.
    consumer = kafka_clients.consumer(stack.kafka, f"test-pii-{uuid.uuid4()}", **{"auto.offset.reset": "earliest"})
    consumer.subscribe([stack.kafka.spans_topic])
    seen_trace = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and not seen_trace:
            for message in consumer.consume(500, timeout=1.0):
                if message.error():
                    continue
                body = message.value().decode(errors="replace")  # other tests send binary junk
                assert "jane.doe@example.com" not in body and '"user_email"' not in body
                assert '"key":"user_id"' not in body.replace(" ", "")
                # The Collector writes ids in hex (not base64): the row's trace id is in the message.
                seen_trace = seen_trace or trace_id in body
    finally:
        consumer.close()
    assert seen_trace, "the span's Kafka message was not found"


def test_genai_semantic_conventions_map_to_columns(stack, ch):
    provider = _provider(stack, {"service.name": "genai-svc", "deployment.environment.name": "staging"})
    tracer = provider.get_tracer("test")
    start = time.time_ns() - 5_000_000_000
    with tracer.start_as_current_span("invoke_agent", start_time=start, end_on_exit=False) as root:
        root.set_attribute("gen_ai.agent.name", "triage")
        root.set_attribute("http.route", "POST /v1/triage")
        trace_id = format(root.get_span_context().trace_id, "032x")
        chat = tracer.start_span("chat claude", start_time=start + 1_000_000)
        chat.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "claude-sonnet-4",
                "gen_ai.response.model": "claude-sonnet-4-20250514",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.agent.name": "triage",
                "route": "POST /v1/triage",
                "ticket.priority": "high",
            }
        )
        chat.end(end_time=start + 1_000_000 + 1_234_000_000)
        failed = tracer.start_span("embeddings", start_time=start + 2_000_000)
        failed.set_attributes(
            {
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.system": "openai",
                "gen_ai.usage.input_tokens": 50,
                "gen_ai.agent.name": "triage",
            }
        )
        failed.set_status(Status(StatusCode.ERROR, "upstream 503"))
        failed.end(end_time=start + 2_000_000 + 20_000_000)
        typed_error = tracer.start_span("execute_tool search", start_time=start + 3_000_000)
        typed_error.set_attributes({"gen_ai.operation.name": "execute_tool", "error.type": "TimeoutError"})
        typed_error.end(end_time=start + 3_000_000 + 7_000_000)
        root.end(end_time=start + 2_000_000_000)
    provider.force_flush()
    provider.shutdown()

    rows = {r["name"]: r for r in _rows(ch, trace_id, 4)}
    chat_row = rows["chat claude"]
    assert chat_row["service"] == "genai-svc" and chat_row["env"] == "staging"
    assert (chat_row["agent"], chat_row["route"], chat_row["operation"]) == ("triage", "POST /v1/triage", "chat")
    assert (chat_row["model"], chat_row["provider"]) == ("claude-sonnet-4", "anthropic")
    assert (chat_row["tokens_prompt"], chat_row["tokens_completion"]) == (1200, 300)
    assert chat_row["latency_ms"] == 1234
    assert chat_row["status"] == "ok"
    assert chat_row["parent_span_id"] == rows["invoke_agent"]["span_id"]
    assert chat_row["response_model"] == "claude-sonnet-4-20250514"
    attrs = json.loads(chat_row["attrs_json"])
    assert attrs["ticket"]["priority"] == "high"
    assert "gen_ai" not in attrs, "mapped attributes must not be repeated in attrs"
    # No cost on the span: priced from the table (claude-sonnet-4 at $3 / $15 per million tokens).
    assert (chat_row["kind"], chat_row["cost_source"], chat_row["price_id"]) == (
        "llm",
        "computed",
        "anthropic/claude-sonnet-4-0",
    )
    assert chat_row["cost_usd"] == Decimal("0.0081")

    embeddings = rows["embeddings"]
    assert (embeddings["model"], embeddings["provider"]) == ("text-embedding-3-small", "openai")
    assert embeddings["status"] == "error" and embeddings["error_type"] == "span_error"
    assert embeddings["latency_ms"] == 20

    tool = rows["execute_tool search"]
    assert tool["status"] == "error" and tool["error_type"] == "TimeoutError"
    assert rows["invoke_agent"]["route"] == "POST /v1/triage"  # from http.route
    # The tool span carries no agent or route of its own: it inherits its parent's.
    assert (tool["kind"], tool["agent"], tool["route"]) == ("tool", "triage", "POST /v1/triage")
    assert {name: (r["kind"], r["is_request"]) for name, r in rows.items()} == {
        "invoke_agent": ("request", True),
        "chat claude": ("llm", False),
        "embeddings": ("llm", False),
        "execute_tool search": ("tool", False),
    }


def test_a_trace_of_5000_spans_in_one_record_is_stored_whole_and_the_server_stays_up(stack, ch):
    """A long agent run exported at once reaches Kafka as one record (the Collector writes one per trace): here
    5,000 spans, ~3 MB of OTLP JSON with a prompt-sized attribute on each. The mapping keeps the message once for
    its spans (sql/0023); copied into each span's row it asked for ~15 GB and the server exited, then read the
    same uncommitted record again after its restart."""
    from metrics_platform.stack import clickhouse_embedded
    from tests import otlp_json

    service = f"bigtrace-{uuid.uuid4().hex[:8]}"
    trace = uuid.uuid4().hex
    root = otlp_json.span(trace, "POST /v1/run", {"http.route": "POST /v1/run"}, kind=otlp_json.SERVER)
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4.1", "gen_ai.usage.input_tokens": 10}
    steps = [
        otlp_json.span(trace, f"step {i}", {**attrs, "note": "x" * 400}, parent=root["spanId"], kind=otlp_json.CLIENT)
        for i in range(4999)
    ]
    record = json.dumps(otlp_json.request({"service.name": service}, [root, *steps])).encode()
    assert len(record) > 2_500_000
    restarts = clickhouse_embedded.daemon(stack).restarts()
    producer = kafka_clients.producer(stack.kafka, **{"message.max.bytes": stack.kafka.max_message_bytes})
    producer.produce(stack.kafka.spans_topic, record, key=trace.encode())
    assert producer.flush(30) == 0

    def stored():
        n = ch.command("SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service})
        return n if n >= 5000 else None

    assert wait_for(stored, 90, f"5,000 spans of {service}", lambda: ingest_state(ch, trace)) == 5000
    routes = ch.query(
        "SELECT route, count() FROM agent_events WHERE service = {s:String} GROUP BY route", parameters={"s": service}
    ).result_rows
    assert routes == [("POST /v1/run", 5000)]
    assert clickhouse_embedded.daemon(stack).restarts() == restarts
