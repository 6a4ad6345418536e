"""Model drift: daily output length and refusal rate per model, and the drift check, on the real stack."""

from __future__ import annotations

import random
import statistics
import uuid
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from metrics_platform import drift
from metrics_platform.defs import resources
from metrics_platform.defs.drift import daily_model_drift, model_drift_daily, model_drift_within_threshold
from tests.helpers import flat_event, ingest, wait_for

CHECK_OP = "model_drift_daily_model_drift_within_threshold"
# model_drift_daily and cost_by_account_daily have no service column, so each test owns whole days
# (within the 90-day TTL): drift windows are the day and the 7 before it. tests/test_enrichment.py
# uses 45 and 44 days ago; other tests write to the last few days.
DAYS_AGO = {"stable": 20, "spike": 30, "otlp": 60}

# Every encoding of a refusal the two ingest paths produce (see metrics_platform/drift.py).
REFUSALS = [
    {"attrs": {"refusal": True}},
    {"attrs": {"refusal": "true"}},
    {"attrs": {"gen_ai.response.finish_reasons": ["content_filter"]}},
    {"attrs": {"gen_ai": {"response": {"finish_reasons": ["stop", "content_filter"]}}}},
    {"attrs": {"gen_ai.response.finish_reasons": '["content_filter"]'}},
    {"error_type": "ContentFilter", "status": "error", "tokens_completion": 0},
]


def _at(day: date, i: int) -> str:
    return (
        (datetime(day.year, day.month, day.day, 8, tzinfo=UTC) + timedelta(seconds=7 * i))
        .isoformat()
        .replace("+00:00", "Z")
    )


def _calls(
    service: str, model: str, day: date, n: int, rng: random.Random, scale: float = 1.0, refusals: int = 0
) -> list[dict]:
    """``n`` LLM calls of ``model`` on ``day``, the first ``refusals`` of them refusals."""
    events = []
    for i in range(n):
        fields: dict = {
            "ts": _at(day, i),
            "model": model,
            "operation": rng.choice(["chat", ""]),  # seed-style spans carry no operation
            "tokens_completion": max(1, int(rng.lognormvariate(5.3, 0.4) * scale)),
            "attrs": {"gen_ai": {"response": {"finish_reasons": ["stop"]}}},
        }
        if i < refusals:
            fields.update(REFUSALS[i % len(REFUSALS)])
            if "tokens_completion" not in REFUSALS[i % len(REFUSALS)]:
                fields["tokens_completion"] = rng.randint(15, 60)
        events.append(flat_event(service, **fields))
    return events


def _not_llm_calls(service: str, model: str, day: date) -> list[dict]:
    """Spans that must not count: embeddings, a tool step, a root span, a failed call with no operation."""
    return [
        flat_event(service, ts=_at(day, 1), model=model, operation="embeddings", tokens_completion=0),
        flat_event(service, ts=_at(day, 2), model="", operation="execute_tool", tokens_completion=0),
        flat_event(service, ts=_at(day, 3), model="", name="agent_run", tokens_completion=0),
        flat_event(service, ts=_at(day, 4), model=model, tokens_completion=0, status="error", error_type="Timeout"),
    ]


def _materialize(first: date, last: date, check: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [model_drift_daily, model_drift_within_threshold],
        resources=resources.resources(),
        run_config={
            "ops": {
                "model_drift_daily": {"config": {"start": str(first), "end": str(last)}},
                CHECK_OP: {"config": {"day": str(last), **(check or {})}},
            }
        },
    )


def _stored(ch, model: str) -> dict[date, tuple]:
    rows = ch.query(
        "SELECT day, llm_calls, answered_calls, refusals, tokens_completion_p50, tokens_completion_mean "
        "FROM model_drift_daily WHERE model = {m:String} ORDER BY day",
        parameters={"m": model},
    ).result_rows
    assert len(rows) == len({r[0] for r in rows}), "one row per model and day"
    return {r[0]: r[1:] for r in rows}


# --- the comparison, without the stack -------------------------------------------------------


