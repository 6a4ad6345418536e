"""Kafka messages that yield no row (zero bytes, no spans) end in dead_letters at their offset, once.

The decisions are unit-tested without a stack; the sensor runs against the real one.
"""

from __future__ import annotations

import time
import uuid

import dagster as dg
import orjson

from metrics_platform import empty_messages, kafka_clients, kafka_lag
from metrics_platform.defs.health import build_empty_messages_sensor
from metrics_platform.empty_messages import Cursor, missing_offsets, next_cursor, ranges_to_check
from tests import otlp_json
from tests.helpers import flat_event, produce, trace_id, wait_for

DAY = 24 * 3600
S0, S1, E0 = ("spans", 0), ("spans", 1), ("events", 0)


# --- decisions (no stack) --------------------------------------------------------------------------


def test_ranges_run_from_the_cursor_to_the_committed_offset():
    cursor = Cursor(at=1000.0, next_offsets={S0: 10, S1: 7, E0: 3})
    ranges = ranges_to_check({S0: 15, S1: 7, E0: 4}, cursor, {}, now=1060.0, verifiable_s=DAY)
    # a partition that did not move gets no range
    assert ranges == {S0: range(10, 15), E0: range(3, 4)}


def test_gaps_are_the_offsets_no_row_carries():
    assert missing_offsets(range(10, 20), [10, 11, 11, 13, 14, 15, 17, 19, 25]) == [12, 16, 18]
    assert missing_offsets(range(3, 6), [3, 4, 5]) == []
    assert missing_offsets(range(0, 3), []) == [0, 1, 2]


def test_a_first_check_starts_at_the_oldest_offset_still_held():
    ranges = ranges_to_check({S0: 50, S1: 20, E0: -1}, None, {S0: 30}, now=1000.0, verifiable_s=DAY)
    # S1: nothing of it left in the inbox, so nothing below its committed offset can be verified;
    # E0: the group never committed there.
    assert ranges == {S0: range(30, 50)}
    assert next_cursor({S0: 50, S1: 20, E0: -1}, ranges, 1000.0).next_offsets == {S0: 50, S1: 20}


def test_a_cursor_older_than_the_inbox_retention_is_not_trusted():
    stale = Cursor(at=0.0, next_offsets={S0: 5})
    assert ranges_to_check({S0: 100}, stale, {S0: 90}, now=DAY + 1.0, verifiable_s=DAY) == {S0: range(90, 100)}
    assert ranges_to_check({S0: 100}, stale, {}, now=DAY + 1.0, verifiable_s=DAY) == {}


def test_offsets_that_went_back_restart_from_what_is_held():
    # the topic was recreated: the committed offset is below the cursor
    cursor = Cursor(at=1000.0, next_offsets={S0: 500})
    assert ranges_to_check({S0: 8}, cursor, {S0: 2}, now=1001.0, verifiable_s=DAY) == {S0: range(2, 8)}


def test_a_long_range_is_examined_over_several_checks():
    cursor = Cursor(at=1000.0, next_offsets={S0: 0})
    ranges = ranges_to_check({S0: 250}, cursor, {}, now=1001.0, verifiable_s=DAY, max_offsets=100)
    assert ranges == {S0: range(0, 100)}
    assert next_cursor({S0: 250}, ranges, 1001.0).next_offsets == {S0: 100}


def test_cursor_round_trips_and_unreadable_ones_count_as_none():
    cursor = Cursor(at=12.5, next_offsets={("agent|spans", 2): 40, E0: 0})
    assert Cursor.decode(cursor.encode()) == cursor
    assert Cursor.decode(None) is None and Cursor.decode("") is None and Cursor.decode("{not json") is None
    assert Cursor.decode('{"at": 1, "next": {"no-partition": 3}}') is None


# --- against the real stack ------------------------------------------------------------------------


def _lag_zero(settings) -> bool:
    groups = kafka_lag.clickhouse_groups(settings.kafka)
    return all(kafka_lag.total_lag(settings.kafka, g, t) == 0 for g, t in groups.items())


def _request(service: str) -> dict:
    return otlp_json.request({"service.name": service}, [otlp_json.span(trace_id(), "ok", {}) for _ in range(2)])


def _letters(ch, topic: str) -> dict[tuple[int, int], list[str]]:
    found: dict[tuple[int, int], list[str]] = {}
    for partition, offset, error, payload in ch.query(
        "SELECT partition, offset, error, payload FROM dead_letters WHERE source_topic = {t:String}",
        parameters={"t": topic},
    ).result_rows:
        found.setdefault((partition, offset), []).append(error)
        if error == empty_messages.REASON:
            assert payload == ""
    return found


