"""The OpenTelemetry Collector: built from Go modules at pinned versions, run with our config.

``deploy/otelcol`` holds the distribution (go.mod, main.go) and ``config.yaml``. The binary is
cached under ``<cache>/otelcol/<hash of the build files>/`` so a rebuild happens only when the
manifest changes; Go's module and build caches live under ``<cache>/go`` for the same reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from metrics_platform.paths import DEPLOY_DIR
from metrics_platform.settings import Settings
from metrics_platform.stack.process import Daemon, StackError, http_get, require_free_ports, wait_until

SOURCE_DIR = DEPLOY_DIR / "otelcol"
CONFIG = SOURCE_DIR / "config.yaml"
_BUILD_FILES = ("go.mod", "go.sum", "main.go")


def daemon(settings: Settings) -> Daemon:
    return Daemon("otelcol", settings.run_dir, settings.log_dir)


def binary_path(settings: Settings) -> Path:
    digest = hashlib.sha256()
    for name in _BUILD_FILES:
        digest.update((SOURCE_DIR / name).read_bytes())
    return settings.cache_dir / "otelcol" / digest.hexdigest()[:12] / "otelcol"


def go_env(settings: Settings) -> dict[str, str]:
    """Go's caches inside the project's cache directory, so CI and later runs reuse them."""
    return {
        **os.environ,
        "GOMODCACHE": str(settings.cache_dir / "go" / "mod"),
        "GOCACHE": str(settings.cache_dir / "go" / "build"),
        "GOFLAGS": "-modcacherw",
        "CGO_ENABLED": "0",
    }


def build(settings: Settings) -> Path:
    """Build the Collector unless a binary for these build files is cached; returns its path."""
    binary = binary_path(settings)
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise StackError("Go is needed to build the OpenTelemetry Collector (deploy/otelcol); install Go 1.26+")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    result = subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."],
        cwd=SOURCE_DIR,
        env=go_env(settings),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"building the Collector in {SOURCE_DIR} failed:\n{result.stderr[-4000:]}")
    partial.rename(binary)
    return binary


def environment(settings: Settings) -> dict[str, str]:
    """The variables deploy/otelcol/config.yaml reads; every one is always set."""
    c = settings.collector
    return {
        "METRICS_PLATFORM_OTLP_GRPC_PORT": str(c.otlp_grpc_port),
        "METRICS_PLATFORM_OTLP_HTTP_PORT": str(c.otlp_http_port),
        "METRICS_PLATFORM_COLLECTOR_HEALTH_PORT": str(c.health_port),
        "METRICS_PLATFORM_COLLECTOR_METRICS_PORT": str(c.metrics_port),
        # A YAML flow list: the Collector parses a whole-value env reference as YAML.
        "METRICS_PLATFORM_KAFKA_BROKERS": "[" + ", ".join(settings.kafka.bootstrap_servers.split(",")) + "]",
        "METRICS_PLATFORM_OTEL_SPANS_TOPIC": settings.kafka.spans_topic,
        "METRICS_PLATFORM_PII_SALT": settings.pii_salt(),
        "METRICS_PLATFORM_COLLECTOR_STORAGE_DIR": str(settings.state_dir / "otelcol" / "queue"),
    }


def healthy(settings: Settings) -> bool:
    try:
        status, _ = http_get(f"http://127.0.0.1:{settings.collector.health_port}/", timeout_s=1.0)
    except OSError:
        return False
    return status == 200


def start(settings: Settings, timeout_s: float = 60.0) -> None:
    """Build if needed, start the Collector and wait for its health check."""
    collector = daemon(settings)
    if collector.pid() is not None:
        return
    c = settings.collector
    require_free_ports(
        "the OpenTelemetry Collector",
        {
            "OTLP gRPC": c.otlp_grpc_port,
            "OTLP HTTP": c.otlp_http_port,
            "health": c.health_port,
            "metrics": c.metrics_port,
        },
    )
    binary = build(settings)
    collector.start([str(binary), "--config", str(CONFIG)], env={**os.environ, **environment(settings)})
    wait_until(lambda: healthy(settings), timeout_s, f"the Collector's health check on :{c.health_port}", collector)


def stop(settings: Settings) -> bool:
    # The Collector drains its queue to Kafka on SIGTERM; give it time.
    return daemon(settings).stop(timeout_s=60)
