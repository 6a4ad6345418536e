"""The whole stack in order: Kafka, topics, ClickHouse, migrations, Collector (and back down)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from metrics_platform import clickhouse, kafka_clients, migrations
from metrics_platform.cluster import Topology
from metrics_platform.prices.load import load_prices
from metrics_platform.settings import Settings
from metrics_platform.stack import clickhouse_embedded, collector, dagster_services, kafka_broker, superset
from metrics_platform.stack.process import Daemon

Report = Callable[[str], None]
Stop = Callable[[Settings], bool]
# Dagster's own limit before it calls a daemon loop unhealthy.
DAEMON_HEARTBEAT_TOLERANCE_S = 60
# ClickHouse's Kafka engine joins its consumer groups some seconds after the views are created (3-7 s
# measured on a busy 2-core machine); a span sent before that waits in Kafka. Past this, `up` warns.
CONSUMER_ASSIGNMENT_TIMEOUT_S = 30


def install(settings: Settings, report: Report = print) -> None:
    """Fetch Kafka's jars and build the Collector, unless cached; nothing is started."""
    report("Kafka: fetching the broker's jars with Maven (cached after the first run)")
    report(f"  {kafka_broker.install(settings)}")
    report("Collector: building from Go modules (cached after the first run; ~2-4 min cold)")
    report(f"  {collector.build(settings)}")
    report(f"Superset: its own virtualenv and the embedding SDK  {superset.install(settings, report)}")
    superset.install_embed_sdk(settings, report)


def up(
    settings: Settings,
    report: Report = print,
    with_dagster: bool = True,
    with_superset: bool = False,
    topology: Topology | None = None,
) -> None:
    """Install what is missing, start every embedded component, apply migrations.

    A clustered ``topology`` (several brokers or shards) starts the local cluster instead (stack/topology.py).

    Components configured as external (CLICKHOUSE_URL/HOST, METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS)
    are used as they are and not started. If a step fails (or is interrupted), the components this
    call started are stopped again, those that were running already are left alone, and the error
    is raised.
    """
    if topology is not None and topology.clustered:
        from metrics_platform.stack import topology as local_cluster

        local_cluster.up(settings, topology, report, with_dagster=with_dagster, with_superset=with_superset)
        return
    started: list[tuple[str, Stop]] = []

    def starting(name: str, daemon: Daemon, stop: Stop) -> None:
        # Recorded before the start: a component that dies half-way through starting is stopped too.
        if daemon.pid() is None:
            started.append((name, stop))

    try:
        if settings.kafka.embedded:
            report("Kafka: fetching jars (cached after the first run) and starting the broker")
            starting("Kafka", kafka_broker.daemon(settings), kafka_broker.stop)
            kafka_broker.start(settings)
        report(f"Kafka: ensuring topics on {settings.kafka.bootstrap_servers}")
        created = kafka_clients.ensure_topics(settings.kafka)
        if created:
            report(f"  created {', '.join(created)}")
        if settings.clickhouse.embedded:
            report("ClickHouse: starting the embedded server")
            starting("ClickHouse", clickhouse_embedded.daemon(settings), clickhouse_embedded.stop)
            clickhouse_embedded.start(settings)
        report(f"ClickHouse: applying migrations at {settings.clickhouse.url}")
        ch = clickhouse.client(settings.clickhouse)
        applied = migrations.migrate(ch, settings)
        report(f"  applied {len(applied)} migration(s)" if applied else "  schema up to date")
        loaded = load_prices(ch, settings.price_overrides)
        report(f"ClickHouse: loaded {loaded.entries:,} model prices ({loaded.overrides} override(s))")
        report("Collector: building (cached after the first run) and starting")
        starting("Collector", collector.daemon(settings), collector.stop)
        collector.start(settings)
        _wait_for_kafka_consumers(ch, report)
        if with_dagster:
            report(f"Dagster: starting the webserver ({dagster_services.ui_url(settings)}) and the daemon")
            for name, component in (
                ("Dagster code server", dagster_services.code_server(settings)),
                ("Dagster webserver", dagster_services.webserver(settings)),
                ("Dagster daemon", dagster_services.daemon(settings)),
            ):
                starting(name, component, dagster_services.stop)
            dagster_services.start(settings)
        if with_superset:
            starting("Superset", superset.daemon(settings), superset.stop)
            superset_up(settings, report)
    except BaseException:
        _stop_started(settings, started, report)
        raise


