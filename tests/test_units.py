"""Pure units: settings parsing and the flat event contract (no stack needed)."""

from __future__ import annotations

import pytest

from metrics_platform import contract
from metrics_platform.settings import Settings
from tests.helpers import flat_event


def test_clickhouse_url_selects_an_external_server(monkeypatch):
    monkeypatch.setenv("CLICKHOUSE_URL", "https://reader:s3cret@ch.internal:8443/metrics")
    ch = Settings.from_env().clickhouse
    assert (ch.host, ch.http_port, ch.user, ch.password, ch.database, ch.secure, ch.embedded) == (
        "ch.internal",
        8443,
        "reader",
        "s3cret",
        "metrics",
        True,
        False,
    )
    assert "s3cret" not in repr(ch)


def test_bad_clickhouse_url_and_port_are_reported(monkeypatch):
    monkeypatch.setenv("CLICKHOUSE_URL", "ch.internal:8123")
    with pytest.raises(ValueError, match="CLICKHOUSE_URL"):
        Settings.from_env()
    monkeypatch.delenv("CLICKHOUSE_URL")
    monkeypatch.setenv("METRICS_PLATFORM_OTLP_HTTP_PORT", "http")
    with pytest.raises(ValueError, match="METRICS_PLATFORM_OTLP_HTTP_PORT"):
        Settings.from_env()


def test_more_consumers_than_partitions_is_refused(monkeypatch):
    monkeypatch.setenv("METRICS_PLATFORM_KAFKA_PARTITIONS", "3")
    monkeypatch.setenv("METRICS_PLATFORM_KAFKA_NUM_CONSUMERS", "4")
    with pytest.raises(ValueError, match="exceeds"):
        Settings.from_env()


def test_external_kafka_and_client_properties(monkeypatch):
    monkeypatch.setenv("METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("METRICS_PLATFORM_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("METRICS_PLATFORM_KAFKA_PROP_SASL_MECHANISM", "SCRAM-SHA-512")
    kafka = Settings.from_env().kafka
    assert not kafka.embedded
    assert kafka.clickhouse_brokers == "k1:9093,k2:9093"
    assert kafka.client_properties == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"}


def test_generated_pii_salt_is_stable_and_private(monkeypatch, tmp_path):
    monkeypatch.delenv("METRICS_PLATFORM_PII_SALT")
    monkeypatch.setenv("METRICS_PLATFORM_STATE_DIR", str(tmp_path))
    settings = Settings.from_env()
    salt = settings.pii_salt()
    assert len(salt) == 64 and salt == settings.pii_salt()
    assert (tmp_path / "secrets" / "pii_salt").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, None),
        ({"ts": 1795770000123}, None),
        ({"ts": "not a time"}, "ts"),
        ({"trace_id": "abc"}, "trace_id"),
        ({"tokens_prompt": 1.5}, "tokens_prompt"),
        ({"cost_usd": -1}, "cost_usd"),
        ({"user_id": "u-1"}, "must not carry user_id"),
        ({"attrs": {"user_email": "a@b.co"}}, "must not carry user_id"),
    ],
)
def test_contract_validation(fields, reason):
    result = contract.validate(flat_event("svc", **fields))
    if reason is None:
        assert result is None
    else:
        assert result is not None and reason in result
        assert "u-1" not in result and "a@b.co" not in result


def test_contract_rejects_non_objects():
    assert contract.validate([1, 2]) == "not a JSON object"


def test_sample_history_follows_the_contract_except_its_deliberate_bad_lines(tmp_path):
    from datetime import date

    from metrics_platform import replay
    from metrics_platform.history_sample import BAD_LINE_EVERY, write_day

    day = date(2026, 11, 20)
    path = write_day(tmp_path, day, 1000, salt="s")
    report = replay.ReplayReport(day)
    events = replay.read_day([path], day, report)
    assert len(events) == 1000 - 1000 // BAD_LINE_EVERY
    assert report.rejected == 1000 // BAD_LINE_EVERY
    assert all(len(e["user_id_hash"]) == 64 for e in events.values())
