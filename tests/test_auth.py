"""Authentication by default, against the real components.

ClickHouse (the embedded server of the session's stack, and a second one for the quota): the platform's
writer, the read-only reader (reads, and nothing else: no writes, DDL, settings, temporary tables, table
functions, system tables that hold secrets, more than its quota) and the engine's `default` account, which
no client can use. Kafka: a second stack with SASL/SCRAM on, where spans flow end to end (Collector →
Kafka → ClickHouse's Kafka engine; the Python producer → ClickHouse) and a wrong or missing password is
refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from metrics_platform import clickhouse, dashboards
from metrics_platform.settings import Settings
from tests import otlp_json
from tests.collector_helpers import post_otlp
from tests.helpers import flat_event, free_ports, ingest, trace_id, wait_for


def _http(settings: Settings, user: str, password: str, sql: str) -> tuple[int, str]:
    """One query over ClickHouse's HTTP interface as ``user``: (status, body)."""
    ch = settings.clickhouse
    request = urllib.request.Request(
        f"{ch.url}/?database={ch.database}",
        data=sql.encode(),
        headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _reader(settings: Settings):
    ch = settings.clickhouse
    return clickhouse.client(dataclasses.replace(ch, user=ch.reader_user, password=ch.reader_password))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- ClickHouse accounts on the session's stack ---------------------------------------------------------------


def test_accounts_have_generated_private_passwords(stack, ch) -> None:
    assert ch.command("SELECT currentUser()") == "metrics_writer"
    assert ch.command("SELECT currentDatabase()") == "metrics"
    secrets = stack.state_dir / "secrets"
    assert _mode(secrets / "clickhouse_writer_password") == 0o600
    assert _mode(secrets / "clickhouse_reader_password") == 0o600
    assert (secrets / "clickhouse_writer_password").read_text().strip() == stack.clickhouse.password
    run = stack.state_dir / "clickhouse" / "run"
    users = (run / "users.xml").read_text()
    for name in ("users.xml", "config.xml"):
        assert _mode(run / name) == 0o600, name
    # Hashes only: the passwords themselves are in the secrets directory alone.
    for password in (stack.clickhouse.password, stack.clickhouse.reader_password):
        assert password not in users
        assert hashlib.sha256(password.encode()).hexdigest() in users
    # A refused login says where the password comes from.
    with pytest.raises(DatabaseError, match="refused the account 'metrics_writer'.*clickhouse_writer_password"):
        clickhouse.client(dataclasses.replace(stack.clickhouse, password="wrong"))


def test_reader_reads_every_dashboard_and_changes_nothing(stack, ch) -> None:
    reader = _reader(stack)
    try:
        assert reader.command("SELECT currentUser()") == "metrics_reader"
        reader.command("SELECT count() FROM agent_events")
        # Every saved dashboard question, as Superset and analysts ask them.
        for name in dashboards.available():
            dashboards.run(reader, name)
    finally:
        reader.close()
    ch_settings = stack.clickhouse
    refused = {
        "INSERT INTO dead_letters (error) VALUES ('x')": "ACCESS_DENIED|READONLY",
        "ALTER TABLE dead_letters DELETE WHERE 1": "ACCESS_DENIED|READONLY",
        "ALTER TABLE dead_letters ADD COLUMN x UInt8": "ACCESS_DENIED|READONLY",
        "CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x": "ACCESS_DENIED|READONLY",
        "DROP TABLE dead_letters": "ACCESS_DENIED|READONLY",
        "TRUNCATE TABLE dead_letters": "ACCESS_DENIED|READONLY",
        "CREATE TEMPORARY TABLE scratch (x UInt8)": "ACCESS_DENIED|READONLY",
        "SELECT 1 SETTINGS max_memory_usage = 0": "READONLY",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')": "ACCESS_DENIED",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')": "ACCESS_DENIED",
        f"SELECT * FROM remote('127.0.0.1:{ch_settings.tcp_port}', system.one)": "ACCESS_DENIED",
        "SELECT * FROM s3('http://127.0.0.1:9/bucket/key.csv', 'CSV')": "ACCESS_DENIED",
        # System tables that hold queries (with their literals), accounts and dictionary sources.
        "SELECT query FROM system.processes": "ACCESS_DENIED",
        "SELECT * FROM system.users": "ACCESS_DENIED",
        "SELECT * FROM system.grants": "ACCESS_DENIED",
        "SELECT * FROM system.dictionaries": "ACCESS_DENIED",
        "SELECT * FROM system.parts": "ACCESS_DENIED",
        "SELECT * FROM system.one": "",  # what every session may read (settings, one, its quota) stays readable
    }
    for sql, codes in refused.items():
        status, body = _http(stack, ch_settings.reader_user, ch_settings.reader_password, sql)
        if not codes:
            assert status == 200, f"{sql}: {body[:300]}"
            continue
        assert status != 200, f"the reader ran {sql!r}"
        assert any(code in body for code in codes.split("|")), f"{sql}: {body[:300]}"
    status, body = _http(stack, ch_settings.reader_user, "wrong-" + ch_settings.reader_password, "SELECT 1")
    assert status in (401, 403) and "Authentication failed" in body


