"""Supervision: a component killed with SIGKILL comes back by itself, and the restart is visible in
`status` and in Dagster's pipeline health; a failed `up` leaves nothing running; Dagster's first
start on a fresh DAGSTER_HOME is clean, three times out of three."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from metrics_platform import kafka_clients, pipeline_health
from metrics_platform.defs.health import build_pipeline_health_sensor
from metrics_platform.stack import clickhouse_embedded, collector, dagster_services, kafka_broker, platform, superset
from metrics_platform.stack.process import Daemon, port_in_use
from metrics_platform.stack.supervisor import (
    Supervisor,
    gave_up,
    render_program_conf,
    render_supervisord_conf,
    restart_counts,
)
from tests.helpers import wait_for

# `status` names the components a little differently from their supervised programs.
STATUS_NAME = {
    "kafka": "kafka",
    "clickhouse": "clickhouse",
    "otelcol": "otelcol",
    "dagster-webserver": "dagster-ui",
    "dagster-daemon": "dagster-daemon",
    "dagster-code-server": "dagster-code",
    "superset": "superset",
}

SUPERVISOR_LOG = """\
2026-11-27 10:00:00,001 INFO supervisord started with pid 10
2026-11-27 10:00:01,000 INFO spawned: 'kafka' with pid 11
2026-11-27 10:00:09,000 WARN exited: kafka (terminated by SIGKILL; not expected)
2026-11-27 10:00:10,000 INFO spawned: 'kafka' with pid 12
2026-11-27 10:01:00,000 INFO stopped: kafka (exit status 143)
2026-11-27 11:00:00,001 INFO supervisord started with pid 20
2026-11-27 11:00:01,000 INFO spawned: 'otelcol' with pid 21
2026-11-27 11:00:05,000 WARN exited: otelcol (terminated by SIGKILL; not expected)
2026-11-27 11:00:06,000 INFO spawned: 'otelcol' with pid 22
2026-11-27 11:00:07,000 WARN exited: otelcol (exit status 1; not expected)
2026-11-27 11:00:08,000 INFO gave up: otelcol entered FATAL state, too many start retries too quickly
2026-11-27 11:00:09,000 INFO stopped: clickhouse (exit status 0)
"""


# --- pure units: the supervisor's configuration and its log ------------------------------------------


def test_restarts_are_counted_from_the_supervisor_log_since_it_last_started():
    # The first run's kafka crash belongs to an earlier supervisor; asked-for stops are not restarts.
    assert restart_counts(SUPERVISOR_LOG) == {"otelcol": 2}
    assert gave_up(SUPERVISOR_LOG) == {"otelcol"}
    assert restart_counts("") == {} and gave_up("") == set()


def test_pipeline_health_reports_restarts_of_every_component():
    health = pipeline_health.restarts(["clickhouse", "kafka", "otelcol"], SUPERVISOR_LOG)
    assert health == {
        "restarts_clickhouse": 0.0,
        "restarts_kafka": 0.0,
        "restarts_otelcol": 2.0,
        "gave_up_otelcol": 1.0,
    }


def test_programs_restart_when_they_die_and_only_then(tmp_path: Path):
    conf = render_program_conf("kafka", tmp_path / "kafka.json", tmp_path / "kafka.log", python="/venv/bin/python")
    settings = dict(line.split(" = ", 1) for line in conf.splitlines()[1:] if " = " in line)
    assert conf.startswith("[program:kafka]")
    assert settings["command"] == f"/venv/bin/python -m metrics_platform.stack.supervisor exec {tmp_path}/kafka.json"
    # Started on request only, restarted whenever it dies unasked, children stopped with it.
    assert (settings["autostart"], settings["autorestart"]) == ("false", "true")
    assert settings["stopasgroup"] == settings["killasgroup"] == "true"
    assert int(settings["startsecs"]) > 0 and int(settings["startretries"]) > 0
    main = render_supervisord_conf(tmp_path / "run 100%", tmp_path / "logs", 4096)
    # A literal % would be read as an interpolation by supervisord; the socket is the owner's only.
    assert "run 100%%" in main and "chmod = 0700" in main and "minfds = 4096" in main


# --- against the real stack --------------------------------------------------------------------------


def _status(settings, name: str) -> platform.ComponentStatus:
    return next(row for row in platform.status(settings) if row.name == STATUS_NAME[name])


def _kill_and_expect_back(settings, daemon: Daemon, healthy: Callable[[], bool], timeout_s: float = 120) -> None:
    """SIGKILL the component's process; it must come back healthy by itself, with the restart counted."""
    before = daemon.restarts()
    pid = daemon.pid()
    assert pid is not None, f"{daemon.name} is not running"
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: daemon.pid() not in (None, pid) and healthy(),
        timeout_s,
        f"{daemon.name} to be restarted and healthy",
        diagnose=lambda: f"{daemon.info()}\n{daemon.log_tail()}",
    )
    assert daemon.restarts() == before + 1
    # A server just back may miss a health probe while it warms up: `status` gets a few tries.
    row = wait_for(lambda: (r := _status(settings, daemon.name)).running and r, 30, f"{daemon.name} up in status")
    assert row.restarts == before + 1 and f"restarted {before + 1}x" in row.detail, row