def unassigned_kafka_tables(views_read: list[str], assigned: list[tuple[str, int]]) -> list[str]:
    """The Kafka engine tables that views read (``views_read``) with no partition assigned to any of their
    consumers yet; ``assigned`` is (table, partitions assigned) per consumer, as system.kafka_consumers."""
    consuming = {table for table, partitions in assigned if partitions > 0}
    return sorted(set(views_read) - consuming)


def _wait_for_kafka_consumers(ch: Client, report: Report, timeout_s: float = CONSUMER_ASSIGNMENT_TIMEOUT_S) -> None:
    """Return once every Kafka engine table that a view reads has partitions, so that the first span sent
    after `up` is read at once; warn (and go on) after ``timeout_s``: spans then wait in Kafka, nothing is lost."""
    deadline = time.monotonic() + timeout_s
    while True:
        views_read = ch.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'Kafka' "
            "AND notEmpty(dependencies_table)"
        ).result_rows
        assigned = ch.query(
            "SELECT table, length(assignments.partition_id) FROM system.kafka_consumers "
            "WHERE database = currentDatabase()"
        ).result_rows
        waiting = unassigned_kafka_tables([name for (name,) in views_read], [(t, int(n)) for t, n in assigned])
        if not waiting:
            return
        if time.monotonic() > deadline:
            report(
                f"  WARNING: ClickHouse's consumers of {', '.join(waiting)} have no Kafka partitions after "
                f"{timeout_s:.0f} s (see `metrics-platform lag`); spans wait in Kafka until they do"
            )
            return
        time.sleep(0.05)


def _stop_started(settings: Settings, started: list[tuple[str, Stop]], report: Report) -> None:
    """Stop, downstream first, what a failed ``up`` started."""
    done: set[Stop] = set()
    for name, stop in reversed(started):
        if stop in done:
            continue
        done.add(stop)
        try:
            report(f"{name}: {'stopped' if stop(settings) else 'not running'} (up failed)")
        except Exception as exc:  # keep stopping the others; the original error is what is raised
            report(f"{name}: could not be stopped: {exc}")


def superset_up(settings: Settings, report: Report) -> None:
    """Start Superset and provision the dashboard files; a broken file is reported, not fatal."""
    from metrics_platform.bi import provision
    from metrics_platform.bi.client import SupersetError
    from metrics_platform.bi.spec import SpecError

    report(f"Superset: starting ({settings.superset.url}; first run installs it, ~2-3 min)")
    superset.start(settings, report)
    report("Superset: provisioning dashboards from deploy/superset/dashboards")
    try:
        provision.provision(settings, report=report)
    except (SupersetError, SpecError, ValueError) as exc:
        report(f"  WARNING: dashboards not provisioned: {exc}\n  fix it, then: metrics-platform dashboards provision")


def down(settings: Settings, report: Report = print) -> None:
    """Stop what ``up`` started, upstream first so nothing in flight is dropped."""
    from metrics_platform.stack import topology as local_cluster

    if local_cluster.down(settings, report):
        return
    for name, stop in (
        ("Superset", superset.stop),
        ("Dagster", dagster_services.stop),
        ("Collector", collector.stop),
        ("ClickHouse", clickhouse_embedded.stop),
        ("Kafka", kafka_broker.stop),
    ):
        report(f"{name}: {'stopped' if stop(settings) else 'not running'}")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    detail: str
    # Times the supervisor restarted it after it died, since the stack came up.
    restarts: int = 0


def _supervised(daemon: Daemon, healthy: bool | None, where: str) -> tuple[bool, str, int]:
    """Up?, the status line's detail and restarts of one supervised component."""
    info, restarts = daemon.info(), daemon.restarts()
    pid = daemon.pid()
    again = f", restarted {restarts}x" if restarts else ""
    if pid is None:
        if info is not None and info.state in ("BACKOFF", "FATAL", "STARTING"):
            reason = f": {info.spawn_error}" if info.spawn_error else ""
            word = {"BACKOFF": "retrying", "FATAL": "gave up", "STARTING": "starting"}[info.state]
            return False, f"{word} ({info.state}{reason}){again}; log {daemon.log_file}", restarts
        return False, f"stopped{again}", restarts
    health = "" if healthy is None else (", healthy" if healthy else ", not answering")
    # Found by its pid file only: its supervisord is gone, so nothing restarts it.
    alone = ", NOT SUPERVISED (run `metrics-platform down`, then `up`)" if info is None else ""
    return healthy is not False, f"pid {pid}, {where}{health}{again}{alone}", restarts


