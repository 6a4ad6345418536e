"""The OpenTelemetry Collector: built from Go modules at pinned versions, run with our config.

``deploy/otelcol`` holds the distribution (go.mod, main.go, our one processor) and ``config.yaml``.
The binary is cached under ``<cache>/otelcol/<hash of the build files>/`` so a rebuild happens only
when the sources change; Go's module and build caches live under ``<cache>/go`` for the same reason.
The PII processor is rendered from ``pii-policy.toml`` at every start (see ``pii_policy``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from metrics_platform.paths import DEPLOY_DIR
from metrics_platform.settings import Settings
from metrics_platform.stack import network, pii_policy
from metrics_platform.stack.process import Daemon, StackError, http_get, require_free_ports, wait_until

SOURCE_DIR = DEPLOY_DIR / "otelcol"
CONFIG = SOURCE_DIR / "config.yaml"
MIB = 1024 * 1024
# Kafka record bytes per byte of a batch (protobuf): records are OTLP JSON, measured at 1.0-2.2x
# for real spans (deploy/otelcol/README.md, "Size limits"); the rest is margin for escaping.
JSON_EXPANSION_BUDGET = 3


def _build_files(source_dir: Path = SOURCE_DIR) -> list[Path]:
    return sorted([source_dir / "go.mod", source_dir / "go.sum", *source_dir.rglob("*.go")])


def daemon(settings: Settings) -> Daemon:
    return Daemon("otelcol", settings.run_dir, settings.log_dir)


def binary_path(settings: Settings, source_dir: Path = SOURCE_DIR) -> Path:
    digest = hashlib.sha256()
    for path in _build_files(source_dir):
        digest.update(str(path.relative_to(source_dir)).encode() + b"\0" + path.read_bytes())
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


def build(settings: Settings, source_dir: Path = SOURCE_DIR) -> Path:
    """Build the Collector distribution in ``source_dir`` (ours by default; bench/peer_otelcol is another)
    unless a binary for its build files is cached; returns its path."""
    binary = binary_path(settings, source_dir)
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise StackError("Go is needed to build the OpenTelemetry Collector (deploy/otelcol); install Go 1.26+")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    result = subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."],
        cwd=source_dir,
        env=go_env(settings),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"building the Collector in {source_dir} failed:\n{result.stderr[-4000:]}")
    partial.rename(binary)
    return binary


def batch_max_bytes(settings: Settings) -> int:
    """Largest batch read from the queue: a whole request plus room for what the PII step adds."""
    return settings.collector.max_request_mib * MIB * 5 // 4


def max_record_bytes(settings: Settings) -> int:
    """The producer's record limit: a little below the broker's and topic's, which count the record
    batch after compression (lz4 can grow incompressible data slightly)."""
    return settings.kafka.max_message_bytes - settings.kafka.max_message_bytes // 64


def check_size_limits(settings: Settings) -> None:
    """Refuse limits under which an accepted span could be too large for Kafka (dropped after a 200)."""
    record_limit = max_record_bytes(settings)
    needed = batch_max_bytes(settings) * JSON_EXPANSION_BUDGET
    if record_limit < needed:
        raise StackError(
            f"METRICS_PLATFORM_KAFKA_MAX_MESSAGE_BYTES={settings.kafka.max_message_bytes} is too small for "
            f"METRICS_PLATFORM_OTLP_MAX_REQUEST_MIB={settings.collector.max_request_mib}: a batch of up to "
            f"{batch_max_bytes(settings)} bytes becomes Kafka records of up to ~{needed} bytes of OTLP JSON; "
            f"raise the record limit (and the broker's and topic's) or lower the request limit"
        )


def _salt(settings: Settings) -> str:
    salt = settings.pii_salt()
    # spanredaction/pii reads it from its environment and refuses to start without one; never echo it.
    if not salt:
        raise StackError(f"{pii_policy.SALT_ENV} must not be empty")
    return salt


# Go's garbage collector, tuned for the ingest path. With the default GOGC=100 a collection ran whenever the
# heap doubled, and at saturation it (and what it does to sync.Pool: the Kafka producer's lz4 buffers were
# allocated anew after each one) cost a fifth of the Collector's CPU: 20.3 µs per span at 43,000 spans/s,
# against 16.3-16.6 µs at 47,000-52,000 with these (bench/README.md). The heap may now grow to five times
# what is live; GOMEMLIMIT makes collections frequent again well before memory_limiter's soft limit
# (config.yaml: 512 - 128 = 384 MiB), so the limiter does not refuse data because garbage waits. Peak RSS at
# saturation 245-270 MiB; at idle after traffic ~95 MiB instead of ~60.
GO_RUNTIME = {"GOGC": "400", "GOMEMLIMIT": "320MiB"}


def environment(settings: Settings) -> dict[str, str]:
    """The Collector's environment: the variables deploy/otelcol/config.yaml reads and Go's runtime settings;
    every one is always set."""
    c = settings.collector
    return {
        "METRICS_PLATFORM_OTLP_GRPC_PORT": str(c.otlp_grpc_port),
        "METRICS_PLATFORM_OTLP_HTTP_PORT": str(c.otlp_http_port),
        "METRICS_PLATFORM_COLLECTOR_HEALTH_PORT": str(c.health_port),
        "METRICS_PLATFORM_COLLECTOR_METRICS_PORT": str(c.metrics_port),
        # A YAML flow list: the Collector parses a whole-value env reference as YAML.
        "METRICS_PLATFORM_KAFKA_BROKERS": "[" + ", ".join(settings.kafka.bootstrap_servers.split(",")) + "]",
        "METRICS_PLATFORM_OTEL_SPANS_TOPIC": settings.kafka.spans_topic,
        # the variable the rendered policy names (hash_salt_env)
        pii_policy.SALT_ENV: _salt(settings),
        "METRICS_PLATFORM_COLLECTOR_STORAGE_DIR": str(queue_dir(settings)),
        "METRICS_PLATFORM_COLLECTOR_QUEUE_FSYNC": "true" if c.queue_fsync else "false",
        "METRICS_PLATFORM_OTLP_MAX_REQUEST_MIB": str(c.max_request_mib),
        "METRICS_PLATFORM_OTLP_MAX_REQUEST_BYTES": str(c.max_request_mib * MIB),
        "METRICS_PLATFORM_COLLECTOR_BATCH_MAX_BYTES": str(batch_max_bytes(settings)),
        "METRICS_PLATFORM_COLLECTOR_MAX_RECORD_BYTES": str(max_record_bytes(settings)),
        **GO_RUNTIME,
        **kafka_security_environment(settings),
        **otlp_network_environment(settings),
    }


def otlp_network_environment(settings: Settings) -> dict[str, str]:
    """The OTLP receivers' listen address as config.yaml reads it (containers' listen overlay: the same name)."""
    # An empty host means every interface; the config's ${env:...:-127.0.0.1} would read it as unset.
    return {"METRICS_PLATFORM_COLLECTOR_LISTEN_HOST": network.address(settings.collector.listen_host or "0.0.0.0")}


def render_network_config(settings: Settings) -> dict | None:
    """The receivers' ``tls`` and ``auth`` blocks and the bearertokenauth extension, merged over config.yaml
    as a further ``--config``; None when both are off (a ``tls`` key, even null, would switch TLS on)."""
    c = settings.collector
    if not c.tls_cert and not c.auth:
        return None
    protocol: dict[str, object] = {}
    if c.tls_cert:
        protocol["tls"] = {"cert_file": c.tls_cert, "key_file": c.tls_key}
    config: dict[str, object] = {"receivers": {"otlp": {"protocols": {"grpc": protocol, "http": protocol}}}}
    if c.auth:
        protocol["auth"] = {"authenticator": "bearertokenauth"}
        # The file is re-read when it changes: tokens rotate without a restart.
        config["extensions"] = {"bearertokenauth": {"filename": str(network.otlp_token_file(settings))}}
        # Lists are replaced, not merged: this repeats config.yaml's extensions.
        config["service"] = {"extensions": ["health_check", "file_storage", "bearertokenauth"]}
    return config


def write_network_config(settings: Settings) -> Path | None:
    """Write ``render_network_config`` to ``<state>/otelcol/otlp-network.json``; its path, or None."""
    config = render_network_config(settings)
    if config is None:
        return None
    out = settings.state_dir / "otelcol" / "otlp-network.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config, indent=2) + "\n")
    return out


def otlp_protection(settings: Settings) -> str:
    """What guards the OTLP receivers, for the exposure warning."""
    c = settings.collector
    tls = "TLS" if c.tls_cert else "no TLS: spans travel in clear"
    auth = "bearer token required" if c.auth else "no authentication: anyone who reaches it can send spans"
    return f"{tls}; {auth}"


def kafka_security_environment(settings: Settings) -> dict[str, str]:
    """The kafka exporter's ``auth`` and ``tls`` blocks (JSON, which the Collector parses as YAML) from
    the platform's Kafka security settings; empty for PLAINTEXT."""
    k = settings.kafka
    auth, tls = "", ""
    if k.sasl:
        # The Collector could take a "$" for the start of a variable reference.
        if "$" in k.sasl_password:
            raise StackError("METRICS_PLATFORM_KAFKA_SASL_PASSWORD must not contain '$' (the Collector expands it)")
        sasl = {"mechanism": k.sasl_mechanism, "username": k.sasl_username, "password": k.sasl_password}
        auth = json.dumps({"sasl": sasl})
    if k.tls:
        files = {"ca_file": k.ssl_ca_location, "cert_file": k.ssl_certificate_location, "key_file": k.ssl_key_location}
        tls = json.dumps({key: value for key, value in files.items() if value})
    return {"METRICS_PLATFORM_COLLECTOR_KAFKA_AUTH": auth, "METRICS_PLATFORM_COLLECTOR_KAFKA_TLS": tls}


