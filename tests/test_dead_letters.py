"""Bad input never stalls ingestion and is never dropped silently."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from metrics_platform import contract
from metrics_platform.contract import validate
from tests import otlp_json
from tests.helpers import flat_event, produce, recent, span_id, stored_count, trace_id, wait_for


def _dead_letters(ch, topic: str, positions: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[str, str]]:
    wanted = set(positions)
    rows = ch.query(
        "SELECT partition, offset, error, payload FROM dead_letters WHERE source_topic = {t:String}",
        parameters={"t": topic},
    ).result_rows
    return {(p, o): (e, body) for p, o, e, body in rows if (p, o) in wanted}


def test_malformed_messages_go_to_dead_letters_and_later_ones_still_arrive(stack, ch):
    service = f"dlq-{uuid.uuid4().hex[:8]}"
    good_trace = trace_id()
    start_ns = time.time_ns() - 60_000_000_000
    good_otlp = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": good_trace,
                                "spanId": span_id(),
                                "name": "ok-span",
                                "startTimeUnixNano": str(start_ns),
                                "endTimeUnixNano": str(start_ns + 250_000_000),
                            },
                            {"traceId": "not-hex", "spanId": span_id(), "startTimeUnixNano": "1"},
                        ]
                    }
                ],
            }
        ]
    }
    spans_topic = stack.kafka.spans_topic
    # An empty message carries nothing: ClickHouse's Kafka engine skips it; it must not block the rest.
    bad_spans = [b"\x00\xffnot json at all", b'{"resourceSpans": "oops"}', b""]
    positions = produce(stack.kafka, spans_topic, [*bad_spans, good_otlp])
    del positions[2]

    events_topic = stack.kafka.events_topic
    bad_events = [
        b"{broken",
        orjson.dumps(flat_event(service, ts="yesterday")),
        orjson.dumps(flat_event(service, user_id="u-42", user_email="jane@example.com")),
    ]
    good_event = flat_event(service)
    event_positions = produce(stack.kafka, events_topic, [*bad_events, good_event])

    count = wait_for(
        lambda: (
            ch.query(
                "SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service}
            ).result_rows[0][0]
            >= 2
            or None
        ),
        60,
        "the good span and the good event",
    )
    assert count
    span_dlq = wait_for(
        lambda: len(d := _dead_letters(ch, spans_topic, positions)) == 3 and d,
        60,
        "3 dead letters from the spans topic",
    )
    assert span_dlq[positions[0]][0] == "payload is not valid UTF-8"
    assert span_dlq[positions[1]][0].startswith("no spans in payload")
    # The unmappable span inside an otherwise good message is kept too, at that message's offset.
    assert span_dlq[positions[2]][0].startswith("span traceId is not 32 hex characters (span ")

    event_dlq = wait_for(
        lambda: len(d := _dead_letters(ch, events_topic, event_positions[:3])) == 3 and d,
        60,
        "3 dead letters from the events topic",
    )
    assert event_dlq[event_positions[0]][0] == "payload is not a JSON object"
    assert event_dlq[event_positions[1]][0].startswith("ts is missing")
    error, payload = event_dlq[event_positions[2]]
    assert error.startswith("raw user identifiers are not accepted")
    assert "u-42" not in payload and "jane@example.com" not in payload, "dead letters must be scrubbed too"


def test_clickhouse_and_the_python_contract_agree(stack, ch):
    """Every sample the JSON Schema accepts lands; every one it rejects becomes a dead letter."""
    service = f"contract-{uuid.uuid4().hex[:8]}"
    samples = [
        flat_event(service),
        flat_event(service, ts=int(time.time() * 1000) - 60_000),
        flat_event(service, ts=recent(offset_hours=2), attrs={"tool": {"name": "search"}}),
        flat_event(service, status="error", error_type="Timeout", user_id_hash="ab" * 32),
        flat_event(service, trace_id="xyz"),
        flat_event(service, span_id="1234"),
        {**flat_event(service), "service": ""},
        flat_event(service, latency_ms=-5),
        flat_event(service, tokens_prompt="many"),
        flat_event(service, user_id_hash="short"),
        flat_event(service, attrs=["not", "an", "object"]),
        flat_event(service, attrs={"user_email": "x@example.com"}),
        # what fuzzing found stored as if valid or silently expired (see the reliability issue)
        flat_event(service, ts=recent(minutes_ago=-180)),
        flat_event(service, ts=recent(minutes_ago=100 * 24 * 60)),
        flat_event(service, ts="1970-01-01T00:00:00Z"),
        flat_event(service, ts="2099-01-01T00:00:00Z"),
        flat_event(service, ts="0001-01-01T00:00:00Z"),
        flat_event(service, tokens_prompt=4294967296),
        flat_event(service, tokens_completion=1e300),
        flat_event(service, tokens_cache_read=-1),
        flat_event(service, cost_usd=-0.5),
        {**flat_event(service), "service": 42},
        {**flat_event(service), "service": ["a", "b"]},
        {**flat_event(service), "env": {"name": "prod"}},
        flat_event(service, attrs={"enduser.id": "u-1"}),
        flat_event(service, attrs={"request": {"user": {"email": "x@example.com"}}}),
        flat_event(service, kind="bogus"),
        # the new fields and the original design's history shapes
        flat_event(service, user_id_hash="cd" * 16),
        flat_event(service, ts=(datetime.now(UTC) - timedelta(minutes=3)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]),
        flat_event(service, tokens_cache_read=3, tokens_cache_write=2, tokens_reasoning=1, response_model="m-1"),
        flat_event(service, kind="tool", tool="search", span_kind="internal"),
    ]
    accepted = contract.accepted_window(stack.retention_days, stack.ingest.max_future_s)
    expected_valid = [validate(s, accepted) is None for s in samples]
    assert 0 < sum(expected_valid) < len(samples)
    positions = produce(stack.kafka, stack.kafka.events_topic, samples)

    def outcome():
        landed = {
            row[0]
            for row in ch.query(
                "SELECT span_id FROM agent_events WHERE service = {s:String}", parameters={"s": service}
            ).result_rows
        }
        rejected = _dead_letters(ch, stack.kafka.events_topic, positions)
        done = len(landed) + len(rejected) == len(samples)
        return (landed, rejected) if done else None

    landed, rejected = wait_for(outcome, 60, "every sample to land or be rejected")
    for sample, position, valid in zip(samples, positions, expected_valid, strict=True):
        if valid:
            assert sample["span_id"] in landed, f"valid sample was not stored: {sample}"
        else:
            assert position in rejected, f"invalid sample was not rejected: {sample} ({validate(sample, accepted)})"


def _otlp(service: object, attrs: dict | None = None, start_ns: int | None = None, end_ns: int | None = None) -> bytes:
    """One OTLP JSON message with one LLM span; ``service`` or an attribute value may be a raw AnyValue dict."""

    def attribute(key: str, value: object) -> dict:
        if isinstance(value, dict):
            return {"key": key, "value": value}
        return otlp_json.attribute(key, value)

    start = time.time_ns() - 5_000_000_000 if start_ns is None else start_ns
    span = {
        "traceId": trace_id(),
        "spanId": span_id(),
        "name": "chat gpt-4.1",
        "kind": otlp_json.CLIENT,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 250_000_000 if end_ns is None else end_ns),
        "attributes": [attribute(k, v) for k, v in {"gen_ai.request.model": "gpt-4.1", **(attrs or {})}.items()],
    }
    message = {
        "resourceSpans": [
            {"resource": {"attributes": [attribute("service.name", service)]}, "scopeSpans": [{"spans": [span]}]}
        ]
    }
    return orjson.dumps(message)


def _flat(service: object, **fields: object) -> bytes:
    return orjson.dumps({**flat_event("x"), "service": service, **fields})


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


# Every kind of bad input of the reliability issue, on both paths where it exists on both: builder of
# the message for a service name, and the start of the reason dead_letters must give.
NOW = datetime.now(UTC)
BAD_SPANS: list[tuple[str, object, str]] = [
    ("100 days old", lambda s: _otlp(s, start_ns=_ns(NOW - timedelta(days=100))), "span start "),
    ("1970", lambda s: _otlp(s, start_ns=_ns(datetime(1970, 1, 2, tzinfo=UTC))), "span start 1970-01-02"),
    ("1 ns", lambda s: _otlp(s, start_ns=1, end_ns=2), "span start 1970-01-01"),
    ("2 days ahead", lambda s: _otlp(s, start_ns=_ns(NOW + timedelta(days=2))), "span start "),
    ("2099", lambda s: _otlp(s, start_ns=_ns(datetime(2099, 1, 1, tzinfo=UTC))), "span start 2099-01-01"),
    ("tokens 2^32", lambda s: _otlp(s, {"gen_ai.usage.input_tokens": 4294967296}), "token count tokens_prompt is"),
    ("tokens 1e300", lambda s: _otlp(s, {"gen_ai.usage.output_tokens": 1e300}), "token count tokens_completion is"),
    ("tokens NaN", lambda s: _otlp(s, {"gen_ai.usage.input_tokens": {"doubleValue": "NaN"}}), "token count"),
    ("tokens as text", lambda s: _otlp(s, {"gen_ai.usage.input_tokens": "many"}), "token count tokens_prompt is"),
    ("negative tokens", lambda s: _otlp(s, {"gen_ai.usage.input_tokens": -5}), "token count tokens_prompt is"),
    ("negative cost", lambda s: _otlp(s, {"gen_ai.usage.cost": -1.0}), "cost is not a number"),
    ("cost Infinity", lambda s: _otlp(s, {"gen_ai.usage.cost": {"doubleValue": "Infinity"}}), "cost is not a number"),
    ("cost 1e9", lambda s: _otlp(s, {"gen_ai.usage.cost": 1e9}), "cost is not a number"),
    (
        "negative latency",
        lambda s: _otlp(s, start_ns=time.time_ns() - 5 * 10**9, end_ns=time.time_ns() - 6 * 10**9),
        "span endTimeUnixNano is before startTimeUnixNano",
    ),  # fmt: skip
    (
        "latency above 2^32 ms",
        lambda s: _otlp(s, start_ns=time.time_ns() - 5 * 10**9, end_ns=time.time_ns() + 4_300_000_000 * 10**6),
        "span lasts longer than 4294967295 ms",
    ),  # fmt: skip
    ("service as number", lambda s: _otlp({"intValue": "42"}), "attribute service.name must be a string, got intValue"),
    (
        "service as array",
        lambda s: _otlp({"arrayValue": {"values": [{"stringValue": s}]}}),
        "attribute service.name must be a string, got arrayValue",
    ),  # fmt: skip
    (
        "model as object",
        lambda s: _otlp(s, {"gen_ai.request.model": {"kvlistValue": {"values": []}}}),
        "attribute gen_ai.request.model must be a string, got kvlistValue",
    ),  # fmt: skip
    (
        "identity in a kvlist",
        lambda s: _otlp(s, {"user": {"kvlistValue": {"values": [otlp_json.attribute("id", "u-1")]}}}),
        "raw user identifiers nested in attrs are not accepted",
    ),
    (
        "identity key in a kvlist",
        lambda s: _otlp(s, {"request": {"kvlistValue": {"values": [otlp_json.attribute("user.email", "a@b.io")]}}}),
        "raw user identifiers nested in attrs are not accepted",
    ),
    ("invalid UTF-8", lambda s: b'{"resourceSpans": "\xff\xfe' + s.encode() + b'"}', "payload is not valid UTF-8"),
    ("not JSON", lambda s: b"{broken " + s.encode(), "payload is not valid JSON"),
    ("JSON without spans", lambda s: orjson.dumps([s]), "no spans in payload"),
]
BAD_EVENTS: list[tuple[str, object, str]] = [
    ("100 days old", lambda s: _flat(s, ts=recent(minutes_ago=100 * 24 * 60)), "ts "),
    ("1970", lambda s: _flat(s, ts="1970-01-01T00:00:00Z"), "ts 1970-01-01"),
    ("epoch ms 0", lambda s: _flat(s, ts=0), "ts 1970-01-01"),
    ("2 days ahead", lambda s: _flat(s, ts=recent(minutes_ago=-2 * 24 * 60)), "ts "),
    ("2099", lambda s: _flat(s, ts="2099-01-01T00:00:00Z"), "ts 2099-01-01"),
    ("3000", lambda s: _flat(s, ts="3000-01-01T00:00:00Z"), "ts "),
    ("1900", lambda s: _flat(s, ts="1900-01-01T00:00:00Z"), "ts "),
    ("0001", lambda s: _flat(s, ts="0001-01-01T00:00:00Z"), "ts "),
    ("tokens 2^32", lambda s: _flat(s, tokens_prompt=4294967296), "tokens_prompt must be a whole number"),
    ("tokens 1e300", lambda s: _flat(s, tokens_completion=1e300), "tokens_completion must be a whole number"),
    ("tokens 2.5", lambda s: _flat(s, tokens_reasoning=2.5), "tokens_reasoning must be a whole number"),
    ("tokens as text", lambda s: _flat(s, tokens_prompt="many"), "tokens_prompt must be a whole number"),
    ("negative tokens", lambda s: _flat(s, tokens_cache_read=-1), "tokens_cache_read must be a whole number"),
    ("negative cost", lambda s: _flat(s, cost_usd=-0.5), "cost_usd must be a finite number >= 0"),
    ("cost 1e300", lambda s: _flat(s, cost_usd=1e300), "cost_usd must be below 100000000"),
    ("cost as text", lambda s: _flat(s, cost_usd="1.0"), "cost_usd must be a finite number >= 0"),
    ("negative latency", lambda s: _flat(s, latency_ms=-5), "latency_ms must be a finite number >= 0"),
    ("latency 1e12", lambda s: _flat(s, latency_ms=1e12), "latency_ms must be at most 4294967295"),
    ("service as number", lambda s: _flat(42), "service must be a string"),
    ("service as array", lambda s: _flat([s, s]), "service must be a string"),
    ("env as object", lambda s: _flat(s, env={"name": "prod"}), "env must be a string"),
    ("attrs as array", lambda s: _flat(s, attrs=["a"]), "attrs must be a JSON object"),
    ("PII key in attrs", lambda s: _flat(s, attrs={"user.id": "u-1"}), "raw user identifiers are not accepted"),
    (
        "PII nested in attrs",
        lambda s: _flat(s, attrs={"request": {"user": {"email": "jane@example.com"}}}),
        "raw user identifiers are not accepted",
    ),  # fmt: skip
    ("PII gen_ai.user", lambda s: _flat(s, attrs={"gen_ai.user": "jane"}), "raw user identifiers are not accepted"),
    (
        "user name nested in attrs",
        lambda s: _flat(s, attrs={"user": {"tier": "gold", "name": "jane"}}),
        "raw user identifiers nested in attrs are not accepted",
    ),
    ("user.name in attrs", lambda s: _flat(s, attrs={"user.name": "jane"}), "raw user identifiers nested in attrs"),
    ("invalid UTF-8", lambda s: b'{"service": "\xff\xfe' + s.encode() + b'"}', "payload is not valid UTF-8"),
    ("not JSON", lambda s: b"{broken " + s.encode(), "payload is not a JSON object"),
    ("JSON array", lambda s: orjson.dumps([s]), "payload is not a JSON object"),
]


def test_every_bad_input_kind_is_one_dead_letter_with_its_reason(stack, ch):
    """Each kind, twice, on its path among good messages: exactly one dead letter per bad message, at its
    offset, with the reason; the good ones stored; no bad one stored."""
    service = f"kinds-{uuid.uuid4().hex[:8]}"
    good_spans = [_otlp(service) for _ in range(5)]
    good_events = [_flat(service) for _ in range(5)]
    results: dict[str, dict[tuple[int, int], tuple[str, str]]] = {}
    expected: dict[str, list[tuple[str, str, tuple[int, int]]]] = {}
    for topic, kinds, good in (
        (stack.kafka.spans_topic, BAD_SPANS, good_spans),
        (stack.kafka.events_topic, BAD_EVENTS, good_events),
    ):
        bad = [(name, reason, make(f"{service}-bad")) for name, make, reason in kinds for _ in range(2)]
        positions = produce(stack.kafka, topic, [*good[:2], *(m for _, _, m in bad), *good[2:]])
        expected[topic] = [(name, reason, pos) for (name, reason, _), pos in zip(bad, positions[2:-3], strict=True)]
    for topic, wanted in expected.items():
        positions = [pos for _, _, pos in wanted]
        results[topic] = wait_for(
            lambda t=topic, p=positions: len(d := _dead_letters(ch, t, p)) == len(p) and d,
            60,
            f"{len(positions)} dead letters from {topic}",
            diagnose=lambda t=topic, p=positions: f"found {sorted(_dead_letters(ch, t, p).values())}",
        )
    wait_for(lambda: stored_count(ch, service) == 10, 60, "the 10 good messages stored")
    wrong = [
        f"{topic} {name}: {results[topic][pos][0]!r} does not start with {reason!r}"
        for topic, wanted in expected.items()
        for name, reason, pos in wanted
        if not results[topic][pos][0].startswith(reason)
    ]
    assert not wrong, "\n".join(wrong)
    # Exactly one dead letter per message (a message of one span is one row), none stored.
    for topic, wanted in expected.items():
        positions = {pos for _, _, pos in wanted}
        rows = ch.query(
            "SELECT partition, offset FROM dead_letters WHERE source_topic = {t:String}", parameters={"t": topic}
        ).result_rows
        letters = sum(1 for row in rows if tuple(row) in positions)
        assert letters == len(wanted), f"{topic}: {letters} dead letters for {len(wanted)} bad messages"
    assert stored_count(ch, f"{service}-bad") == 0, "a bad message was stored"
