"""The embedded Apache Kafka broker: KRaft, one combined broker+controller node on loopback.

The jars come from Maven Central through ``deploy/kafka/pom.xml`` and are cached under
``<cache>/kafka/<pom hash>/libs``; the storage is formatted once with a cluster id.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from metrics_platform.paths import DEPLOY_DIR
from metrics_platform.settings import Settings
from metrics_platform.stack import network
from metrics_platform.stack.clickhouse_users import write_private
from metrics_platform.stack.process import Daemon, StackError, port_in_use, require_free_ports, wait_until

POM = DEPLOY_DIR / "kafka" / "pom.xml"
LOG4J = DEPLOY_DIR / "kafka" / "log4j2.properties"
# One broker on a small node: a heap that starts small and stays under 256 MB (Kafka keeps its data in
# the page cache, not the heap), the serial collector (no GC threads idling beside a 2-core machine's
# other work), and the C1 compiler only (far less memory and start-up CPU; the broker's hot paths are
# I/O and checksums). Measured with bench/idle.py (with IDLE_OVERRIDES and MALLOC_ARENA_MAX below): idle
# RSS 185-225 MiB and ~1.4 % of a core, instead of 340-460 MiB and ~2.4 % with G1 and a 1 GiB heap.
# Out of memory means exit, so the supervisor starts a fresh broker instead of one limping on.
JVM_OPTIONS = (
    "-Xms64m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# What the broker process costs at idle beyond its heap, passed with the JVM options (``--override``):
# - the log cleaner (it compacts __consumer_offsets) takes a 128 MiB de-duplication buffer on the heap
#   by default; a few consumer groups' offsets need far less (a smaller buffer only means more passes);
# - the KRaft controller appends a no-op record (written and fsync'ed) to the metadata log every 0.5 s
#   so that brokers notice a stale controller; a single combined node has no one to tell;
# - thread pools sized for one node beside a 2-core machine's other work (defaults: 3 network threads per
#   listener, 8 request handlers, 10 background threads), each of which wakes several times a second.
IDLE_OVERRIDES = {
    "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
    "metadata.max.idle.interval.ms": "10000",
    "num.network.threads": "1",
    "num.io.threads": "2",
    "background.threads": "2",
}
# With SASL on, the broker's own account (towards its controller and itself); clients use the platform's user.
BROKER_USER = "kafka_broker"


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
    controller = settings.kafka.controller_port
    retention_ms = settings.kafka.retention_hours * 3600 * 1000
    return "\n".join(
        [
            "# Written by metrics-platform; edits are overwritten at start.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            *_listener_properties(settings),
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


def _listener_properties(settings: Settings) -> list[str]:
    """Loopback listeners: PLAINTEXT, or SASL_PLAINTEXT when the platform's Kafka settings ask for SASL.

    With SASL, clients log in with the configured mechanism (SCRAM by default; the user is created at each
    start, see ``_ensure_client_user``; the same user and password work with PLAIN, for the embedded
    ClickHouse) and the broker itself, towards its controller and itself, with
    SASL/PLAIN as an account of its own whose password lives in this file (mode 0600) and in the state
    directory's secrets. PLAIN needs no metadata, so an existing storage and a changed password just work.
    """
    port, controller = _port(settings), settings.kafka.controller_port
    listeners = "controller.listener.names=CONTROLLER"
    # Clients' listener on the configured address; the controller's stays on loopback (one local node).
    listen = network.host_port(settings.kafka.listen_host, port)
    advertised = network.host_port(settings.kafka.advertised_host, port)
    # The clients' listener speaks the configured protocol (SSL and SASL_SSL add TLS, tls_properties); the
    # loopback controller listener the same without TLS.
    protocol = settings.kafka.security_protocol
    if not settings.kafka.sasl:
        return [
            f"listeners={protocol}://{listen},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners={protocol}://{advertised}",
            listeners,
            f"listener.security.protocol.map={protocol}:{protocol},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={protocol}",
            *tls_properties(settings),
        ]
    k = settings.kafka
    broker_password = _broker_password(settings)
    # The platform's user may log in with PLAIN too: the embedded ClickHouse's Kafka client knows no other
    # mechanism (clickhouse_server.engine_kafka_properties).
    plain_users = {BROKER_USER: broker_password, k.sasl_username: k.sasl_password}
    for value in (k.sasl_username, k.sasl_password):
        if any(c in value for c in '"\\\n'):
            raise StackError("the Kafka SASL user name and password must not hold quotes, backslashes or line breaks")
    if k.sasl_username == BROKER_USER:
        raise StackError(f"METRICS_PLATFORM_KAFKA_SASL_USERNAME cannot be {BROKER_USER!r}, the broker's own account")
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule required"
    own = f'username="{BROKER_USER}" password="{broker_password}"'
    accepted = " ".join(f'user_{name}="{password}"' for name, password in plain_users.items())
    mechanisms = sorted({k.sasl_mechanism, "PLAIN"})
    scram = []
    if k.sasl_mechanism.startswith("SCRAM-"):
        module = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        scram.append(f"listener.name.{protocol.lower()}.{k.sasl_mechanism.lower()}.sasl.jaas.config={module}")
    return [
        f"listeners={protocol}://{listen},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners={protocol}://{advertised}",
        listeners,
        f"listener.security.protocol.map={protocol}:{protocol},CONTROLLER:SASL_PLAINTEXT",
        f"inter.broker.listener.name={protocol}",
        *tls_properties(settings),
        f"sasl.enabled.mechanisms={','.join(mechanisms)}",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        f"listener.name.{protocol.lower()}.plain.sasl.jaas.config={plain} {own} {accepted};",
        *scram,
        # The controller listener admits the broker's account only.
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f'listener.name.controller.plain.sasl.jaas.config={plain} {own} user_{BROKER_USER}="{broker_password}";',
    ]


def keystore_path(settings: Settings) -> Path:
    """The broker's TLS key and certificate chain in one PEM file (written at start, mode 0600)."""
    return settings.state_dir / "kafka" / "keystore.pem"