def _kafka_answers(settings) -> bool:
    try:
        return bool(kafka_clients.admin(settings.kafka).list_topics(timeout=2).brokers)
    except Exception:  # confluent-kafka raises KafkaException while the broker starts
        return False


def test_killed_kafka_clickhouse_and_collector_come_back_by_themselves(stack):
    _kill_and_expect_back(stack, kafka_broker.daemon(stack), lambda: _kafka_answers(stack))
    _kill_and_expect_back(stack, clickhouse_embedded.daemon(stack), lambda: clickhouse_embedded.healthy(stack))
    _kill_and_expect_back(stack, collector.daemon(stack), lambda: collector.healthy(stack))
    # Dagster's pipeline health carries the same numbers.
    sensor = build_pipeline_health_sensor()
    context = dg.build_sensor_context(resources={"platform": _platform(), "clickhouse": _clickhouse()})
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    metadata = result.asset_events[0].metadata
    for name in ("kafka", "clickhouse", "otelcol"):
        assert metadata[f"restarts_{name}"].value >= 1, metadata


def _platform():
    from metrics_platform.defs.resources import PlatformSettings

    return PlatformSettings()


def _clickhouse():
    from metrics_platform.defs.resources import ClickHouseResource

    return ClickHouseResource()


def _daemon_fresh(settings, since: float) -> bool:
    beats = dagster_services.daemon_heartbeats(settings)
    return bool(beats) and min(beats.values()) > since


def _dagster_logs(settings) -> list[Daemon]:
    return [
        dagster_services.webserver(settings),
        dagster_services.daemon(settings),
        dagster_services.code_server(settings),
    ]


def _log_sizes(settings) -> dict[Path, int]:
    return {d.log_file: d.log_file.stat().st_size if d.log_file.exists() else 0 for d in _dagster_logs(settings)}


def _dagster_errors(since: dict[Path, int]) -> list[str]:
    """Storage errors written to the Dagster processes' logs after ``since`` (the first-run race left
    "table ... already exists")."""
    found = []
    for path, offset in since.items():
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        found += [line for line in text.splitlines() if "already exists" in line or "OperationalError" in line]
    return found


@pytest.fixture()
def dagster(stack, tmp_path, monkeypatch) -> Iterator[dict[Path, int]]:
    """Dagster on the test stack, on a fresh DAGSTER_HOME; yields where its logs stood; stopped afterwards."""
    dagster_services.stop(stack)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster-home"))
    yield _log_sizes(stack)
    dagster_services.stop(stack)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_dagster_first_start_on_a_fresh_home_is_clean(stack, dagster, attempt):
    started = time.time()
    dagster_services.start(stack)
    wait_for(lambda: _daemon_fresh(stack, started), 90, "heartbeats of every daemon loop")
    assert dagster_services.running(stack)
    assert dagster_services.code_location_loaded(stack)
    assert _dagster_errors(dagster) == []


