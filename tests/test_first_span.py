"""The first span sent the moment `up` returns is queryable (in span_inbox) within seconds.

A stack that just started has to join ClickHouse's Kafka consumer groups before anything is read;
`up` returns only once the consumers have their partitions. This test starts a stack of its own from
nothing (the session's stack has long been warm) on ports 500 above the session's, and sends one span
right after `up`. The bound is loose enough for a loaded CI machine; bench/compare_peer.py --first-span
measures the delay itself.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from unittest import mock

import pytest

from metrics_platform import clickhouse
from metrics_platform.settings import Settings
from metrics_platform.stack import platform
from tests import otlp_json
from tests.collector_helpers import post_otlp
from tests.conftest import ROOT, TEST_ENV
from tests.helpers import trace_id

# Fresh start to queryable on a quiet 2-core machine is about a second; five leave room for CI load.
QUERYABLE_WITHIN_S = 5.0
PORT_SHIFT = 500


def test_unassigned_kafka_tables_are_those_read_by_views_without_partitions() -> None:
    """Tables without views are not waited for; one consumer with partitions is enough for its table."""
    views_read = ["kafka_otel_spans", "kafka_agent_events"]
    assigned = [("kafka_otel_spans", 0), ("kafka_otel_spans", 3), ("kafka_agent_events", 0), ("kafka_old", 0)]
    assert platform.unassigned_kafka_tables(views_read, assigned) == ["kafka_agent_events"]
    assert platform.unassigned_kafka_tables(views_read, []) == ["kafka_agent_events", "kafka_otel_spans"]
    assert platform.unassigned_kafka_tables(views_read, [("kafka_otel_spans", 1), ("kafka_agent_events", 2)]) == []


@pytest.fixture()
def fresh_stack() -> Iterator[Settings]:
    """A stack started from an empty state directory on its own ports; stopped afterwards."""
    env = {name: str(int(value) + PORT_SHIFT) for name, value in TEST_ENV.items() if name.endswith("_PORT")}
    env["METRICS_PLATFORM_STATE_DIR"] = str(
        ROOT / ".state" / f"{os.path.basename(TEST_ENV['METRICS_PLATFORM_STATE_DIR'])}-first-span"
    )
    # Daemons started by `up` (and supervisord) read their settings from this process's environment.
    with mock.patch.dict(os.environ, env):
        platform.down(Settings.from_env(), report=lambda _: None)  # leftovers of an interrupted run
        shutil.rmtree(env["METRICS_PLATFORM_STATE_DIR"], ignore_errors=True)
        # Read after the wipe: the settings hold the passwords generated into the new state directory.
        settings = Settings.from_env()
        try:
            platform.up(settings, report=lambda _: None, with_dagster=False)
            yield settings
        finally:
            platform.down(settings, report=lambda _: None)


def test_first_span_after_up_is_queryable_within_seconds(fresh_stack: Settings) -> None:
    trace = trace_id()
    body = otlp_json.request(
        {"service.name": "first-span"}, [otlp_json.span(trace, "GET /", {}, kind=otlp_json.SERVER)]
    )
    ch = clickhouse.client(fresh_stack.clickhouse)
    try:
        sent = time.monotonic()
        status, answer = post_otlp(fresh_stack, body)
        assert status == 200, answer
        while not ch.query(
            "SELECT count() FROM span_inbox WHERE trace_id = {t:String}", parameters={"t": trace}
        ).result_rows[0][0]:
            waited = time.monotonic() - sent
            lag = ch.query(
                "SELECT table, assignments.partition_id, assignments.current_offset FROM system.kafka_consumers"
            ).result_rows
            assert waited < QUERYABLE_WITHIN_S, (
                f"the first span is not in span_inbox {waited:.1f} s after up; consumers: {lag}"
            )
            time.sleep(0.05)
    finally:
        ch.close()
