"""One real stack (Kafka, embedded ClickHouse, Collector) per test session.

It runs on its own ports and state directory, so it never touches a platform started with
``make up``. Tests that need the stack take the ``stack`` fixture; unit tests do not.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Ports are offsets from a base (default 20000) so parallel sessions can each run a stack.
_BASE = int(os.environ.get("METRICS_PLATFORM_TEST_PORT_BASE", "20000"))
TEST_ENV = {
    "METRICS_PLATFORM_STATE_DIR": str(ROOT / ".state" / f"test-{_BASE}"),
    "METRICS_PLATFORM_KAFKA_PORT": str(_BASE + 9092),
    "METRICS_PLATFORM_KAFKA_CONTROLLER_PORT": str(_BASE + 9093),
    "METRICS_PLATFORM_CLICKHOUSE_HTTP_PORT": str(_BASE + 8123),
    "METRICS_PLATFORM_CLICKHOUSE_TCP_PORT": str(_BASE + 9000),
    "METRICS_PLATFORM_OTLP_GRPC_PORT": str(_BASE + 4317),
    "METRICS_PLATFORM_OTLP_HTTP_PORT": str(_BASE + 4318),
    "METRICS_PLATFORM_COLLECTOR_HEALTH_PORT": str(_BASE + 13133),
    "METRICS_PLATFORM_COLLECTOR_METRICS_PORT": str(_BASE + 8888),
    "METRICS_PLATFORM_SUPERSET_PORT": str(_BASE + 8088),
    "METRICS_PLATFORM_SUPERSET_PORTAL_PORT": str(_BASE + 8089),
    "METRICS_PLATFORM_DAGSTER_PORT": str(_BASE + 3000),
    "METRICS_PLATFORM_PII_SALT": "test-salt-not-secret",
    "METRICS_PLATFORM_KAFKA_FLUSH_INTERVAL_MS": "500",
    # Spans are final (attributed, in agent_events) this long after ClickHouse receives them.
    "METRICS_PLATFORM_ATTRIBUTION_DELAY_SECONDS": "2",
    "METRICS_PLATFORM_FINALIZER_INTERVAL_SECONDS": "1",
    # Replay tests write history to temporary directories: a fixed first partition keeps their days valid.
    "METRICS_PLATFORM_HISTORY_START_DATE": "2026-01-01",
}
# The test stack must not inherit a developer's pointers to external servers.
for name in ("CLICKHOUSE_URL", "CLICKHOUSE_HOST", "METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS", "DAGSTER_HOME"):
    os.environ.pop(name, None)
os.environ.update(TEST_ENV)


def _ports(base: int) -> dict[str, int]:
    return {name: int(value) - _BASE + base for name, value in TEST_ENV.items() if name.endswith("_PORT")}


def _check_ports_free() -> None:
    """Stop the session with the port base to use when another stack or session holds this one's ports."""
    from metrics_platform.stack.process import port_in_use

    taken = [f"{name.removeprefix('METRICS_PLATFORM_')} {port}" for name, port in _ports(_BASE).items()
             if port_in_use(port)]  # fmt: skip
    if not taken:
        return
    free = next((b for b in range(20000, 52001, 1000) if not any(map(port_in_use, _ports(b).values()))), None)
    advice = f"run with METRICS_PLATFORM_TEST_PORT_BASE={free}" if free else "stop the other stacks"
    pytest.exit(
        f"the test stack's ports (base {_BASE}) are in use by another stack or test session: {', '.join(taken)}; "
        f"{advice}",
        returncode=4,
    )


@pytest.fixture(scope="session")
def settings():
    from metrics_platform.settings import Settings

    return Settings.from_env()


@pytest.fixture(scope="session")
def stack(settings) -> Iterator[object]:
    """Start the whole platform from a clean state directory; stop it at the end."""
    from metrics_platform.stack import platform

    platform.down(settings, report=lambda _: None)  # leftovers of an interrupted session
    _check_ports_free()
    # Everything but the generated secrets: `settings` already holds the passwords they keep.
    for path in settings.state_dir.glob("*"):
        if path.is_dir() and path.name != "secrets":
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()
    platform.up(settings, report=lambda _: None, with_dagster=False)
    yield settings
    platform.down(settings, report=lambda _: None)


@pytest.fixture()
def ch(stack):
    from metrics_platform import clickhouse

    client = clickhouse.client(stack.clickhouse)
    yield client
    client.close()


@pytest.fixture()
def alert_receiver():
    from tests.alert_receiver import AlertReceiver

    receiver = AlertReceiver()
    yield receiver
    receiver.close()


@pytest.fixture()
def dagster_resources(stack, alert_receiver):
    """The code location's resources, with alerts going to the loopback receiver."""
    from metrics_platform.defs import resources
    from metrics_platform.defs.resources import AlertsResource

    return {**resources.resources(), "alerts": AlertsResource(webhook_url=alert_receiver.url)}
