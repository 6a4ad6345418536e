"""The saved dashboard questions run on the real schema and answer from the rollups correctly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from metrics_platform import dashboards
from tests.helpers import flat_event, ingest


def test_every_dashboard_question_runs_and_endpoint_usage_adds_up(stack, ch):
    service = f"dash-{uuid.uuid4().hex[:8]}"
    recent = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    events = [
        flat_event(service, ts=recent, route="POST /v1/dash", latency_ms=100 + i, tokens_prompt=10, cost_usd=0.25)
        for i in range(40)
    ]
    ingest(stack.kafka, ch, service, events)

    answers = {name: dashboards.run(ch, name) for name in dashboards.available()}
    assert set(answers) >= {"errors_by_model_24h", "p95_latency_by_route_7d", "usage_by_endpoint_24h"}
    for answer in answers.values():  # each ran without error; an empty answer has no columns
        assert answer.title and not answer.title.startswith("SELECT")
        assert answer.columns or not answer.rows

    usage = answers["usage_by_endpoint_24h"]
    row = dict(zip(usage.columns, next(r for r in usage.rows if r[0] == service), strict=True))
    assert (row["route"], row["calls"], row["tokens_prompt"]) == ("POST /v1/dash", 40, 400)
    assert float(row["cost_usd"]) == 10.0
    assert 130 <= row["p95_ms"] <= 139  # t-digest over 100..139 ms
