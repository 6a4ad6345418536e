"""The CLI says what went wrong: commands that did nothing exit non-zero with a message, bad dates are
usage errors, an unreachable ClickHouse or Kafka is one line (no traceback, no librdkafka log lines)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from metrics_platform.cli import main
from metrics_platform.kafka_clients import LIBRDKAFKA_LOG

CLI = Path(sys.executable).with_name("metrics-platform")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI silences librdkafka's and clickhouse-connect's loggers for its process; undo it for the others."""
    level = logging.getLogger("clickhouse_connect").level
    yield
    LIBRDKAFKA_LOG.disabled = False
    logging.getLogger("clickhouse_connect").setLevel(level)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def _run(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *args], env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout_s
    )


def _no_noise(output: str) -> None:
    assert "Traceback" not in output, output
    assert "rdkafka" not in output and "%3|" not in output and "%4|" not in output, output


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "2026-13-01"],
        ["replay", "yesterday"],
        ["audit", "--start", "2026-11-27T10:00", "--end", "2026-11-27T09:00"],
        ["audit", "--start", "2026-11-27T10:00", "--end", "2026-11-27T10:00"],
        ["audit", "--start", "last week", "--end", "2026-11-27T10:00"],
        ["prices", "recompute", "--start", "2026-02-30", "--end", "2026-03-01"],
        ["prices", "recompute", "--start", "2026-03-02", "--end", "2026-03-01"],
        ["demo", "--rate", "0"],
        ["demo", "--duration", "-1"],
    ],
)
def test_bad_arguments_are_usage_errors(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output and "Error:" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_replay_of_a_day_without_a_file_says_so(tmp_path):
    (tmp_path / "2026-01-01.jsonl").write_text("")
    result = CliRunner().invoke(main, ["replay", "2026-01-01", "2026-01-02", "--history-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert f"nothing replayed: no history file for 2026-01-02 in {tmp_path}" in result.output


def test_demo_to_an_unreachable_endpoint_fails_at_once():
    port = _closed_port()
    started = time.monotonic()
    result = CliRunner().invoke(main, ["demo", "--endpoint", f"http://127.0.0.1:{port}", "--duration", "30"])
    assert result.exit_code == 1, result.output
    assert f"nothing sent: the OTLP endpoint http://127.0.0.1:{port} is not reachable" in result.output
    assert time.monotonic() - started < 10


def test_unreachable_kafka_is_one_line_without_librdkafka_noise():
    result = _run("lag", env={"METRICS_PLATFORM_KAFKA_PORT": str(_closed_port())})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Kafka is not reachable" in result.stderr, result.stderr
    _no_noise(result.stdout + result.stderr)


def test_unreachable_clickhouse_is_one_line():
    result = _run("summary", env={"METRICS_PLATFORM_CLICKHOUSE_HTTP_PORT": str(_closed_port())})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ClickHouse is not reachable (connection refused)" in result.stderr, result.stderr
    _no_noise(result.stdout + result.stderr)
    assert "Unexpected Http Driver Exception" not in result.stderr


def test_commands_against_the_stack_print_no_librdkafka_lines(stack, tmp_path):
    result = _run("lag")
    assert result.returncode == 0, result.stderr
    assert "clickhouse_otel_spans" in result.stdout or "_otel_spans" in result.stdout, result.stdout
    _no_noise(result.stdout + result.stderr)
    result = _run("sample-history", "--days", "1", "--events-per-day", "50", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (day,) = [p.name.split(".")[0] for p in tmp_path.iterdir()]
    result = _run("replay", day, "--history-dir", str(tmp_path), timeout_s=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{day}: " in result.stdout and "produced" in result.stdout, result.stdout
    _no_noise(result.stdout + result.stderr)


def test_demo_and_status_against_the_stack(stack):
    result = _run("demo", "--rate", "5", "--duration", "1", "--seed", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requests" in result.stdout
    _no_noise(result.stdout + result.stderr)
    result = _run("status")
    # The session's stack runs without Dagster: status lists it as down and exits 3.
    assert result.returncode == 3, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    for name in ("kafka", "clickhouse", "otelcol"):
        assert lines[name].split()[1] == "up", result.stdout
    assert lines["dagster-ui"].split()[1] == "DOWN", result.stdout
