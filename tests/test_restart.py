"""Stopping and restarting ClickHouse while Kafka holds messages loses none and duplicates none."""

from __future__ import annotations

import threading
import time
import uuid

from metrics_platform.stack import clickhouse_embedded
from tests.helpers import flat_event, produce, wait_for


def test_clickhouse_restart_while_messages_arrive_loses_and_duplicates_nothing(stack, ch):
    service = f"restart-{uuid.uuid4().hex[:8]}"
    events = [flat_event(service) for _ in range(6000)]
    produced: list[int] = []

    def keep_producing() -> None:
        # Spread over ~6 s so messages arrive before, during and after the restart.
        for start in range(0, len(events), 500):
            produced.extend(p for p, _ in produce(stack.kafka, stack.kafka.events_topic, events[start : start + 500]))
            time.sleep(0.5)

    producer = threading.Thread(target=keep_producing)
    producer.start()
    time.sleep(1.5)
    assert clickhouse_embedded.stop(stack), "the embedded server was not running"
    time.sleep(2)
    clickhouse_embedded.start(stack)
    producer.join(timeout=120)
    assert len(produced) == len(events)

    def counts():
        total, unique = ch.query(
            "SELECT count(), uniqExact(span_id) FROM agent_events WHERE service = {s:String}",
            parameters={"s": service},
        ).result_rows[0]
        return (total, unique) if total >= len(events) else None

    total, unique = wait_for(counts, 90, f"{len(events)} events after the restart")
    time.sleep(3)  # anything re-delivered after the restart would show up now
    total, unique = ch.query(
        "SELECT count(), uniqExact(span_id) FROM agent_events WHERE service = {s:String}", parameters={"s": service}
    ).result_rows[0]
    assert unique == len(events), "events were lost"
    assert total == len(events), f"{total - len(events)} events were stored twice"
    rollup_calls = ch.command(
        "SELECT count() FROM agent_events WHERE service = {s:String} GROUP BY service",
        parameters={"s": service},
        settings={"force_optimize_projection_name": "p_route_minute"},
    )
    assert rollup_calls == len(events)