def test_writer_has_no_file_url_or_remote(stack) -> None:
    ch = stack.clickhouse
    for sql, grant in {
        "SELECT * FROM file('/etc/passwd', 'LineAsString')": "READ ON FILE",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')": "READ ON URL",
        f"SELECT * FROM remote('127.0.0.1:{ch.tcp_port}', system.one)": "READ ON REMOTE",
        "CREATE DATABASE elsewhere": "CREATE DATABASE",
    }.items():
        status, body = _http(stack, ch.user, ch.password, sql)
        assert status != 200 and "ACCESS_DENIED" in body and grant in body, f"{sql}: {body[:300]}"


def test_default_account_cannot_be_used(stack) -> None:
    table = "SELECT count() FROM agent_events"
    # The engine's own session is `default` (no password, loopback): its quota is spent once the server
    # listens, and it holds no grant but SYSTEM LISTEN.
    for sql, codes in {
        table: ("QUOTA_EXCEEDED", "ACCESS_DENIED"),
        "SELECT * FROM system.settings": ("QUOTA_EXCEEDED",),
        "SYSTEM STOP LISTEN HTTP": ("QUOTA_EXCEEDED",),
        "SELECT * FROM file('/etc/passwd', 'LineAsString')": ("ACCESS_DENIED",),
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')": ("ACCESS_DENIED",),
        "CREATE TABLE metrics.t (x UInt8) ENGINE = Memory": ("ACCESS_DENIED", "QUOTA_EXCEEDED"),
        "INSERT INTO metrics.dead_letters (error) VALUES ('x')": ("ACCESS_DENIED", "QUOTA_EXCEEDED"),
        "SELECT 1 SETTINGS max_memory_usage = 0": ("SETTING_CONSTRAINT_VIOLATION",),
    }.items():
        status, body = _http(stack, "default", "", sql)
        assert status != 200 and any(code in body for code in codes), f"default ran {sql!r}: {body[:300]}"
    status, body = _http(stack, "default", "a-guess", table)
    assert status in (401, 403) and "Authentication failed" in body
    # The listener that SYSTEM STOP LISTEN above would have stopped still answers.
    assert _http(stack, stack.clickhouse.user, stack.clickhouse.password, "SELECT 1") == (200, "1\n")


