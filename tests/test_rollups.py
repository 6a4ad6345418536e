"""The per-minute rollup equals aggregates recomputed from raw events."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from metrics_platform import rollup_audit
from metrics_platform.rollups import ROLLUPS
from tests.helpers import flat_event, ingest, produce, stored_count, wait_for

RAW_VS_ROLLUP = """
SELECT
    r.ts_min, r.agent, r.model,
    r.calls, raw.calls, r.errors, raw.errors, r.tokens_total, raw.tokens_total,
    r.cost_usd, raw.cost_usd, r.p95_ms, raw.p95_exact, r.p50_ms, raw.p50_exact, r.error_rate
FROM agent_metrics_1m AS r
INNER JOIN
(
    SELECT toStartOfMinute(ts) AS ts_min, agent, model,
           count() AS calls, countIf(status != 'ok') AS errors,
           sum(tokens_prompt) + sum(tokens_completion) AS tokens_total,
           sum(toDecimal128(cost_usd, 6)) AS cost_usd,
           quantileExact(0.95)(latency_ms) AS p95_exact, quantileExact(0.5)(latency_ms) AS p50_exact
    FROM agent_events WHERE service = {s:String}
    GROUP BY ts_min, agent, model
) AS raw USING (ts_min, agent, model)
WHERE r.service = {s:String}
ORDER BY r.ts_min, r.agent, r.model
"""


def test_rollup_matches_raw_when_a_minute_arrives_in_many_blocks(stack, ch):
    service = f"rollup-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    # Three whole minutes, two hours back: fixed dates would fall out of the 90-day TTL one day.
    base = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    events = []
    for i in range(3000):
        minute = i % 3
        events.append(
            flat_event(
                service,
                ts=(base + timedelta(minutes=minute, seconds=rng.randrange(60), milliseconds=rng.randrange(1000)))
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                agent=rng.choice(["planner", "coder"]),
                model=rng.choice(["gpt-4.1", "claude-sonnet-4"]),
                latency_ms=int(rng.lognormvariate(6, 1)),
                status="error" if rng.random() < 0.04 else "ok",
                tokens_prompt=rng.randrange(2000),
                tokens_completion=rng.randrange(500),
                cost_usd=round(rng.random() / 100, 6),
            )
        )
    # Several produce rounds, separated by more than the engine's flush interval, so every minute
    # reaches the rollup in several insert blocks: the case the original SummingMergeTree got wrong.
    # Merges are paused meanwhile so the blocks can be counted before they are combined.
    ch.command("SYSTEM STOP MERGES agent_metrics_1m_state")
    try:
        for start in range(0, len(events), 600):
            produce(stack.kafka, stack.kafka.events_topic, events[start : start + 600])
            time.sleep(1.2)
        wait_for(lambda: stored_count(ch, service) == (len(events), len(events)), 60, "all events, raw and rolled up")
        blocks = ch.query(
            "SELECT count() FROM agent_metrics_1m_state WHERE service = {s:String}", parameters={"s": service}
        ).result_rows[0][0]
    finally:
        ch.command("SYSTEM START MERGES agent_metrics_1m_state")
    groups = 3 * 2 * 2
    assert blocks > groups, "the test must spread each minute over several blocks"
    ch.command("OPTIMIZE TABLE agent_metrics_1m_state FINAL")

    rows = ch.query(RAW_VS_ROLLUP, parameters={"s": service}).result_rows
    assert len(rows) == groups
    for (
        ts_min,
        agent,
        model,
        calls,
        raw_calls,
        errors,
        raw_errors,
        tokens,
        raw_tokens,
        cost,
        raw_cost,
        p95,
        p95_exact,
        p50,
        p50_exact,
        error_rate,
    ) in rows:
        key = (ts_min, agent, model)
        assert (calls, errors, tokens, cost) == (raw_calls, raw_errors, raw_tokens, raw_cost), key
        assert error_rate == raw_errors / raw_calls, key
        # t-digest: within a few percent on a few hundred values (0.32 % measured over 30M rows).
        assert abs(p95 - p95_exact) <= 0.05 * p95_exact, (key, p95, p95_exact)
        assert abs(p50 - p50_exact) <= 0.05 * p50_exact + 1, (key, p50, p50_exact)


def test_every_rollup_agrees_with_raw_events(stack, ch):
    """The materialized views and the registry the audit and repair use describe the same rollups."""
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
            cost_usd=round(rng.random() / 50, 6),
        )
        for _ in range(1500)
    ]
    ingest(stack.kafka, ch, service, events)
    day = base.replace(hour=0, tzinfo=None)
    for name, rollup in ROLLUPS.items():
        result = rollup_audit.audit(ch, day, day + timedelta(days=2), rollup)  # may cross midnight
        assert result.passed, (name, result.mismatches[:5])
        assert result.raw_calls >= len(events), name
    per_route = ch.query(
        "SELECT route, sum(calls) FROM route_metrics_1h_state WHERE service = {s:String} GROUP BY route ORDER BY route",
        parameters={"s": service},
    ).result_rows
    assert sum(calls for _, calls in per_route) == len(events)
    per_user = dict(
        ch.query(
            "SELECT user_id_hash, sum(calls) FROM user_cost_1d_state WHERE user_id_hash IN ('', {a:String}, {b:String})"
            " GROUP BY user_id_hash",
            parameters={"a": "a" * 64, "b": "b" * 64},
        ).result_rows
    )
    for user in ("a" * 64, "b" * 64):  # other tests' events may share the empty hash, not these
        assert per_user[user] == sum(1 for e in events if e["user_id_hash"] == user)