def test_killed_dagster_processes_come_back_by_themselves(stack, dagster):
    dagster_services.start(stack)
    _kill_and_expect_back(
        stack, dagster_services.code_server(stack), lambda: dagster_services.code_server_healthy(stack)
    )
    _kill_and_expect_back(stack, dagster_services.webserver(stack), lambda: dagster_services.healthy(stack))
    killed = time.time()
    _kill_and_expect_back(stack, dagster_services.daemon(stack), lambda: _daemon_fresh(stack, killed))
    # The webserver reaches the restarted code server again: the location loads.
    wait_for(lambda: dagster_services.code_location_loaded(stack), 60, "the code location loaded in the webserver")
    assert _dagster_errors(dagster) == []


def test_killed_superset_comes_back_by_itself(stack):
    if not (superset.venv_dir(stack) / ".installed").exists():
        pytest.skip("Superset is not installed (metrics-platform install does it)")
    superset.start(stack, report=lambda _: None)
    try:
        _kill_and_expect_back(stack, superset.daemon(stack), lambda: superset.healthy(stack), timeout_s=180)
    finally:
        superset.stop(stack)


# --- a failed `up` -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_up_stops_what_it_started(stack, tmp_path):
    """Kafka and ClickHouse start, then the Collector's port is taken: `up` fails and stops both."""
    names = ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "CLICKHOUSE_HTTP_PORT", "CLICKHOUSE_TCP_PORT", "OTLP_GRPC_PORT",
             "OTLP_HTTP_PORT", "COLLECTOR_HEALTH_PORT", "COLLECTOR_METRICS_PORT", "DAGSTER_PORT")  # fmt: skip
    ports = {f"METRICS_PLATFORM_{name}": _free_port() for name in names}
    state = tmp_path / "state"
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "METRICS_PLATFORM_STATE_DIR": str(state)}
    env.pop("DAGSTER_HOME", None)
    cli = Path(sys.executable).with_name("metrics-platform")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["METRICS_PLATFORM_OTLP_HTTP_PORT"]))
        taken.listen()
        result = subprocess.run([str(cli), "up", "--no-superset"], env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"port(s) already in use: OTLP HTTP {ports['METRICS_PLATFORM_OTLP_HTTP_PORT']}" in output, output
    assert "Kafka: stopped (up failed)" in output and "ClickHouse: stopped (up failed)" in output, output
    # Nothing of that stack runs: no supervisor, no process started from its state directory, no port held.
    assert not Supervisor(state / "run", state / "logs").running()
    leftovers = subprocess.run(["pgrep", "-f", f"{state}/"], capture_output=True, text=True).stdout.split()
    assert leftovers == [], leftovers
    assert [p for p in ports.values() if port_in_use(p)] == []


def test_down_stops_components_whose_supervisor_was_killed(stack):
    """supervisord itself killed: the components run on unsupervised, `status` says so, `down` stops them."""
    supervisor = Supervisor(stack.run_dir, stack.log_dir)
    pid = int((stack.run_dir / "supervisord.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not supervisor.running(), 30, "supervisord gone")
    try:
        rows = {row.name: row for row in platform.status(stack)}
        assert "NOT SUPERVISED" in rows["kafka"].detail and "NOT SUPERVISED" in rows["clickhouse"].detail, rows
        platform.down(stack, report=lambda _: None)
        ports = (stack.clickhouse.http_port, stack.collector.otlp_http_port, stack.kafka.controller_port)
        wait_for(lambda: not any(port_in_use(p) for p in ports), 60, "the components' ports free")
        leftovers = subprocess.run(["pgrep", "-f", f"{stack.state_dir}/"], capture_output=True, text=True)
        assert leftovers.stdout.split() == [], leftovers.stdout
    finally:
        platform.up(stack, report=lambda _: None, with_dagster=False)  # the session's stack, for later tests