def test_empty_messages_get_one_dead_letter_each_at_their_offset(stack, ch, dagster_resources):
    service = f"empty-{uuid.uuid4().hex[:8]}"
    sensor = build_empty_messages_sensor()

    def evaluate(cursor: str | None) -> dg.SensorResult:
        return sensor(dg.build_sensor_context(cursor=cursor, resources=dagster_resources))

    spans, events = stack.kafka.spans_topic, stack.kafka.events_topic
    # A good message then an empty one on every partition of the events topic, so each partition has a
    # committed offset, and the first tick (no cursor) has empty messages of its own to find.
    producer = kafka_clients.producer(stack.kafka)
    early: list[tuple[int, int]] = []

    def delivered(err, msg) -> None:
        assert err is None, err
        if not msg.value():
            early.append((msg.partition(), msg.offset()))

    for partition in range(stack.kafka.partitions):
        producer.produce(spans, orjson.dumps(_request(service)), partition=partition)
        producer.produce(events, orjson.dumps(flat_event(service)), partition=partition, on_delivery=delivered)
        producer.produce(events, b"", partition=partition, on_delivery=delivered)
    assert producer.flush(30) == 0 and len(early) == stack.kafka.partitions
    wait_for(lambda: _lag_zero(stack), 60, "consumer groups at lag 0 before the test")
    first = evaluate(None)  # no cursor: from the oldest offset still held
    assert first.asset_events[0].metadata["empty_messages_recorded"].value >= len(early)
    first_letters = _letters(ch, events)
    assert all(first_letters.get(position) == [empty_messages.REASON] for position in early), first_letters
    good_spans = [_request(service) for _ in range(3)]
    empty_request = {"resourceSpans": []}  # an ExportTraceServiceRequest without spans
    span_positions = produce(
        stack.kafka, spans, [good_spans[0], b"", good_spans[1], empty_request, b"", b"", good_spans[2]]
    )
    event_positions = produce(stack.kafka, events, [flat_event(service), b"", flat_event(service), b""])
    wait_for(lambda: _lag_zero(stack), 60, "both consumer groups at lag 0")

    began = time.monotonic()
    second = evaluate(first.cursor)
    took = time.monotonic() - began
    observation = second.asset_events[0]
    recorded = observation.metadata["empty_messages_recorded"].value
    # the five zero-byte messages: nothing else was produced since the first tick
    assert recorded == 5, second.skip_reason

    span_letters, event_letters = _letters(ch, spans), _letters(ch, events)
    for position in [span_positions[i] for i in (1, 4, 5)]:
        assert span_letters.get(position) == [empty_messages.REASON], position
    for position in [event_positions[i] for i in (1, 3)]:
        assert event_letters.get(position) == [empty_messages.REASON], position
    # The empty request is a message ClickHouse maps (to "no spans"): exactly one dead letter, at its offset.
    no_spans = span_letters.get(span_positions[3], [])
    assert len(no_spans) == 1 and ("no spans" in no_spans[0] or no_spans[0] == empty_messages.REASON), no_spans
    for position in [span_positions[i] for i in (0, 2, 6)]:
        assert position not in span_letters, f"a good message got a dead letter: {span_letters[position]}"
    for position in [event_positions[i] for i in (0, 2)]:
        assert position not in event_letters
    assert second.skip_reason is not None
    assert second.skip_reason.skip_message.startswith("5 empty Kafka messages recorded in dead_letters")

    # Nothing more from the next tick, nor from running the same range again (a cursor that was lost).
    total = int(ch.command("SELECT count() FROM dead_letters WHERE error = {r:String}",
                           parameters={"r": empty_messages.REASON}))  # fmt: skip
    third = evaluate(second.cursor)
    again = evaluate(first.cursor)
    for result in (third, again):
        assert result.asset_events[0].metadata["empty_messages_recorded"].value == 0, result.skip_reason
    after = int(ch.command("SELECT count() FROM dead_letters WHERE error = {r:String}",
                           parameters={"r": empty_messages.REASON}))  # fmt: skip
    assert after == total
    print(f"sensor tick with {recorded} empty messages: {took:.2f} s")


def test_the_sensor_is_in_the_code_location():
    from metrics_platform.definitions import defs

    assert "empty_messages_sensor" in {s.name for s in defs.get_repository_def().sensor_defs}