def queue_dir(settings: Settings) -> Path:
    """Where the persistent sending queue (file_storage) keeps its files."""
    return settings.state_dir / "otelcol" / "queue"


def render_pii_config(settings: Settings) -> Path:
    """Render the PII policy into the processor config file passed as the second ``--config``."""
    out = settings.state_dir / "otelcol" / "pii-processors.json"
    try:
        return pii_policy.write(settings.collector.pii_policy, settings.collector.pii_keep_content, out)
    except pii_policy.PiiPolicyError as exc:
        raise StackError(str(exc)) from exc


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
    check_size_limits(settings)
    receivers = {"OTLP gRPC": c.otlp_grpc_port, "OTLP HTTP": c.otlp_http_port}
    network.warn_if_exposed("the OpenTelemetry Collector", c.listen_host, receivers, otlp_protection(settings))
    env = {**os.environ, **environment(settings)}
    pii_config = render_pii_config(settings)
    network_config = write_network_config(settings)
    # The supervisor restarts a crashed Collector with these same files: a copy, so an edit to the
    # checkout's config.yaml cannot go live at the next crash (only at the next `up`).
    config = settings.state_dir / "otelcol" / "config.yaml"
    shutil.copyfile(CONFIG, config)
    configs = [config, pii_config, *([network_config] if network_config else [])]
    binary = build(settings)
    collector.start([str(binary), *(arg for path in configs for arg in ("--config", str(path)))], env=env)
    wait_until(lambda: healthy(settings), timeout_s, f"the Collector's health check on :{c.health_port}", collector)


def stop(settings: Settings) -> bool:
    # The Collector drains its queue to Kafka on SIGTERM; give it time.
    return daemon(settings).stop(timeout_s=60)
