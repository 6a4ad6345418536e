"""Pure units: settings parsing and the flat event contract (no stack needed)."""

from __future__ import annotations

from datetime import UTC, datetime

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
        ({"tokens_prompt": 4294967296}, "tokens_prompt"),
        ({"tokens_cache_read": 1e300}, "tokens_cache_read"),
        ({"service": 42}, "service"),
        ({"service": ["a"]}, "service"),
        ({"kind": "bogus"}, "kind"),
        ({"kind": "tool", "tool": "search", "span_kind": "internal"}, None),
        ({"user_id_hash": "ab" * 16}, None),  # the original design's 32-character hashes
        ({"user_id_hash": "ab" * 65}, "user_id_hash"),
        ({"ts": "2026-11-24 09:08:44.071"}, None),  # ClickHouse's text form
        ({"user_id": "u-1"}, "must not carry raw user identifiers"),
        ({"attrs": {"user_email": "a@b.co"}}, "must not carry raw user identifiers"),
        ({"attrs": {"enduser.id": "u-1"}}, "must not carry raw user identifiers"),
        ({"attrs": {"request": {"user": {"id": "u-1"}}}}, "must not carry raw user identifiers"),
        ({"attrs": {"items": [{"gen_ai.user": "u-1"}]}}, "must not carry raw user identifiers"),
    ],
)
def test_contract_validation(fields, reason):
    result = contract.validate({**flat_event("svc"), **fields})
    if reason is None:
        assert result is None
    else:
        assert result is not None and reason in result
        assert "u-1" not in result and "a@b.co" not in result


def test_contract_rejects_non_objects():
    assert contract.validate([1, 2]) == "not a JSON object"


def test_contract_rejects_times_clickhouse_would_not_keep():
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    window = contract.accepted_window(retention_days=90, max_future_s=3600, now=now)
    for ts, ok in (
        ("2026-11-27T12:59:00Z", True),
        ("2026-11-27T13:01:00Z", False),
        ("2026-08-28T13:00:00Z", False),
        ("2026-08-29T13:00:00Z", True),
        ("1970-01-01T00:00:00Z", False),
        ("3000-01-01T00:00:00Z", False),
    ):
        assert (contract.validate(flat_event("svc", ts=ts), window) is None) is ok, ts


def test_sample_history_follows_the_contract_except_its_deliberate_bad_lines(tmp_path):
    from datetime import date

    from metrics_platform import replay
    from metrics_platform.history_sample import BAD_LINE_EVERY, write_day

    day = date(2026, 11, 20)
    path = write_day(tmp_path, day, 1000, salt="s")
    report = replay.ReplayReport(day)
    accepted = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    events = replay.read_day([path], day, report, accepted)
    assert len(events) == 1000 - 1000 // BAD_LINE_EVERY
    assert report.rejected == 1000 // BAD_LINE_EVERY
    assert all(len(e["user_id_hash"]) == 64 for e in events.values())
