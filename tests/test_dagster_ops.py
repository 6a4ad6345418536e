"""Operating the platform from Dagster, against the real stack: replays, audits (alert sensors: test_alerts.py)."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import orjson

from metrics_platform.defs.replay import historical_replay
from metrics_platform.defs.rollups import ROLLUP_ASSETS, ROLLUP_CHECKS
from tests.helpers import flat_event, ingest, stored_count, wait_for


def _rolled_up(ch, service: str) -> int:
    """Spans of ``service`` as the per-minute rollup counts them (the projection, forced)."""
    return int(
        ch.command(
            "SELECT count() FROM agent_events WHERE service = {s:String} GROUP BY service",
            parameters={"s": service},
            settings={"force_optimize_projection_name": "p_route_minute"},
        )
        or 0
    )


def test_definitions_load():
    from metrics_platform.definitions import defs

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {"alert_rules_sensor", "run_failure_alert", "pipeline_health_sensor", "empty_messages_sensor"} <= {
        s.name for s in repo.sensor_defs
    }
    # The streamed tables are observed assets with a check, and every alert rule has one.
    keys = {check.name for check in defs.resolve_asset_graph().asset_check_keys}
    assert {"up_to_date", "rules_file_valid", "alert_request_errors", "alert_consumer_lag"} <= keys
    assert repo.has_job("repair_rollup") and repo.has_job("rollup_audit")


def _write_history(directory, day: date, service: str):
    base = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
    events = [
        flat_event(service, ts=(base + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"), latency_ms=50 + i)
        for i in range(250)
    ]
    gz_lines = [orjson.dumps(e) for e in events[:200]]
    gz_lines.insert(10, b"{not json")
    gz_lines.insert(20, orjson.dumps({**events[0], "span_id": "abcd"}))
    gz_lines.append(orjson.dumps(flat_event(service, ts="2020-01-01T00:00:00Z")))
    gz_lines.append(orjson.dumps(events[5]))  # the same span twice
    with gzip.open(directory / f"{day}.jsonl.gz", "wb") as out:
        out.write(b"\n".join(gz_lines) + b"\n")
    (directory / f"{day}.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in events[200:]) + b"\n\n")
    return events


def test_replay_lands_valid_events_once_and_keeps_rejects(stack, ch, dagster_resources, tmp_path):
    service = f"replay-{uuid.uuid4().hex[:8]}"
    day = date.today() - timedelta(days=3)
    events = _write_history(tmp_path, day, service)
    # Part of the day was already ingested (e.g. live, before an outage).
    ingest(stack.kafka, ch, service, events[:100])

    run_config = {"ops": {"historical_replay": {"config": {"history_dir": str(tmp_path)}}}}
    result = dg.materialize(
        [historical_replay], resources=dagster_resources, partition_key=str(day), run_config=run_config
    )
    assert result.success
    meta = result.asset_materializations_for_node("historical_replay")[0].metadata
    assert {k: meta[k].value for k in ("lines", "valid", "rejected", "already_stored", "produced")} == {
        "lines": 254,
        "valid": 250,
        "rejected": 4,
        "already_stored": 100,
        "produced": 150,
    }
    assert "appears twice" in meta["reject_samples"].value
    wait_for(lambda: stored_count(ch, service) == 250, 60, "all 250 valid events")

    rejects = ch.query(
        "SELECT source_topic, offset, error FROM dead_letters WHERE source_topic = {t:String} ORDER BY offset",
        parameters={"t": f"replay:{day}.jsonl.gz"},
    ).result_rows
    assert [line for _, line, _ in rejects][-4:] == [11, 21, 203, 204]
    errors = [error for _, _, error in rejects][-4:]
    assert errors[0].startswith("not JSON") and errors[1].startswith("span_id")
    assert "is outside the accepted window" in errors[2]  # older than the retention
    assert errors[3] == f"span {events[5]['span_id']} of trace {events[5]['trace_id']} appears twice in the history"

    totals_before = (stored_count(ch, service), _rolled_up(ch, service))
    again = dg.materialize(
        [historical_replay], resources=dagster_resources, partition_key=str(day), run_config=run_config
    )
    meta = again.asset_materializations_for_node("historical_replay")[0].metadata
    assert (meta["produced"].value, meta["already_stored"].value) == (0, 250)
    totals_after = (stored_count(ch, service), _rolled_up(ch, service))
    assert totals_before == totals_after == (250, 250)
    kept = ch.query(
        "SELECT count() FROM dead_letters WHERE source_topic = {t:String}", parameters={"t": f"replay:{day}.jsonl.gz"}
    ).result_rows[0][0]
    assert kept == 4, "a re-run must not store the same rejects again"
    audit_rows = ch.query(
        "SELECT produced FROM replay_audit WHERE day = {d:Date} ORDER BY finished_at", parameters={"d": day}
    ).result_rows
    assert [r[0] for r in audit_rows][-2:] == [150, 0]


def test_rollup_audit_fails_on_a_part_without_the_rollup_and_passes_after_repair(stack, ch, dagster_resources):
    service = f"audit-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0, tzinfo=None) - timedelta(days=2)
    events = [
        flat_event(
            service,
            ts=(start + timedelta(seconds=7 * i)).isoformat() + "Z",
            latency_ms=10 + i % 300,
            status="error" if i % 17 == 0 else "ok",
        )
        for i in range(400)
    ]
    ingest(stack.kafka, ch, service, events)
    window = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    asset = next(a for a in ROLLUP_ASSETS if a.key.path == ["p_route_minute"])
    check = next(c for c in ROLLUP_CHECKS if asset.key in {k.asset_key for k in c.check_keys})
    check_config = {"ops": {"p_route_minute_rollup_matches_raw": {"config": window}}}

    def run_check() -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            [asset, check],
            resources=dagster_resources,
            selection=dg.AssetSelection.checks(check),
            run_config=check_config,
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    first = run_check()
    assert first.passed, first.metadata
    assert first.metadata["raw_spans"].value >= 400

    # As if the projection had been added after these parts were written.
    for (partition,) in ch.query(
        "SELECT DISTINCT _partition_id FROM agent_events WHERE service = {s:String}", parameters={"s": service}
    ).result_rows:
        ch.command(
            "ALTER TABLE agent_events CLEAR PROJECTION p_route_minute IN PARTITION ID {p:String}",
            parameters={"p": partition},
            settings={"mutations_sync": 2},
        )
    broken = run_check()
    assert not broken.passed
    assert broken.metadata["parts_without_projection"].value >= 1

    repair_config = {"ops": {"p_route_minute": {"config": window}, **check_config["ops"]}}
    repaired = dg.materialize([asset, check], resources=dagster_resources, run_config=repair_config)
    assert repaired.success
    (evaluation,) = repaired.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata
    assert _rolled_up(ch, service) == 400
