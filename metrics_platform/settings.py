"""The one settings object, read from the environment.

Every process (CLI, Dagster, tests, benchmarks) builds it with ``Settings.from_env()`` so the
same variables configure all of them. Defaults run everything embedded on loopback.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from metrics_platform.paths import PROJECT_ROOT
from metrics_platform.stack.network import connect_host, host_port

PREFIX = "METRICS_PLATFORM_"
N = TypeVar("N", int, float)


def _env(name: str, default: str) -> str:
    return os.environ.get(PREFIX + name, default)


def _env_number(name: str, default: N) -> N:
    """A numeric variable, parsed as the default's type; a bad value names the variable."""
    raw = os.environ.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return type(default)(raw)
    except ValueError:
        raise ValueError(
            f"{PREFIX}{name}={raw!r} is not {'an integer' if isinstance(default, int) else 'a number'}"
        ) from None


def _env_bool(name: str, default: bool) -> bool:
    """A true/false variable (1/0, yes/no also accepted); a bad value names the variable."""
    raw = os.environ.get(PREFIX + name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{PREFIX}{name}={raw!r} is not true or false")


@dataclass(frozen=True)
class ClickHouseSettings:
    """How to reach ClickHouse; ``embedded`` means this platform starts the server itself."""

    host: str
    http_port: int
    tcp_port: int
    user: str
    password: str = field(repr=False)
    database: str
    secure: bool
    embedded: bool
    # The read-only account for dashboards (Superset) and analysts. With the embedded server both
    # accounts are declared by the platform (stack/clickhouse_users.py) and their passwords are
    # generated into the state directory; an external server's operator creates them.
    reader_user: str = "metrics_reader"
    reader_password: str = field(default="", repr=False)
    # The reader's quota per hour on the embedded server (queries; errors are a tenth of it).
    reader_queries_per_hour: int = 5000
    # Where the embedded server listens (METRICS_PLATFORM_CLICKHOUSE_LISTEN_HOST), and the CA bundle clients
    # verify a TLS server with (METRICS_PLATFORM_CLICKHOUSE_CA_CERT; empty: the system's). The embedded engine
    # cannot serve TLS itself (README, "Network and TLS"): put a TLS proxy in front of it or use a real server.
    listen_host: str = "127.0.0.1"
    ca_cert: str = ""

    @property
    def url(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.host}:{self.http_port}"


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka, and the topics this platform owns."""

    bootstrap_servers: str
    # The broker list as ClickHouse's Kafka engine must dial it (differs in containers).
    clickhouse_brokers: str
    controller_port: int
    embedded: bool
    spans_topic: str
    events_topic: str
    partitions: int
    retention_hours: int
    consumer_group_prefix: str
    # librdkafka properties for SASL/TLS clusters, from METRICS_PLATFORM_KAFKA_PROP_<NAME>.
    client_properties: dict[str, str] = field(default_factory=dict, repr=False)
    # Largest record: the Collector's producer limit, the embedded broker's message.max.bytes and
    # the topics' max.message.bytes.
    max_message_bytes: int = 16 * 1024 * 1024
    # Security of every Kafka connection, from one set of settings: the Python clients, the Collector's
    # exporter and ClickHouse's Kafka engine all use them (METRICS_PLATFORM_KAFKA_SECURITY_PROTOCOL, ...).
    # The embedded broker serves PLAINTEXT or SASL_PLAINTEXT (SCRAM) on loopback; SSL is for external clusters.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = "metrics_platform"
    sasl_password: str = field(default="", repr=False)
    # CA bundle to verify the brokers (SSL, SASL_SSL; empty: the system's), and a client certificate and
    # key for mutual TLS.
    ssl_ca_location: str = ""
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    # The embedded broker's listen address (METRICS_PLATFORM_KAFKA_LISTEN_HOST) and the host it advertises to
    # clients (METRICS_PLATFORM_KAFKA_ADVERTISED_HOST; default: the listen host, or this machine's name when it
    # listens on every interface).
    listen_host: str = "127.0.0.1"
    advertised_host: str = "127.0.0.1"
    # The embedded broker's own certificate and key (PEM) when it serves SSL or SASL_SSL
    # (METRICS_PLATFORM_KAFKA_BROKER_TLS_CERT/_KEY); clients verify it with ssl_ca_location.
    broker_tls_cert: str = ""
    broker_tls_key: str = ""

    @property
    def sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def librdkafka_security(self) -> dict[str, str]:
        """The security settings as librdkafka properties (Python clients, ClickHouse's Kafka engine),
        with ``METRICS_PLATFORM_KAFKA_PROP_*`` on top."""
        props = {"security.protocol": self.security_protocol.lower()}
        if self.sasl:
            props |= {
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username,
                "sasl.password": self.sasl_password,
            }
        if self.tls:
            paths = {
                "ssl.ca.location": self.ssl_ca_location,
                "ssl.certificate.location": self.ssl_certificate_location,
                "ssl.key.location": self.ssl_key_location,
            }
            props |= {key: value for key, value in paths.items() if value}
        return props | self.client_properties


@dataclass(frozen=True)
class CollectorSettings:
    """Ports of the OpenTelemetry Collector this platform runs."""

    otlp_grpc_port: int
    otlp_http_port: int
    health_port: int
    metrics_port: int
    # Largest OTLP request accepted (gRPC message, HTTP body after decompression); larger ones are
    # refused at the receiver. Kept well below the Kafka record limit (see deploy/otelcol/README.md).
    max_request_mib: int = 4
    # fsync every write of the persistent queue: an acknowledged span then survives a machine crash,
    # not only a Collector crash.
    queue_fsync: bool = True
    # The PII policy file, and whether prompt/completion content is kept (redacted) instead of dropped.
    pii_policy: Path = PROJECT_ROOT / "deploy" / "otelcol" / "pii-policy.toml"
    pii_keep_content: bool = False
    # The OTLP receivers' address (METRICS_PLATFORM_COLLECTOR_LISTEN_HOST; health and metrics stay on loopback),
    # their TLS certificate and key (METRICS_PLATFORM_OTLP_TLS_CERT/_KEY, both or neither), the CA the
    # platform's own senders verify them with (_OTLP_TLS_CA), and bearer-token authentication
    # (_OTLP_AUTH; token file _OTLP_TOKEN_FILE, else generated into the state directory: stack/network.py).
    listen_host: str = "127.0.0.1"
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    auth: bool = False
    token_file: str = ""

    @property
    def otlp_http_endpoint(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host_port(connect_host(self.listen_host), self.otlp_http_port)}"


@dataclass(frozen=True)
class AlertSettings:
    """Alert rules (metrics_platform/alerting/), where their links point, the SMTP server for e-mail."""

    webhook_url: str = field(repr=False)
    # The rules file (deploy/alerts/README.md); a bad file is reported and the last good rules stay.
    rules_path: Path
    # Superset's address as people open it (behind a proxy, say): alert links point there.
    dashboard_url: str
    smtp_host: str = ""  # empty: e-mail channels are skipped
    smtp_port: int = 25
    smtp_sender: str = "metrics-platform@localhost"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False


@dataclass(frozen=True)
class SupersetSettings:
    """Apache Superset, the platform's dashboards (own virtualenv, started by stack/superset.py)."""

    port: int
    admin_user: str
    # Superset's metadata database (SQLAlchemy URI); empty means SQLite under the state directory.
    database_uri: str = field(repr=False)
    # The read-only ClickHouse user Superset queries as: the platform's reader (ClickHouseSettings)
    # unless METRICS_PLATFORM_SUPERSET_CLICKHOUSE_USER/_PASSWORD name another one.
    clickhouse_user: str
    clickhouse_password: str = field(repr=False)
    # Origins (https://portal.example.com) allowed to frame embedded dashboards, besides Superset's own.
    embed_origins: tuple[str, ...]
    # The demo customer portal (metrics-platform dashboards portal), whose origin may always frame them.
    portal_port: int
    # Where Superset's web server listens (METRICS_PLATFORM_SUPERSET_LISTEN_HOST).
    listen_host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{host_port(connect_host(self.listen_host), self.port)}"

    @property
    def frame_origins(self) -> tuple[str, ...]:
        """Origins whose pages may embed dashboards: the demo portal's and the configured ones."""
        return (f"http://127.0.0.1:{self.portal_port}", f"http://localhost:{self.portal_port}", *self.embed_origins)


@dataclass(frozen=True)
class IngestSettings:
    """How ClickHouse validates, holds back and finalizes spans (templated into sql/ at migration)."""

    # How long a span waits in span_inbox for its ancestors before it is finalized into agent_events.
    attribution_delay_s: int
    # How far before a batch the finalizer looks for ancestors and earlier copies of its spans.
    context_lookback_s: int
    inbox_retention_hours: int
    # The most rows one finalizer batch takes: bounds its memory (~150 MB per 500,000) and, with the interval,
    # the rate it keeps up with (sql/0020).
    finalizer_max_rows: int
    # How often the finalizer looks for spans that have waited long enough (each look costs a query).
    finalizer_interval_s: int
    # Spans starting further in the future than this are dead-lettered (clock skew allowance).
    max_future_s: int


@dataclass(frozen=True)
class ClusterSettings:
    """The cluster layer (metrics_platform/cluster.py): names, and the ports of a local cluster's extra servers."""

    # The ClickHouse cluster name (remote_servers, Distributed tables, ON CLUSTER).
    name: str = "metrics"
    # Where readers (Superset, Dagster checks, the CLI, dashboard SQL) find the Distributed tables on a
    # cluster; empty: the platform's database (single node).
    read_database: str = ""
    # Brokers 2.. of a local cluster listen from here, ClickHouse shards 2.. from here + 100.
    port_base: int = 11000
    # Real ClickHouse clusters: migrations render Replicated*MergeTree engines (METRICS_PLATFORM_CLICKHOUSE_REPLICATED)
    # and DDL ON CLUSTER <name> (METRICS_PLATFORM_CLICKHOUSE_ON_CLUSTER; off inside a Replicated database).
    replicated: bool = False
    on_cluster: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one platform instance."""

    state_dir: Path
    cache_dir: Path
    clickhouse: ClickHouseSettings
    kafka: KafkaSettings
    collector: CollectorSettings
    retention_days: int
    kafka_num_consumers: int
    kafka_flush_interval_ms: int
    kafka_poll_timeout_ms: int
    history_dir: Path
    history_start_date: str
    alerting: AlertSettings
    dagster_port: int
    ingest: IngestSettings
    # Local model prices on top of the genai-prices dataset (metrics_platform/prices/overrides.py).
    price_overrides: Path
    superset: SupersetSettings
    # Where the Dagster webserver listens (METRICS_PLATFORM_DAGSTER_LISTEN_HOST).
    dagster_listen_host: str = "127.0.0.1"
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @classmethod
    def from_env(cls) -> Settings:
        """Read all settings from ``METRICS_PLATFORM_*`` (and ``CLICKHOUSE_*``) variables."""
        state_dir = Path(_env("STATE_DIR", str(PROJECT_ROOT / ".state"))).resolve()
        cache_dir = Path(_env("CACHE_DIR", str(PROJECT_ROOT / ".cache"))).resolve()
        clickhouse = _clickhouse_from_env(state_dir)
        settings = cls(
            state_dir=state_dir,
            cache_dir=cache_dir,
            clickhouse=clickhouse,
            kafka=_kafka_from_env(state_dir),
            collector=CollectorSettings(
                otlp_grpc_port=_env_number("OTLP_GRPC_PORT", 4317),
                otlp_http_port=_env_number("OTLP_HTTP_PORT", 4318),
                health_port=_env_number("COLLECTOR_HEALTH_PORT", 13133),
                metrics_port=_env_number("COLLECTOR_METRICS_PORT", 8888),
                max_request_mib=_env_number("OTLP_MAX_REQUEST_MIB", 4),
                queue_fsync=_env_bool("COLLECTOR_QUEUE_FSYNC", True),
                pii_policy=Path(_env("PII_POLICY", str(CollectorSettings.pii_policy))).resolve(),
                pii_keep_content=_env_bool("PII_KEEP_CONTENT", False),
                **_otlp_network_from_env(),
            ),
            retention_days=_env_number("RETENTION_DAYS", 90),
            # One consumer per topic suits a 2-core node; raise it up to the partition count.
            kafka_num_consumers=_env_number("KAFKA_NUM_CONSUMERS", 1),
            kafka_flush_interval_ms=_env_number("KAFKA_FLUSH_INTERVAL_MS", 500),
            # A consumer inserts its block once a poll waits this long for more (and idles as long).
            kafka_poll_timeout_ms=_env_number("KAFKA_POLL_TIMEOUT_MS", 100),
            history_dir=Path(_env("HISTORY_DIR", str(PROJECT_ROOT / "data" / "history"))).resolve(),
            # First day the replay asset offers as a partition; empty: the first day with a history file.
            history_start_date=_env("HISTORY_START_DATE", ""),
            dagster_port=_env_number("DAGSTER_PORT", 3000),
            price_overrides=Path(
                _env("PRICE_OVERRIDES", str(PROJECT_ROOT / "data" / "prices" / "overrides.yaml"))
            ).resolve(),
            ingest=IngestSettings(
                attribution_delay_s=_env_number("ATTRIBUTION_DELAY_SECONDS", 30),
                context_lookback_s=_env_number("CONTEXT_LOOKBACK_SECONDS", 60),
                inbox_retention_hours=_env_number("INBOX_RETENTION_HOURS", 24),
                finalizer_max_rows=_env_number("FINALIZER_MAX_ROWS", 500_000),
                finalizer_interval_s=_env_number("FINALIZER_INTERVAL_SECONDS", 5),
                max_future_s=_env_number("MAX_FUTURE_SECONDS", 3600),
            ),
            alerting=AlertSettings(
                webhook_url=_env("ALERT_WEBHOOK_URL", ""),
                rules_path=Path(_env("ALERT_RULES", str(PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml"))).resolve(),
                dashboard_url=_env("ALERT_DASHBOARD_URL", f"http://127.0.0.1:{_env_number('SUPERSET_PORT', 8088)}"),
                smtp_host=_env("SMTP_HOST", ""),
                smtp_port=_env_number("SMTP_PORT", 25),
                smtp_sender=_env("SMTP_FROM", "metrics-platform@localhost"),
                smtp_user=_env("SMTP_USER", ""),
                smtp_password=_env("SMTP_PASSWORD", ""),
                smtp_starttls=_env_bool("SMTP_STARTTLS", False),
            ),
            superset=SupersetSettings(
                port=_env_number("SUPERSET_PORT", 8088),
                admin_user=_env("SUPERSET_ADMIN_USER", "admin"),
                database_uri=_env("SUPERSET_DATABASE_URI", ""),
                # Superset reads as the platform's read-only account unless given one of its own.
                clickhouse_user=_env("SUPERSET_CLICKHOUSE_USER", clickhouse.reader_user),
                clickhouse_password=_env("SUPERSET_CLICKHOUSE_PASSWORD", clickhouse.reader_password),
                embed_origins=tuple(o.strip() for o in _env("SUPERSET_EMBED_ORIGINS", "").split(",") if o.strip()),
                portal_port=_env_number("SUPERSET_PORTAL_PORT", 8089),
                listen_host=_env("SUPERSET_LISTEN_HOST", "127.0.0.1"),
            ),
            dagster_listen_host=_env("DAGSTER_LISTEN_HOST", "127.0.0.1"),
            cluster=ClusterSettings(
                name=_env("CLUSTER_NAME", "metrics"),
                read_database=_env("CLICKHOUSE_READ_DATABASE", ""),
                port_base=_env_number("CLUSTER_PORT_BASE", 11000),
                replicated=_env_bool("CLICKHOUSE_REPLICATED", False),
                on_cluster=_env_bool("CLICKHOUSE_ON_CLUSTER", False),
            ),
        )
        ingest = settings.ingest
        # The inbox holds what the finalizer still reads: spans waiting plus their lookback window.
        if ingest.inbox_retention_hours * 3600 < ingest.attribution_delay_s + ingest.context_lookback_s + 3600:
            raise ValueError(
                f"{PREFIX}INBOX_RETENTION_HOURS={ingest.inbox_retention_hours} must exceed the attribution delay "
                f"({ingest.attribution_delay_s} s) plus the context lookback ({ingest.context_lookback_s} s) by an hour"
            )
        # Consumers beyond the partition count sit idle (the original design ran 4 on 3 partitions).
        if settings.kafka_num_consumers > settings.kafka.partitions:
            raise ValueError(
                f"{PREFIX}KAFKA_NUM_CONSUMERS={settings.kafka_num_consumers} exceeds "
                f"{PREFIX}KAFKA_PARTITIONS={settings.kafka.partitions}: the extra consumers would get no partition"
            )
        return settings

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def pii_salt(self) -> str:
        """The secret key for hashing user ids: from the environment, else generated once.

        A generated key is kept in the state directory (mode 0600), never in the repository, so
        hashes stay stable across restarts of one installation.
        """
        from_env = os.environ.get(PREFIX + "PII_SALT")
        if from_env:
            return from_env
        path = self.state_dir / "secrets" / "pii_salt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        return path.read_text().strip()

    def generated_secret(self, name: str) -> str:
        """A random secret kept in ``<state>/secrets/<name>`` (mode 0600), created on first use."""
        return _generated_secret(self.state_dir, name)


def _generated_secret(state_dir: Path, name: str) -> str:
    """A random secret kept in ``<state_dir>/secrets/<name>`` (mode 0600), created on first use."""
    path = state_dir / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: a process starting at the same moment sees
        # either no file or the whole secret, and the first link wins.
        staging = path.with_name(f".{name}.{os.getpid()}")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    return path.read_text().strip()


def _clickhouse_from_env(state_dir: Path) -> ClickHouseSettings:
    reader = {
        "reader_user": _env("CLICKHOUSE_READER_USER", "metrics_reader"),
        "reader_password": _env("CLICKHOUSE_READER_PASSWORD", ""),
        "reader_queries_per_hour": _env_number("CLICKHOUSE_READER_QUERIES_PER_HOUR", 5000),
    }
    network = {"listen_host": _env("CLICKHOUSE_LISTEN_HOST", "127.0.0.1"), "ca_cert": _env("CLICKHOUSE_CA_CERT", "")}
    url = os.environ.get("CLICKHOUSE_URL", "")
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"CLICKHOUSE_URL={url!r} must look like http(s)://host:port")
        secure = parsed.scheme == "https"
        return ClickHouseSettings(
            host=parsed.hostname,
            http_port=parsed.port or (8443 if secure else 8123),
            tcp_port=_env_number("CLICKHOUSE_TCP_PORT", 9000),
            user=parsed.username or os.environ.get("CLICKHOUSE_USER", "default"),
            password=parsed.password or os.environ.get("CLICKHOUSE_PASSWORD", ""),
            database=parsed.path.strip("/") or os.environ.get("CLICKHOUSE_DATABASE", "default"),
            secure=secure,
            embedded=False,
            **reader,
            **network,
        )
    host = os.environ.get("CLICKHOUSE_HOST", "")
    if host:
        # Naming a host means a server someone else runs, with its own accounts.
        user, password = os.environ.get("CLICKHOUSE_USER", "default"), os.environ.get("CLICKHOUSE_PASSWORD", "")
    else:
        # The embedded server declares the platform's accounts itself, with generated passwords.
        user = os.environ.get("CLICKHOUSE_USER", "") or "metrics_writer"
        password = os.environ.get("CLICKHOUSE_PASSWORD", "") or _generated_secret(
            state_dir, "clickhouse_writer_password"
        )
        reader["reader_password"] = reader["reader_password"] or _generated_secret(
            state_dir, "clickhouse_reader_password"
        )
    return ClickHouseSettings(
        host=host or connect_host(network["listen_host"]),
        http_port=int(os.environ.get("CLICKHOUSE_PORT", "") or _env_number("CLICKHOUSE_HTTP_PORT", 8123)),
        tcp_port=_env_number("CLICKHOUSE_TCP_PORT", 9000),
        user=user,
        password=password,
        # The embedded server keeps the platform's tables in a database of their own (clickhouse_users.py).
        database=os.environ.get("CLICKHOUSE_DATABASE", "") or ("default" if host else "metrics"),
        secure=os.environ.get("CLICKHOUSE_SECURE", "") in ("1", "true"),
        embedded=not host,
        **reader,
        **network,
    )


_KAFKA_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _kafka_from_env(state_dir: Path) -> KafkaSettings:
    external = os.environ.get(PREFIX + "KAFKA_BOOTSTRAP_SERVERS", "")
    port = _env_number("KAFKA_PORT", 9092)
    listen_host = _env("KAFKA_LISTEN_HOST", "127.0.0.1")
    bootstrap = external or host_port(connect_host(listen_host), port)
    props = {
        key[len(PREFIX + "KAFKA_PROP_") :].lower().replace("_", "."): value
        for key, value in os.environ.items()
        if key.startswith(PREFIX + "KAFKA_PROP_")
    }
    protocol = _env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper()
    if protocol not in _KAFKA_PROTOCOLS:
        raise ValueError(f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(_KAFKA_PROTOCOLS)}")
    broker_cert, broker_key = _env("KAFKA_BROKER_TLS_CERT", ""), _env("KAFKA_BROKER_TLS_KEY", "")
    ca = _env("KAFKA_SSL_CA_LOCATION", "")
    if not external and protocol not in ("PLAINTEXT", "SASL_PLAINTEXT") and not (broker_cert and broker_key and ca):
        raise ValueError(
            f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}: the embedded broker serves PLAINTEXT or SASL_PLAINTEXT, or "
            f"TLS with its certificate and key ({PREFIX}KAFKA_BROKER_TLS_CERT, _KEY) and the CA that signed it "
            f"({PREFIX}KAFKA_SSL_CA_LOCATION); or use an external cluster ({PREFIX}KAFKA_BOOTSTRAP_SERVERS)"
        )
    mechanism = _env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").strip().upper()
    if mechanism not in _SASL_MECHANISMS:
        raise ValueError(f"{PREFIX}KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(_SASL_MECHANISMS)}")
    password = _env("KAFKA_SASL_PASSWORD", "")
    if protocol.startswith("SASL_") and not password:
        if external:
            raise ValueError(f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} needs {PREFIX}KAFKA_SASL_PASSWORD")
        # The embedded broker creates its SCRAM user with this generated password.
        password = _generated_secret(state_dir, "kafka_sasl_password")
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        clickhouse_brokers=_env("CLICKHOUSE_KAFKA_BROKERS", bootstrap),
        controller_port=_env_number("KAFKA_CONTROLLER_PORT", 9093),
        embedded=not external,
        spans_topic=_env("SPANS_TOPIC", "otel_spans_v1"),
        events_topic=_env("EVENTS_TOPIC", "agent_events_v1"),
        partitions=_env_number("KAFKA_PARTITIONS", 3),
        retention_hours=_env_number("KAFKA_RETENTION_HOURS", 48),
        consumer_group_prefix=_env("KAFKA_CONSUMER_GROUP_PREFIX", "clickhouse"),
        client_properties=props,
        max_message_bytes=_env_number("KAFKA_MAX_MESSAGE_BYTES", 16 * 1024 * 1024),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=_env("KAFKA_SASL_USERNAME", "metrics_platform"),
        sasl_password=password,
        ssl_ca_location=ca,
        ssl_certificate_location=_env("KAFKA_SSL_CERTIFICATE_LOCATION", ""),
        ssl_key_location=_env("KAFKA_SSL_KEY_LOCATION", ""),
        broker_tls_cert=broker_cert,
        broker_tls_key=broker_key,
        listen_host=listen_host,
        # On every interface the broker must name itself to clients: loopback would send them to themselves.
        advertised_host=_env(
            "KAFKA_ADVERTISED_HOST", socket.getfqdn() if listen_host in ("0.0.0.0", "::") else listen_host
        ),
    )


def _otlp_network_from_env() -> dict[str, object]:
    """The OTLP receivers' address, TLS and authentication settings (CollectorSettings fields)."""
    cert, key = _env("OTLP_TLS_CERT", ""), _env("OTLP_TLS_KEY", "")
    if bool(cert) != bool(key):
        raise ValueError(f"{PREFIX}OTLP_TLS_CERT and {PREFIX}OTLP_TLS_KEY must be set together (got only one)")
    return {
        "listen_host": _env("COLLECTOR_LISTEN_HOST", "127.0.0.1"),
        "tls_cert": str(Path(cert).resolve()) if cert else "",
        "tls_key": str(Path(key).resolve()) if key else "",
        "tls_ca": _env("OTLP_TLS_CA", ""),
        "auth": _env_bool("OTLP_AUTH", False),
        "token_file": _env("OTLP_TOKEN_FILE", ""),
    }
