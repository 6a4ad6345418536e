"""The embedded Apache Kafka broker: KRaft, one combined broker+controller node on loopback.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` and are cached under
``<cache>/kafka/<pom hash>/libs``; the storage is formatted once with a cluster id.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from pathlib import Path

from metrics_platform.paths import DEPLOY_DIR
from metrics_platform.settings import Settings
from metrics_platform.stack.process import Daemon, StackError, port_in_use, require_free_ports, wait_until

POM = DEPLOY_DIR / "kafka" / "pom.xml"
LOG4J = DEPLOY_DIR / "kafka" / "log4j2.properties"


def daemon(settings: Settings) -> Daemon:
    return Daemon("kafka", settings.run_dir, settings.log_dir)


def libs_dir(settings: Settings) -> Path:
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return settings.cache_dir / "kafka" / digest / "libs"


def install(settings: Settings) -> Path:
    """Fetch the broker's jars with Maven unless this pom's jars are already cached."""
    libs = libs_dir(settings)
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Kafka's jars; install it (apt-get install maven)")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        "mvn",
        "-q",
        "-B",
        f"-Dmaven.repo.local={settings.cache_dir / 'm2'}",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"fetching Kafka jars with {POM} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".complete").touch()
    return libs


def render_properties(settings: Settings, log_dir: Path) -> str:
    port, controller = _port(settings), settings.kafka.controller_port
    retention_ms = settings.kafka.retention_hours * 3600 * 1000
    return "\n".join(
        [
            "# Written by metrics-platform; edits are overwritten at start.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={log_dir}",
            f"num.partitions={settings.kafka.partitions}",
            f"log.retention.ms={retention_ms}",
            # Topics are created on purpose, with their partitions and retention (see topics.py).
            "auto.create.topics.enable=false",
            # The largest record the Collector may produce (one trace of one batch, as OTLP JSON); the
            # platform's topics inherit it. Replication must fetch such a record too.
            f"message.max.bytes={settings.kafka.max_message_bytes}",
            f"replica.fetch.max.bytes={settings.kafka.max_message_bytes}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def _port(settings: Settings) -> int:
    return int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1])


def start(settings: Settings, timeout_s: float = 90.0) -> None:
    """Install if needed, format the storage on first use, start the broker and wait for it."""
    broker = daemon(settings)
    if broker.pid() is not None:
        return
    require_free_ports("Kafka", {"broker": _port(settings), "controller": settings.kafka.controller_port})
    libs = install(settings)
    home = settings.state_dir / "kafka"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    properties.write_text(render_properties(settings, data))
    classpath = f"{libs}/*"
    java = shutil.which("java")
    if java is None:
        raise StackError("Java 17+ is needed to run Kafka; install it (apt-get install openjdk-17-jre-headless)")
    if not (data / "meta.properties").exists():
        cluster_id = _cluster_id()
        result = subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                # One argument: a random id may start with "-", which would read as an option.
                f"--cluster-id={cluster_id}",
                "-c",
                str(properties),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {data} failed:\n{result.stdout}{result.stderr}")
    broker.start(
        [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dkafka.logs.dir={settings.log_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(properties),
        ]
    )
    wait_until(lambda: _ready(settings), timeout_s, f"Kafka on {settings.kafka.bootstrap_servers}", broker)


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _ready(settings: Settings) -> bool:
    from metrics_platform.kafka_clients import admin

    # Probe the port first: a client dialing a closed port logs an error line per retry.
    if not port_in_use(_port(settings)):
        return False
    metadata = admin(settings.kafka).list_topics(timeout=2)
    return bool(metadata.brokers)


def stop(settings: Settings) -> bool:
    return daemon(settings).stop(timeout_s=60)
