"""Rollups (projections of agent_events) equal aggregates recomputed from raw events."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from metrics_platform import rollup_audit
from metrics_platform.rollups import ROLLUPS
from tests.helpers import flat_event, ingest, produce, service_state, span_id, stored_count, wait_for

# A per-minute question as dashboards ask it; the explain proves it reads the projection.
PER_MINUTE = """
SELECT toStartOfMinute(ts) AS ts_min, route, countIf(is_request) AS requests,
       countIf(is_request AND status != 'ok') AS failed, quantilesTDigestIf(0.5, 0.95)(latency_ms, is_request) AS q
FROM agent_events
WHERE toStartOfMinute(ts) >= {start:DateTime} AND service = {s:String}
GROUP BY ts_min, route ORDER BY ts_min, route
"""
EXACT = """
SELECT toStartOfMinute(ts) AS ts_min, route, count(), countIf(status != 'ok'),
       quantileExact(0.5)(latency_ms), quantileExact(0.95)(latency_ms)
FROM agent_events
WHERE toStartOfMinute(ts) >= {start:DateTime} AND service = {s:String} AND is_request
GROUP BY ts_min, route ORDER BY ts_min, route
SETTINGS optimize_use_projections = 0
"""


def test_rollup_matches_raw_when_a_minute_arrives_in_many_blocks(stack, ch):
    service = f"rollup-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    base = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    events = [
        flat_event(
            service,
            ts=(base + timedelta(minutes=i % 3, seconds=rng.randrange(60), milliseconds=rng.randrange(1000)))
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            route=rng.choice(["POST /plan", "POST /code"]),
            latency_ms=int(rng.lognormvariate(6, 1)),
            status="error" if rng.random() < 0.04 else "ok",
            tokens_prompt=rng.randrange(2000),
            tokens_completion=rng.randrange(500),
            cost_usd=round(rng.random() / 100, 8),
        )
        for i in range(3000)
    ]
    # Several produce rounds, each in its own finalizer batch, so every minute reaches the rollup
    # in several parts (the case the original SummingMergeTree got wrong). Merges are paused so
    # the parts can be counted before they are combined.
    ch.command("SYSTEM STOP MERGES agent_events")
    try:
        for start in range(0, len(events), 600):
            produce(stack.kafka, stack.kafka.events_topic, events[start : start + 600])
            time.sleep(1.2)
        wait_for(lambda: stored_count(ch, service) == len(events), 60, "all events", lambda: service_state(ch, service))
        parts = ch.command(
            "SELECT uniqExact(_part) FROM agent_events WHERE service = {s:String}", parameters={"s": service}
        )
    finally:
        ch.command("SYSTEM START MERGES agent_events")
    assert parts > 1, "the test must spread each minute over several parts"

    params = {"s": service, "start": base}
    plan = ch.command(f"EXPLAIN {PER_MINUTE}", parameters=params)
    assert "p_route_minute" in str(plan), plan
    rolled = ch.query(PER_MINUTE, parameters=params).result_rows
    exact = ch.query(EXACT, parameters=params).result_rows
    assert len(rolled) == len(exact) == 3 * 2
    for (ts_min, route, calls, errors, q), raw in zip(rolled, exact, strict=True):
        assert (ts_min, route, calls, errors) == raw[:4], (ts_min, route)
        p50_exact, p95_exact = raw[4], raw[5]
        # t-digest: within a few percent on a few hundred values (0.32 % measured over 30M rows).
        assert abs(q[1] - p95_exact) <= 0.05 * p95_exact, (ts_min, route, q, p95_exact)
        assert abs(q[0] - p50_exact) <= 0.05 * p50_exact + 1, (ts_min, route, q, p50_exact)
    assert sum(r[2] for r in rolled) == len(events)


def test_every_rollup_agrees_with_raw_events(stack, ch):
    """The projections and the registry the audit and dashboards use describe the same rollups."""
    service = f"sized-{uuid.uuid4().hex[:8]}"
    rng = random.Random(11)
    base = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    events = [
        flat_event(
            service,
            ts=(base + timedelta(seconds=rng.randrange(7200))).isoformat().replace("+00:00", "Z"),
            route=rng.choice(["POST /a", "POST /b"]),
            user_id_hash=rng.choice(["a" * 64, "b" * 64, ""]),
            latency_ms=rng.randrange(20, 4000),
            status="error" if rng.random() < 0.1 else "ok",
            cost_usd=round(rng.random() / 50, 8),
        )
        for _ in range(1500)
    ]
    # child spans alone on a route: minutes with spans but no request (empty request quantiles)
    events += [
        flat_event(service, ts=events[i]["ts"], route="POST /children", parent_span_id=span_id(), kind="llm")
        for i in range(0, 1500, 50)
    ]
    ingest(stack.kafka, ch, service, events)
    day = base.replace(hour=0, tzinfo=None)
    for name, rollup in ROLLUPS.items():
        result = rollup_audit.audit(ch, day, day + timedelta(days=2), rollup)  # may cross midnight
        assert result.passed, (name, result.mismatches[:5], result.parts_without_projection)
        assert result.raw_spans >= len(events), name
    per_user = dict(
        ch.query(
            "SELECT user_id_hash, count() FROM agent_events WHERE toDate(ts) >= {d:Date} "
            "AND user_id_hash IN ({a:String}, {b:String}) GROUP BY user_id_hash",
            parameters={"a": "a" * 64, "b": "b" * 64, "d": day.date()},
        ).result_rows
    )
    for user in ("a" * 64, "b" * 64):  # other tests' events may share the empty hash, not these
        assert per_user[user] == sum(1 for e in events if e.get("user_id_hash") == user)


def test_a_part_written_before_a_rollup_existed_is_found_and_repaired(stack, ch):
    """A projection added by a later migration covers new parts only: the audit finds the old
    parts and the repair materializes it for them."""
    service = f"oldpart-{uuid.uuid4().hex[:8]}"
    ingest(stack.kafka, ch, service, [flat_event(service) for _ in range(20)])
    rollup = ROLLUPS["p_user_day"]
    partition = ch.query(
        "SELECT any(_partition_id) FROM agent_events WHERE service = {s:String}", parameters={"s": service}
    ).result_rows[0][0]
    ch.command(
        "ALTER TABLE agent_events CLEAR PROJECTION p_user_day IN PARTITION ID {p:String}",
        parameters={"p": partition},
        settings={"mutations_sync": 2},
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    window = (now - timedelta(hours=1), now + timedelta(hours=1))
    broken = rollup_audit.audit(ch, *window, rollup)
    assert broken.parts_without_projection > 0 and not broken.passed
    assert not broken.mismatches, "ClickHouse answers parts without the projection from raw rows"
    assert rollup_audit.repair(ch, *window, rollup) == broken.parts_without_projection
    assert rollup_audit.audit(ch, *window, rollup).passed


def test_empty_conditional_quantiles_agree():
    """A minute with spans but no request has NaN request quantiles in the rollup and in raw rows."""
    nan = float("nan")
    assert rollup_audit._within(nan, nan)
    assert not rollup_audit._within(nan, 120.0) and not rollup_audit._within(120.0, nan)
    assert rollup_audit._within(104.0, 100.0) and not rollup_audit._within(110.0, 100.0)
