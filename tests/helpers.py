"""Small helpers shared by the stack tests."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from metrics_platform import kafka_clients
from metrics_platform.settings import KafkaSettings


def trace_id() -> str:
    return secrets.token_hex(16)


def span_id() -> str:
    return secrets.token_hex(8)


def wait_for(
    predicate: Callable[[], object],
    timeout_s: float = 60.0,
    what: str = "condition",
    diagnose: Callable[[], str] | None = None,
) -> object:
    """Poll until ``predicate()`` is truthy and return it; fail the test with ``what`` on time-out
    (and what ``diagnose()`` says about the state, if given)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    detail = f"\n{diagnose()}" if diagnose else ""
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last value: {last!r}){detail}")


def ingest_state(ch, trace_id: str) -> str:
    """Where a trace's spans are: the inbox, agent_events, dead letters; and the finalizer's state."""
    inbox, final = ch.query(
        "SELECT (SELECT count() FROM span_inbox WHERE trace_id = {t:String}), "
        "(SELECT count() FROM agent_events WHERE trace_id = {t:String})",
        parameters={"t": trace_id},
    ).result_rows[0]
    dead = ch.query(
        "SELECT error FROM dead_letters WHERE position(payload, {t:String}) > 0 LIMIT 5", parameters={"t": trace_id}
    ).result_rows
    refresh = ch.query("SELECT status, last_success_time, exception FROM system.view_refreshes").result_rows
    return f"trace {trace_id}: {inbox} in span_inbox, {final} in agent_events, dead letters {dead}; finalizer {refresh}"


def service_state(ch, service: str) -> str:
    """Where a service's events are (inbox, agent_events, dead letters) and how the Kafka consumers
    and the finalizer are doing: the text a timed-out wait prints."""
    inbox, final, dead = ch.query(
        "SELECT (SELECT count() FROM span_inbox WHERE service = {s:String}), "
        "(SELECT count() FROM agent_events WHERE service = {s:String}), "
        "(SELECT count() FROM dead_letters WHERE position(payload, {s:String}) > 0)",
        parameters={"s": service},
    ).result_rows[0]
    consumers = ch.query(
        "SELECT table, assignments.partition_id, num_messages_read, last_poll_time, exceptions.text "
        "FROM system.kafka_consumers"
    ).result_rows
    refresh = ch.query("SELECT view, status, last_success_time, exception FROM system.view_refreshes").result_rows
    return (
        f"{service}: {inbox} in span_inbox, {final} in agent_events, {dead} dead letters; "
        f"consumers {consumers}; refreshes {refresh}"
    )


def produce(
    settings: KafkaSettings, topic: str, payloads: Iterable[bytes | dict], key: bytes | None = None
) -> list[tuple[int, int]]:
    """Produce (with ``key``, if given, on every message) and wait for every ack; returns (partition, offset)
    per message, in order."""
    producer = kafka_clients.producer(settings)
    delivered: list[tuple[int, int] | None] = []

    def on_delivery(index: int):
        def callback(err, msg) -> None:
            if err is not None:
                raise AssertionError(f"delivery to {topic} failed: {err}")
            delivered[index] = (msg.partition(), msg.offset())

        return callback

    for index, payload in enumerate(payloads):
        delivered.append(None)
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        producer.produce(topic, body, key=key, on_delivery=on_delivery(index))
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} message(s) to {topic} not delivered"
    assert all(d is not None for d in delivered)
    return [d for d in delivered if d is not None]


def stored_count(ch, service: str) -> int:
    """Rows of ``service`` in agent_events (final: attributed, priced; rollups are in the same parts)."""
    return int(ch.command("SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service}))


def ingest(settings: KafkaSettings, ch, service: str, events: list[dict], expected: int | None = None) -> None:
    """Produce flat events to the events topic and wait until ``service`` has ``expected`` rows
    (default: as many as were sent) in agent_events, after the attribution delay."""
    produce(settings, settings.events_topic, events)
    want = len(events) if expected is None else expected
    wait_for(
        lambda: stored_count(ch, service) == want,
        60,
        f"{want} events of {service}",
        diagnose=lambda: service_state(ch, service),
    )


def recent(minutes_ago: float = 10, offset_hours: int = 0) -> str:
    """An RFC 3339 time a little in the past: fixed dates would fall out of the TTL one day."""
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    zone = timezone(timedelta(hours=offset_hours))
    return moment.astimezone(zone).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def flat_event(service: str, **fields: object) -> dict:
    """A valid flat-contract event for ``service``; keyword arguments override fields."""
    event: dict = {
        "ts": recent(),
        "trace_id": trace_id(),
        "span_id": span_id(),
        "service": service,
        "env": "test",
        "agent": "agent-a",
        "model": "gpt-4.1",
        "provider": "openai",
        "route": "POST /v1/answer",
        "status": "ok",
        "latency_ms": 100,
        "tokens_prompt": 10,
        "tokens_completion": 5,
        "cost_usd": 0.001,
    }
    event.update(fields)
    return event


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free at the time of the call (for a second stack beside the session's)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