def status(settings: Settings) -> list[ComponentStatus]:
    """What runs, where, whether it answers its health check, and how often it was restarted."""
    rows: list[ComponentStatus] = []
    if settings.kafka.embedded:
        broker = kafka_broker.daemon(settings)
        rows.append(ComponentStatus("kafka", *_supervised(broker, None, settings.kafka.bootstrap_servers)))
    else:
        rows.append(ComponentStatus("kafka", True, f"external: {settings.kafka.bootstrap_servers}"))
    ch_ok = clickhouse_embedded.healthy(settings)
    if settings.clickhouse.embedded:
        daemon = clickhouse_embedded.daemon(settings)
        rows.append(ComponentStatus("clickhouse", *_supervised(daemon, ch_ok, settings.clickhouse.url)))
    else:
        rows.append(ComponentStatus("clickhouse", ch_ok, f"external: {settings.clickhouse.url}"))
    c = settings.collector
    where = f"OTLP grpc :{c.otlp_grpc_port} http :{c.otlp_http_port}"
    otelcol = collector.daemon(settings)
    rows.append(ComponentStatus("otelcol", *_supervised(otelcol, collector.healthy(settings), where)))
    ui, ui_ok = dagster_services.webserver(settings), dagster_services.healthy(settings)
    where = dagster_services.ui_url(settings)
    rows.append(ComponentStatus("dagster-ui", *_supervised(ui, ui_ok, where)))
    beats = dagster_services.daemon_heartbeats(settings) if ui_ok else {}
    fresh = bool(beats) and time.time() - min(beats.values()) < DAEMON_HEARTBEAT_TOLERANCE_S
    where = f"{len(beats)} loops, last heartbeats {'fresh' if fresh else 'late'}" if beats else "heartbeats unknown"
    rows.append(ComponentStatus("dagster-daemon", *_supervised(dagster_services.daemon(settings), None, where)))
    code, code_ok = dagster_services.code_server(settings), dagster_services.code_server_healthy(settings)
    where = str(dagster_services.code_server_socket(settings))
    rows.append(ComponentStatus("dagster-code", *_supervised(code, code_ok, where)))
    web = superset.daemon(settings)
    # Listed only when it runs or was run: `up --no-superset` leaves it out on purpose.
    if web.info() is not None or web.pid() is not None:
        rows.append(ComponentStatus("superset", *_supervised(web, superset.healthy(settings), settings.superset.url)))
    return _with_cluster(settings, rows)


def _with_cluster(settings: Settings, rows: list[ComponentStatus]) -> list[ComponentStatus]:
    """A local cluster's brokers and shards in place of the single-node kafka and clickhouse rows."""
    from metrics_platform.stack import topology as local_cluster

    cluster = local_cluster.active(settings)
    if cluster is None:
        return rows
    servers = [
        ComponentStatus(name, *_supervised(daemon, healthy, where))
        for name, daemon, where, healthy in local_cluster.status(settings, cluster)
    ]
    return [*servers, *cluster_service_rows(rows, local_cluster.started_services(settings))]


def cluster_service_rows(rows: list[ComponentStatus], started: frozenset[str]) -> list[ComponentStatus]:
    """A cluster's rows besides its servers: the Collector always; Dagster's and Superset's when the cluster was
    started with them (so they show DOWN once they stop) or while they run. A test's cluster starts neither."""

    def expected(name: str) -> bool:
        return name == "otelcol" or name.split("-")[0] in started

    kept = [r for r in rows if r.name not in ("kafka", "clickhouse") and (r.running or expected(r.name))]
    if "superset" in started and all(r.name != "superset" for r in kept):
        # The single-node list leaves out a Superset that never ran under this supervisor.
        kept.append(ComponentStatus("superset", False, "not running"))
    return kept