def _day(day: int, calls: int = 100, p50: float = 200, mean: float = 220, refusals: int = 2) -> drift.DayStats:
    return drift.DayStats(
        date(2026, 11, day), "m", calls, calls, refusals, refusals / calls, p50, p50 * 2, mean, int(mean * calls)
    )


def test_compare_flags_length_and_refusal_moves_beyond_thresholds():
    history = [_day(d) for d in range(1, 8)]
    limits = drift.Thresholds()
    assert drift.compare(_day(8, p50=240, mean=260, refusals=3), history, limits).reasons == ()
    longer = drift.compare(_day(8, p50=260), history, limits)
    assert longer.reasons == ("output tokens p50 260 vs 200 (+30%, limit 25%)",)
    shorter = drift.compare(_day(8, mean=110), history, limits)
    assert shorter.reasons == ("output tokens mean 110 vs 220 (-50%, limit 25%)",)
    refusing = drift.compare(_day(8, refusals=5), history, limits)
    assert refusing.reasons == ("refusal rate 5.0% vs 2.0% (+3.0 pp, limit 2 pp)",)
    # not enough data to judge: the day itself, or its baseline
    assert drift.compare(_day(8, calls=49, refusals=20), history, limits).skipped == (
        "49 LLM calls on the day (minimum 50)"
    )
    thin = [_day(d, calls=10) for d in range(1, 6)] + [_day(6), _day(7)]
    assert "2 of the previous 7 days" in (drift.compare(_day(8, p50=900), thin, limits).skipped or "")
    # thin days are left out of the baseline, not averaged in
    noisy = [*history[:5], _day(6, calls=10, p50=5000), _day(7)]
    assert drift.compare(_day(8), noisy, limits).baseline_p50 == 200


# --- on the stack ----------------------------------------------------------------------------


def test_stable_models_pass_and_stats_match_raw_events(stack, ch):
    # Days no other test writes to, so the check sees only these models.
    last = datetime.now(UTC).date() - timedelta(days=DAYS_AGO["stable"])
    days = [last - timedelta(days=k) for k in range(7, -1, -1)]
    service = f"drift-stable-{uuid.uuid4().hex[:8]}"
    model = f"steady-{uuid.uuid4().hex[:6]}"
    rng = random.Random(3)
    events: list[dict] = []
    for day in days:
        events += _calls(service, model, day, 80, rng, refusals=1)
    events += _not_llm_calls(service, model, last)
    ingest(stack.kafka, ch, service, events)

    result = _materialize(days[0], last)
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata["details"].value
    assert evaluation.metadata["models_compared"].value == 1
    assert evaluation.metadata["drifting_models"].value == []
    assert f"| {model} | 80 |" in evaluation.metadata["details"].value

    stored = _stored(ch, model)
    assert sorted(stored) == days
    llm_calls, answered, refusals, p50, mean = stored[last]
    assert (llm_calls, answered, refusals) == (80, 80, 1)  # embeddings, tools, roots, empty failures excluded
    lengths = [e["tokens_completion"] for e in events if e["ts"].startswith(str(last)) and e["model"] == model]
    lengths = [n for n in lengths if n > 0]
    assert mean == pytest.approx(statistics.fmean(lengths))
    assert p50 == pytest.approx(statistics.median(lengths), rel=0.05)  # t-digest

    # Recomputing replaces the days instead of adding to them.
    _materialize(days[0], last)
    assert _stored(ch, model) == stored


