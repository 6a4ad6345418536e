"""The saved dashboard questions run on the real schema, read the rollup they name, and add up."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from metrics_platform import dashboards
from tests.helpers import flat_event, ingest


def test_every_dashboard_question_runs_reads_its_rollup_and_endpoint_usage_adds_up(stack, ch):
    service = f"dash-{uuid.uuid4().hex[:8]}"
    recent = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    events = [
        flat_event(
            service,
            ts=recent,
            route="POST /v1/dash",
            latency_ms=100 + i,
            tokens_prompt=10,
            cost_usd=0.25,
            user_id_hash="ab" * 32,
        )
        for i in range(40)
    ]
    # one span of every kind, so every question has rows to read
    steps = [
        flat_event(service, ts=recent, route="POST /v1/other", kind=kind, tool="search" if kind == "tool" else "",
                   model="", tokens_prompt=0, tokens_completion=0, cost_usd=0)
        for kind in ("agent", "tool", "http", "internal")
    ]  # fmt: skip
    ingest(stack.kafka, ch, service, events + steps)
    # cost by user reads a table refreshed every 5 minutes: refresh it now
    ch.command("SYSTEM REFRESH VIEW refresh_user_cost_30d")
    ch.command("SYSTEM WAIT VIEW refresh_user_cost_30d")

    answers = {name: dashboards.run(ch, name) for name in dashboards.available()}
    assert set(answers) >= {"errors_by_model_24h", "p95_latency_by_route_7d", "usage_by_endpoint_24h"}
    for name, answer in answers.items():  # each ran without error; an empty answer has no columns
        assert answer.title and not answer.title.startswith("SELECT")
        assert answer.columns or not answer.rows
        # A question that names its rollup reads it (and not raw events) for every subquery.
        rollup = re.search(r"\brollup (p_\w+)", answer.title)
        if rollup:
            plan = str(ch.command(f"EXPLAIN {dashboards.available()[name].read_text()}"))
            reads = re.findall(r"ReadFromMergeTree \((\w+)\)", plan)
            assert reads and set(reads) == {rollup.group(1)}, (name, reads)

    usage = answers["usage_by_endpoint_24h"]
    row = dict(zip(usage.columns, next(r for r in usage.rows if r[0] == service), strict=True))
    # Flat events without a parent are requests; with a model they are LLM calls too.
    assert (row["route"], row["requests"], row["llm_calls"], row["tokens"]) == ("POST /v1/dash", 40, 40, 600)
    assert float(row["cost_usd"]) == 10.0
    assert 130 <= row["p95_ms"] <= 139  # t-digest over 100..139 ms

    # the refreshed per-user table answers what raw events say for the same user and window
    assert answers["cost_by_user_30d"].columns == ("user_id_hash", "requests", "failed_requests", "cost_usd")
    table = ch.query(
        "SELECT sum(requests), sum(failed_requests), sum(cost_usd) FROM user_cost_30d WHERE user_id_hash = {u:String}",
        parameters={"u": "ab" * 32},
    ).result_rows[0]
    raw = ch.query(
        "SELECT countIf(is_request), countIf(is_request AND status != 'ok'), sum(cost_usd) FROM agent_events "
        "WHERE user_id_hash = {u:String} AND toDate(ts) >= today() - 30",
        parameters={"u": "ab" * 32},
    ).result_rows[0]
    assert table == raw and raw[0] >= 40