def test_reader_quota_is_enforced(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second embedded server with a small reader quota (the stack's allows 5000 queries an hour)."""
    from metrics_platform.stack import clickhouse_embedded

    http_port, tcp_port = free_ports(2)
    state_dir = settings.state_dir.with_name(settings.state_dir.name + "-quota")
    monkeypatch.setenv("METRICS_PLATFORM_STATE_DIR", str(state_dir))
    monkeypatch.setenv("METRICS_PLATFORM_CLICKHOUSE_HTTP_PORT", str(http_port))
    monkeypatch.setenv("METRICS_PLATFORM_CLICKHOUSE_TCP_PORT", str(tcp_port))
    monkeypatch.setenv("METRICS_PLATFORM_CLICKHOUSE_READER_QUERIES_PER_HOUR", "5")
    quota = Settings.from_env()
    shutil.rmtree(quota.state_dir / "clickhouse", ignore_errors=True)
    clickhouse_embedded.start(quota)
    try:
        writer = clickhouse.client(quota.clickhouse)
        writer.command("CREATE TABLE IF NOT EXISTS q (x UInt8) ENGINE = MergeTree ORDER BY x")
        writer.close()
        reader = _reader(quota)
        answered = 0
        with pytest.raises(DatabaseError, match="QUOTA_EXCEEDED"):
            for _ in range(20):
                reader.command("SELECT count() FROM q")
                answered += 1
        # clickhouse-connect's own start-up query counts too: at most 5 in all.
        assert 3 <= answered <= 5
        # The quota is the reader's alone: the platform is never throttled by it.
        assert _http(quota, quota.clickhouse.user, quota.clickhouse.password, "SELECT count() FROM q")[0] == 200
    finally:
        clickhouse_embedded.stop(quota)


# --- Kafka with SASL/SCRAM: a second stack -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sasl_stack(settings) -> Iterator[Settings]:
    """Kafka, ClickHouse and the Collector with METRICS_PLATFORM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT."""
    from metrics_platform.stack import platform

    names = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "CLICKHOUSE_HTTP_PORT", "CLICKHOUSE_TCP_PORT", "OTLP_GRPC_PORT",
             "OTLP_HTTP_PORT", "COLLECTOR_HEALTH_PORT", "COLLECTOR_METRICS_PORT")  # fmt: skip
    env = {f"METRICS_PLATFORM_{name}": str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}
    env["METRICS_PLATFORM_STATE_DIR"] = str(settings.state_dir.with_name(settings.state_dir.name + "-sasl"))
    env["METRICS_PLATFORM_KAFKA_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
    with pytest.MonkeyPatch.context() as patch:
        # Every process the stack starts reads its settings from this environment.
        for name, value in env.items():
            patch.setenv(name, value)
        sasl = Settings.from_env()
        platform.down(sasl, report=lambda _: None)
        for path in sasl.state_dir.glob("*"):
            if path.is_dir() and path.name != "secrets":
                shutil.rmtree(path)
        try:
            platform.up(sasl, report=lambda _: None, with_dagster=False)
            yield sasl
        finally:
            platform.down(sasl, report=lambda _: None)


def test_sasl_configuration_everywhere(sasl_stack) -> None:
    k = sasl_stack.kafka
    assert k.security_protocol == "SASL_PLAINTEXT" and k.sasl_mechanism == "SCRAM-SHA-512"
    assert _mode(sasl_stack.state_dir / "secrets" / "kafka_sasl_password") == 0o600
    properties = sasl_stack.state_dir / "kafka" / "server.properties"
    text = properties.read_text()
    assert _mode(properties) == 0o600
    assert f"listeners=SASL_PLAINTEXT://127.0.0.1:{os.environ['METRICS_PLATFORM_KAFKA_PORT']}" in text
    assert "PLAINTEXT://" not in text.replace("SASL_PLAINTEXT://", "")
    # ClickHouse's Kafka engine takes the same credentials from its config (owner only), with PLAIN: the
    # embedded engine's Kafka client has no SCRAM.
    config = sasl_stack.state_dir / "clickhouse" / "run" / "config.xml"
    assert _mode(config) == 0o600
    text = config.read_text()
    assert f"<sasl_username>{k.sasl_username}</sasl_username>" in text
    assert "<sasl_mechanism>PLAIN</sasl_mechanism>" in text and "<security_protocol>sasl_plaintext<" in text


def test_spans_flow_end_to_end_over_sasl(sasl_stack) -> None:
    ch = clickhouse.client(sasl_stack.clickhouse)
    try:
        # OTLP → the Collector's kafka exporter (SCRAM) → Kafka → ClickHouse's Kafka engine (SCRAM).
        trace = trace_id()
        root = otlp_json.span(trace, "POST /answer", {"route": "POST /answer"}, kind=otlp_json.SERVER)
        status, body = post_otlp(sasl_stack, otlp_json.request({"service.name": "auth-sasl-otlp"}, [root]))
        assert status == 200, body
        wait_for(
            lambda: ch.command("SELECT count() FROM span_inbox WHERE trace_id = {t:String}", parameters={"t": trace}),
            60,
            "the span sent over OTLP in ClickHouse",
        )
        # The platform's Python producer (replays, backfills) → the events topic → ClickHouse.
        ingest(sasl_stack.kafka, ch, "auth-sasl-flat", [flat_event("auth-sasl-flat") for _ in range(3)])
    finally:
        ch.close()


def _login_errors(settings: Settings, **overrides: str) -> list[KafkaError]:
    """Errors a Kafka client with ``overrides`` on the platform's properties gets while asking for metadata."""
    errors: list[KafkaError] = []
    config = {"bootstrap.servers": settings.kafka.bootstrap_servers, **settings.kafka.librdkafka_security()}
    # log_level 0: the refusals are expected, librdkafka need not print each retry.
    client = AdminClient({**config, **overrides, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    for _ in range(10):  # errors reach error_cb through poll()
        client.poll(0.2)
    return errors


def test_kafka_refuses_wrong_or_missing_credentials(sasl_stack) -> None:
    k = sasl_stack.kafka
    wrong = _login_errors(sasl_stack, **{"sasl.password": "wrong-" + k.sasl_password})
    assert any(e.code() == KafkaError._AUTHENTICATION for e in wrong), wrong
    unknown = _login_errors(sasl_stack, **{"sasl.username": "somebody"})
    assert any(e.code() == KafkaError._AUTHENTICATION for e in unknown), unknown
    # No SASL at all: the listener speaks SASL only.
    _login_errors(sasl_stack, **{"security.protocol": "plaintext"})
    # The right credentials work (the stack itself proves it too).
    assert AdminClient({"bootstrap.servers": k.bootstrap_servers, **k.librdkafka_security()}).list_topics(timeout=10)


# --- Pure units: settings, rendering, the upgrade path --------------------------------------------------------


def _settings_with(monkeypatch: pytest.MonkeyPatch, state_dir: Path, **env: str) -> Settings:
    monkeypatch.setenv("METRICS_PLATFORM_STATE_DIR", str(state_dir))
    for name in [n for n in os.environ if n.startswith("METRICS_PLATFORM_KAFKA_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"METRICS_PLATFORM_{name}", value)
    return Settings.from_env()


def test_one_set_of_kafka_security_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from metrics_platform.stack import clickhouse_server, collector

    plain = _settings_with(monkeypatch, tmp_path).kafka
    assert plain.librdkafka_security() == {"security.protocol": "plaintext"}
    assert set(collector.kafka_security_environment(_settings_with(monkeypatch, tmp_path)).values()) == {""}

    sasl = _settings_with(monkeypatch, tmp_path, KAFKA_SECURITY_PROTOCOL="sasl_plaintext")
    generated = tmp_path / "secrets" / "kafka_sasl_password"
    assert sasl.kafka.sasl_password == generated.read_text().strip() and _mode(generated) == 0o600
    login = {
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "metrics_platform",
        "sasl.password": sasl.kafka.sasl_password,
    }
    assert sasl.kafka.librdkafka_security() == {"security.protocol": "sasl_plaintext", **login}
    auth = collector.kafka_security_environment(sasl)
    assert json.loads(auth["METRICS_PLATFORM_COLLECTOR_KAFKA_AUTH"]) == {
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "metrics_platform", "password": sasl.kafka.sasl_password}
    }
    assert clickhouse_server.engine_kafka_properties(sasl.kafka)["sasl.mechanism"] == "PLAIN"

    external = _settings_with(
        monkeypatch, tmp_path, KAFKA_BOOTSTRAP_SERVERS="kafka-1:9093", KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_PASSWORD="pw", KAFKA_SASL_MECHANISM="scram-sha-256", KAFKA_SSL_CA_LOCATION="/etc/ca.pem",
        KAFKA_PROP_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM="https",
    )  # fmt: skip
    props = external.kafka.librdkafka_security()
    assert props["sasl.mechanism"] == "SCRAM-SHA-256" and props["ssl.ca.location"] == "/etc/ca.pem"
    assert props["ssl.endpoint.identification.algorithm"] == "https"  # METRICS_PLATFORM_KAFKA_PROP_* on top
    env = collector.kafka_security_environment(external)
    assert json.loads(env["METRICS_PLATFORM_COLLECTOR_KAFKA_TLS"]) == {"ca_file": "/etc/ca.pem"}

    for env, message in [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "is not one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "embedded broker serves PLAINTEXT or SASL_PLAINTEXT"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_BOOTSTRAP_SERVERS": "k:9093"},
            "needs METRICS_PLATFORM_KAFKA_SASL",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "is not one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            _settings_with(monkeypatch, tmp_path, **env)


def test_accounts_refuse_reserved_and_unsafe_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from metrics_platform.stack import clickhouse_users

    ch = _settings_with(monkeypatch, tmp_path).clickhouse
    assert ch.user == "metrics_writer" and ch.reader_user == "metrics_reader" and ch.database == "metrics"
    for change, message in [
        ({"user": "default"}, "cannot be 'default'"),
        ({"reader_user": "metrics_writer"}, "must differ"),
        ({"user": "a-b"}, "letters, digits and underscores"),
        ({"database": "x`; DROP"}, "letters, digits and underscores"),
    ]:
        with pytest.raises(ValueError, match=message):
            clickhouse_users.render_users(dataclasses.replace(ch, **change), 3)


def test_dictionaries_of_the_engine_account_are_adopted() -> None:
    from metrics_platform.stack.clickhouse_users import adopted_dictionary_ddl

    create = (
        "CREATE DICTIONARY default.model_price_dict\n(\n    `id` String\n)\nPRIMARY KEY id\n"
        "SOURCE(CLICKHOUSE(DB 'default' TABLE 'model_prices' USER 'default' PASSWORD '[HIDDEN]'))\n"
        "LIFETIME(MIN 0 MAX 0)"
    )
    adopted = adopted_dictionary_ddl(create, "metrics_writer", "it's")
    assert adopted is not None and adopted.startswith("CREATE OR REPLACE DICTIONARY default.model_price_dict")
    assert "USER 'metrics_writer' PASSWORD 'it\\'s'" in adopted and "[HIDDEN]" not in adopted
    assert adopted_dictionary_ddl(adopted.replace("CREATE OR REPLACE", "CREATE").replace("'it\\'s'", "'[HIDDEN]'"),
                                  "metrics_writer", "x") is None  # fmt: skip


def test_tables_in_the_engine_database_are_not_silently_abandoned(settings, tmp_path: Path) -> None:
    """An installation from before accounts keeps its tables in the engine's `default` database: the server
    refuses to start on `metrics` beside them (two sets of Kafka consumers in one group), and says why."""
    import subprocess
    import sys

    data = tmp_path / "data"
    (data / "metadata" / "default").mkdir(parents=True)
    (data / "metadata" / "default" / "schema_migrations.sql").write_text("ATTACH TABLE _ (version UInt32)\n")
    env = {**os.environ, "METRICS_PLATFORM_STATE_DIR": str(tmp_path / "state")}
    argv = [sys.executable, "-m", "metrics_platform.stack.clickhouse_server", "--data-dir", str(data),
            "--run-dir", str(tmp_path / "run"), "--http-port", "9", "--tcp-port", "9"]  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "CLICKHOUSE_DATABASE=default" in result.stdout and f"remove {data}" in result.stdout
