"""Small helpers shared by the stack tests."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable

import orjson
import pytest

from metrics_platform import kafka_clients
from metrics_platform.settings import KafkaSettings


def trace_id() -> str:
    return secrets.token_hex(16)


def span_id() -> str:
    return secrets.token_hex(8)


def wait_for(predicate: Callable[[], object], timeout_s: float = 60.0, what: str = "condition") -> object:
    """Poll until ``predicate()`` is truthy and return it; fail the test with ``what`` on time-out."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last value: {last!r})")


def produce(settings: KafkaSettings, topic: str, payloads: Iterable[bytes | dict]) -> list[tuple[int, int]]:
    """Produce and wait for every ack; returns (partition, offset) per message, in order."""
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
        producer.produce(topic, body, on_delivery=on_delivery(index))
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} message(s) to {topic} not delivered"
    assert all(d is not None for d in delivered)
    return [d for d in delivered if d is not None]


def flat_event(service: str, **fields: object) -> dict:
    """A valid flat-contract event for ``service``; keyword arguments override fields."""
    event: dict = {
        "ts": "2026-11-27T10:00:00.000Z",
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