def test_a_length_or_refusal_spike_warns_naming_the_models(stack, ch):
    last = datetime.now(UTC).date() - timedelta(days=DAYS_AGO["spike"])
    days = [last - timedelta(days=k) for k in range(7, -1, -1)]
    service = f"drift-spike-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:6]
    longer, refusing, steady, sparse = (f"{name}-{tag}" for name in ("longer", "refusing", "steady", "sparse"))
    rng = random.Random(5)
    events: list[dict] = []
    for day in days:
        spike = day == last
        events += _calls(service, longer, day, 80, rng, scale=2.0 if spike else 1.0, refusals=1)
        events += _calls(service, refusing, day, 80, rng, refusals=12 if spike else 1)
        events += _calls(service, steady, day, 80, rng, refusals=1)
    events += _calls(service, sparse, last, 10, rng, scale=5.0, refusals=5)  # too few calls to judge
    ingest(stack.kafka, ch, service, events)

    result = _materialize(days[0], last)
    assert result.success  # a WARN check does not fail the run
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["day"] == str(last)
    assert sorted(meta["drifting_models"]) == sorted([longer, refusing])
    assert meta["models_compared"] == 3
    assert meta["skipped_models"] == {sparse: "10 LLM calls on the day (minimum 50)"}
    details = meta["details"]
    longer_line = next(line for line in details.splitlines() if line.startswith(f"| {longer} |"))
    assert "output tokens p50" in longer_line and "output tokens mean" in longer_line
    refusing_line = next(line for line in details.splitlines() if line.startswith(f"| {refusing} |"))
    assert "refusal rate 15.0% vs 1.2%" in refusing_line
    # every refusal encoding was recognised
    assert _stored(ch, refusing)[last][2] == 12

    # Looser thresholds pass the same data: the limits are configuration.
    relaxed = _materialize(days[0], last, {"length_threshold": 1.5, "refusal_threshold_pp": 20.0})
    (evaluation,) = relaxed.get_asset_check_evaluations()
    assert evaluation.passed


def test_refusals_sent_through_the_collector_are_recognised(stack, ch):
    """The OTLP path stores finish_reasons as the OTLP array's JSON text; refusals must still count."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    day = datetime.now(UTC).date() - timedelta(days=DAYS_AGO["otlp"])
    service = f"drift-otlp-{uuid.uuid4().hex[:8]}"
    model = f"otlp-model-{uuid.uuid4().hex[:6]}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=f"{stack.collector.otlp_http_endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test_drift")
    start_ns = int(datetime(day.year, day.month, day.day, 9, tzinfo=UTC).timestamp() * 1e9)
    spans = [
        {"gen_ai.response.finish_reasons": ["content_filter"], "gen_ai.usage.output_tokens": 20},
        {"refusal": True, "gen_ai.usage.output_tokens": 30, "gen_ai.response.finish_reasons": ["stop"]},
        {"gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.output_tokens": 300},
        {"gen_ai.response.finish_reasons": ["stop", "length"], "gen_ai.usage.output_tokens": 500},
    ]
    for i, attrs in enumerate(spans):
        span = tracer.start_span(
            f"chat {model}",
            start_time=start_ns + i * 1_000_000_000,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model, **attrs},
        )
        span.end(end_time=start_ns + i * 1_000_000_000 + 500_000_000)
    embedding = tracer.start_span(
        "embeddings", start_time=start_ns, attributes={"gen_ai.operation.name": "embeddings", "model": model}
    )
    embedding.end(end_time=start_ns + 1_000_000)
    provider.force_flush()
    provider.shutdown()
    wait_for(
        lambda: (
            ch.query(
                "SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service}
            ).result_rows[0][0]
            == len(spans) + 1
        ),
        60,
        "the OTLP spans",
    )
    (stats,) = [s for s in drift.refresh_model_drift(ch, [day]) if s.model == model]
    assert (stats.llm_calls, stats.answered_calls, stats.refusals) == (4, 4, 2)
    assert stats.mean == pytest.approx((20 + 30 + 300 + 500) / 4)


def test_the_nightly_schedule_checks_yesterday_with_a_valid_run_config():
    from metrics_platform.defs import drift as drift_defs

    defs = dg.Definitions.merge(drift_defs.defs, dg.Definitions(resources=resources.resources()))
    job = defs.resolve_job_def("model_drift")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 27, 1, 15, tzinfo=UTC))
    request = daily_model_drift(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config["ops"]["model_drift_daily"]["config"] == {"end": "2026-11-26", "days": 8}
    assert request.run_config["ops"][CHECK_OP]["config"] == {"day": "2026-11-26"}
    assert dg.validate_run_config(job, request.run_config)
