"""Retention checks against the live tables, and the run-failure alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg

from metrics_platform import retention
from metrics_platform.defs.kafka import kafka_topic_retention, kafka_topics
from metrics_platform.defs.retention import nothing_past_retention, table_storage, ttl_matches_configuration
from metrics_platform.defs.run_failures import run_failure_alert
from tests.helpers import flat_event, produce, wait_for


def test_ttl_parsing_of_engine_full():
    engine = (
        "MergeTree PARTITION BY toDate(ts) ORDER BY (service, ts) TTL toDateTime(ts) + toIntervalDay(90) SETTINGS x"
    )
    assert retention.ttl_days(engine) == 90
    assert retention.ttl_days("MergeTree ORDER BY ts TTL ts + INTERVAL 7 DAY DELETE") == 7
    assert retention.ttl_days("MergeTree ORDER BY ts") is None


def test_expired_events_do_not_survive_and_checks_pass(stack, ch, dagster_resources):
    service = f"ttl-{uuid.uuid4().hex[:8]}"
    old = (datetime.now(UTC) - timedelta(days=stack.retention_days + 5)).isoformat().replace("+00:00", "Z")
    fresh = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    produce(stack.kafka, stack.kafka.events_topic, [flat_event(service, ts=old), flat_event(service, ts=fresh)])
    wait_for(
        lambda: (
            ch.query(
                "SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service}
            ).result_rows[0][0]
            == 1
        ),
        60,
        "the fresh event (the expired one is dropped by TTL)",
    )
    result = dg.materialize(
        [table_storage, ttl_matches_configuration, nothing_past_retention, kafka_topics, kafka_topic_retention],
        resources=dagster_resources,
    )
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"ttl_matches_configuration", "nothing_past_retention", "kafka_topic_retention"}
    assert all(e.passed for e in evaluations.values()), {n: e.metadata for n, e in evaluations.items()}
    storage = result.asset_materializations_for_node("table_storage")[0].metadata
    assert storage["agent_events.rows"].value >= 1 and storage["agent_events.bytes"].value > 0
    topics = result.asset_materializations_for_node("kafka_topics")[0].metadata
    assert topics[f"{stack.kafka.events_topic}.retention_hours"].value == stack.kafka.retention_hours


def test_a_shorter_ttl_than_configured_fails_the_check(stack, ch, dagster_resources, monkeypatch):
    monkeypatch.setenv("METRICS_PLATFORM_RETENTION_DAYS", "30")
    result = dg.materialize([table_storage, ttl_matches_configuration], resources=dagster_resources)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert set(evaluation.metadata["tables_with_other_ttl"].value) == set(retention.RETAINED_TABLES)


def test_a_failed_run_sends_an_alert(dagster_resources, alert_receiver):
    @dg.op
    def explode() -> None:
        raise RuntimeError("disk full on purpose")

    @dg.job
    def doomed() -> None:
        explode()

    instance = dg.DagsterInstance.ephemeral()
    result = doomed.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources=dagster_resources,
    ).for_run_failure()
    run_failure_alert(context)
    (message,) = alert_receiver.about(f"run:{result.run_id}")
    assert message["title"] == "Dagster run failed: doomed"