def tls_properties(settings: Settings) -> list[str]:
    """The clients' listener's TLS (SSL, SASL_SSL): the broker's certificate (METRICS_PLATFORM_KAFKA_BROKER_TLS_CERT
    and _KEY, PEM) and, for its connections to itself, the platform's CA (METRICS_PLATFORM_KAFKA_SSL_CA_LOCATION)."""
    if not settings.kafka.tls:
        return []
    return [
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={keystore_path(settings)}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={settings.kafka.ssl_ca_location}",
        # Clients' certificates are checked when they present one (mutual TLS is the clients' choice).
        "ssl.client.auth=requested",
    ]


def _write_keystore(settings: Settings) -> None:
    """Join the broker's key and certificate into the PEM keystore Kafka reads."""
    k = settings.kafka
    if not k.tls:
        return
    try:
        pem = Path(k.broker_tls_key).read_text() + "\n" + Path(k.broker_tls_cert).read_text()
    except OSError as exc:
        raise StackError(f"reading the Kafka broker's TLS key or certificate failed: {exc}") from exc
    write_private(keystore_path(settings), pem)


def _broker_password(settings: Settings) -> str:
    return settings.generated_secret("kafka_broker_password")


def _broker_client_config(settings: Settings) -> dict[str, object]:
    """librdkafka settings for the broker's own account (readiness probe, creating the SCRAM user)."""
    from metrics_platform.kafka_clients import LIBRDKAFKA_LOG

    config: dict[str, object] = {"bootstrap.servers": settings.kafka.bootstrap_servers, "logger": LIBRDKAFKA_LOG}
    if settings.kafka.tls:
        config |= {
            "security.protocol": settings.kafka.security_protocol.lower(),
            "ssl.ca.location": settings.kafka.ssl_ca_location,
        }
    if settings.kafka.sasl:
        config |= {
            "security.protocol": settings.kafka.security_protocol.lower(),
            "sasl.mechanism": "PLAIN",
            "sasl.username": BROKER_USER,
            "sasl.password": _broker_password(settings),
        }
    return config


def _ensure_client_user(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create (or update) the platform's SCRAM user, then check that its login works.

    SCRAM credentials live in the cluster's metadata; setting them at every start makes a storage
    formatted before SASL was switched on, or a changed password, work without formatting anew.
    """
    from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    from metrics_platform.kafka_clients import admin

    k = settings.kafka
    if not k.sasl:
        return
    if k.sasl_mechanism.startswith("SCRAM-"):
        mechanism = ScramMechanism[k.sasl_mechanism.replace("-", "_")]
        credential = ScramCredentialInfo(mechanism, 8192)
        upsert = UserScramCredentialUpsertion(k.sasl_username, credential, k.sasl_password.encode())
        broker_admin = AdminClient(_broker_client_config(settings))  # kept alive until the futures resolve
        futures = broker_admin.alter_user_scram_credentials([upsert])
        for user, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                raise StackError(f"creating Kafka's SCRAM user {user!r} failed: {exc}") from exc

    def logs_in() -> bool:
        return bool(admin(k).list_topics(timeout=2).brokers)

    wait_until(logs_in, timeout_s, f"Kafka login as {k.sasl_username!r} ({k.sasl_mechanism})")


def _port(settings: Settings) -> int:
    return int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1])


def start(settings: Settings, timeout_s: float = 90.0) -> None:
    """Install if needed, format the storage on first use, start the broker and wait for it."""
    broker = daemon(settings)
    if broker.pid() is not None:
        return
    require_free_ports("Kafka", {"broker": _port(settings), "controller": settings.kafka.controller_port})
    login = "SASL logins required" if settings.kafka.sasl else "no authentication: anyone can read and write topics"
    protection = f"{'TLS' if settings.kafka.tls else 'no TLS: records travel in clear'}; {login}"
    network.warn_if_exposed("Kafka", settings.kafka.listen_host, {"broker": _port(settings)}, protection)
    libs = install(settings)
    home = settings.state_dir / "kafka"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    # Owner only: with SASL it holds the broker's password.
    write_private(properties, render_properties(settings, data))
    _write_keystore(settings)
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
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dkafka.logs.dir={settings.log_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(properties),
            *(arg for key, value in IDLE_OVERRIDES.items() for arg in ("--override", f"{key}={value}")),
        ],
        # glibc gives each of the broker's ~100 threads its own malloc arena; two are plenty.
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )
    wait_until(lambda: _ready(settings), timeout_s, f"Kafka on {settings.kafka.bootstrap_servers}", broker)
    _ensure_client_user(settings)


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _ready(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    # Probe the port first: a client dialing a closed port logs an error line per retry.
    if not port_in_use(_port(settings), network.connect_host(settings.kafka.listen_host)):
        return False
    # As the broker's own account: the platform's SCRAM user may not exist yet.
    metadata = AdminClient(_broker_client_config(settings)).list_topics(timeout=2)
    return bool(metadata.brokers)


def stop(settings: Settings) -> bool:
    return daemon(settings).stop(timeout_s=60)
