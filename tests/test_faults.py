"""kill -9 of ClickHouse or of the Kafka broker under load: after the supervisor restarts it (no
operator), every span the Collector acknowledged is in agent_events exactly once, and every rollup
counts it exactly once (bench/faults.py is the larger version of these tests)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from metrics_platform import clickhouse, kafka_clients
from metrics_platform.rollup_audit import audit
from metrics_platform.rollups import ROLLUPS
from metrics_platform.settings import Settings
from metrics_platform.stack import clickhouse_embedded, kafka_broker
from metrics_platform.stack.process import Daemon
from tests.helpers import wait_for
from tests.test_collector_crash import Sender


def _kafka_answers(settings: Settings) -> bool:
    try:
        return bool(kafka_clients.admin(settings.kafka).list_topics(timeout=2).brokers)
    except Exception:  # confluent-kafka raises KafkaException while the broker starts
        return False


def _counts(settings: Settings, service: str) -> tuple[int, int] | None:
    """(rows, distinct span ids) of ``service`` in agent_events; None while ClickHouse does not answer."""
    try:
        client = clickhouse.client(settings.clickhouse)
    except Exception:  # restarting
        return None
    try:
        rows, unique = client.query(
            "SELECT count(), uniqExact(span_id) FROM agent_events WHERE service = {s:String}",
            parameters={"s": service},
        ).result_rows[0]
        return int(rows), int(unique)
    except Exception:
        return None
    finally:
        client.close()


def _kill_under_load(settings: Settings, daemon: Daemon, healthy: Callable[[Settings], bool], service: str) -> set[str]:
    """Load through the Collector, SIGKILL the component mid-stream, wait for its supervisor to bring it
    back, a little more load; the span ids acknowledged with HTTP 200."""
    senders = [Sender(settings.collector.otlp_http_port, service, max_requests=300) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        # Mid-stream: spans acknowledged and some already stored, so the kill falls between blocks.
        wait_for(lambda: sum(len(s.acknowledged) for s in senders) >= 2_500, 60, "load on the Collector")
        wait_for(lambda: (c := _counts(settings, service)) and c[0] > 0, 60, "the first spans stored")
        pid = daemon.pid()
        assert pid is not None, f"{daemon.name} is not running"
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: daemon.pid() not in (None, pid) and healthy(settings),
            120,
            f"{daemon.name} restarted by its supervisor",
            diagnose=daemon.log_tail,
        )
        time.sleep(2.0)  # load on the restarted component as well
    finally:
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.join(30)
    return {span_id for s in senders for span_id in s.acknowledged}


def _assert_exactly_once(ch, settings: Settings, service: str, acknowledged: set[str], began: datetime) -> None:
    wait_for(
        lambda: (c := _counts(settings, service)) and c[1] >= len(acknowledged),
        180,
        f"{len(acknowledged):,} acknowledged spans final after the restart",
    )
    time.sleep(5)  # a block delivered again after the restart is finalized (or skipped) by now
    stored = {
        r[0]
        for r in ch.query(
            "SELECT DISTINCT span_id FROM agent_events WHERE service = {s:String}", parameters={"s": service}
        ).result_rows
    }
    lost = acknowledged - stored
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged spans lost"
    rows, unique = _counts(settings, service) or (0, 0)
    assert rows == unique, f"{rows - unique} spans stored twice in agent_events"
    end = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
    start = began.replace(hour=0, minute=0, second=0, microsecond=0)
    for rollup in ROLLUPS.values():
        if "service" not in rollup.keys:
            continue  # the per-user rollup: covered by the audit below
        # All of the projection's keys, so that ClickHouse cannot answer from a smaller projection.
        spans = ch.query(
            rollup.query("service = {s:String}"),
            parameters={"s": service, "start": start, "end": end},
            settings={"force_optimize_projection_name": rollup.name},
        ).result_rows
        counted = sum(int(row[len(rollup.group_columns)]) for row in spans)  # the first sum is spans = count()
        assert counted == unique, f"{rollup.name} counts {counted - unique:+} spans against raw"
    window_start = began.replace(minute=0, second=0, microsecond=0) - timedelta(minutes=5)
    for rollup in ROLLUPS.values():
        # Whole buckets of the rollup around the fault (a day for the daily ones).
        first = window_start.replace(hour=0) if rollup.bucket_column == "day" else window_start
        result = audit(ch, first, end, rollup)
        assert not result.mismatches, f"{rollup.name} disagrees with raw: {result.mismatches[:5]}"


@pytest.mark.parametrize(
    ("component", "daemon", "healthy"),
    [
        ("clickhouse", clickhouse_embedded.daemon, clickhouse_embedded.healthy),
        ("kafka", kafka_broker.daemon, _kafka_answers),
    ],
)
def test_kill_9_under_load_loses_and_duplicates_nothing_in_raw_and_rollups(stack, ch, component, daemon, healthy):
    service = f"kill-{component}-{uuid.uuid4().hex[:8]}"
    began = datetime.now(UTC).replace(tzinfo=None)
    restarts = daemon(stack).restarts()
    acknowledged = _kill_under_load(stack, daemon(stack), healthy, service)
    assert len(acknowledged) >= 2_500
    assert daemon(stack).restarts() == restarts + 1, "the supervisor did not count the restart"
    # A fresh client: the fixture's may have been cut off by the ClickHouse kill.
    client = clickhouse.client(stack.clickhouse)
    try:
        _assert_exactly_once(client, stack, service, acknowledged, began)
    finally:
        client.close()
