"""A benchmark's own stack: its ports from a base and its state directory, apart from every other stack.

Shared by the benchmarks that start a platform of their own (faults.py, fuzz.py, compare_peer.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from unittest import mock

# Offsets from a port base, as tests/conftest.py derives a test stack's ports.
PORT_OFFSETS = {
    "KAFKA_PORT": 9092,
    "KAFKA_CONTROLLER_PORT": 9093,
    "CLICKHOUSE_HTTP_PORT": 8123,
    "CLICKHOUSE_TCP_PORT": 9000,
    "OTLP_GRPC_PORT": 4317,
    "OTLP_HTTP_PORT": 4318,
    "COLLECTOR_HEALTH_PORT": 13133,
    "COLLECTOR_METRICS_PORT": 8888,
    "DAGSTER_PORT": 3000,
    "SUPERSET_PORT": 8088,
    "SUPERSET_PORTAL_PORT": 8089,
}


def stack_env(base: int, state_dir: Path) -> dict[str, str]:
    """The variables of a stack on its own port base and state directory (as tests/conftest.py)."""
    env = {f"METRICS_PLATFORM_{name}": str(base + offset) for name, offset in PORT_OFFSETS.items()}
    env["METRICS_PLATFORM_STATE_DIR"] = str(state_dir)
    return env


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` on top of this process's environment (daemons started meanwhile inherit it); pointers to
    external servers are removed so the bench never touches another stack."""
    with mock.patch.dict(os.environ, env):
        for name in ("CLICKHOUSE_URL", "CLICKHOUSE_HOST", "METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS"):
            os.environ.pop(name, None)
        yield


def fresh_state(state_dir: Path) -> None:
    """Empty a state directory but its generated secrets (a bench stack starts from nothing)."""
    for path in state_dir.glob("*"):
        if path.is_dir() and path.name != "secrets":
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
