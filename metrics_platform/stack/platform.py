"""The whole stack in order: Kafka, topics, ClickHouse, migrations, Collector (and back down)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from metrics_platform import clickhouse, kafka_clients, migrations
from metrics_platform.prices.load import load_prices
from metrics_platform.settings import Settings
from metrics_platform.stack import clickhouse_embedded, collector, dagster_services, kafka_broker, superset
from metrics_platform.stack.process import Daemon

Report = Callable[[str], None]
Stop = Callable[[Settings], bool]
# Dagster's own limit before it calls a daemon loop unhealthy.
DAEMON_HEARTBEAT_TOLERANCE_S = 60


def install(settings: Settings, report: Report = print) -> None:
    """Fetch Kafka's jars and build the Collector, unless cached; nothing is started."""
    report("Kafka: fetching the broker's jars with Maven (cached after the first run)")
    report(f"  {kafka_broker.install(settings)}")
    report("Collector: building from Go modules (cached after the first run; ~2-4 min cold)")
    report(f"  {collector.build(settings)}")
    report(f"Superset: its own virtualenv and the embedding SDK  {superset.install(settings, report)}")
    superset.install_embed_sdk(settings, report)


def up(settings: Settings, report: Report = print, with_dagster: bool = True, with_superset: bool = False) -> None:
    """Install what is missing, start every embedded component, apply migrations.

    Components configured as external (CLICKHOUSE_URL/HOST, METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS)
    are used as they are and not started. If a step fails (or is interrupted), the components this
    call started are stopped again, those that were running already are left alone, and the error
    is raised.
    """
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
        if with_dagster:
            report(f"Dagster: starting the webserver (http://127.0.0.1:{settings.dagster_port}) and the daemon")
            for name, component in (
                ("Dagster code server", dagster_services.code_server(settings)),
                ("Dagster webserver", dagster_services.webserver(settings)),
                ("Dagster daemon", dagster_services.daemon(settings)),
            ):
                starting(name, component, dagster_services.stop)
            dagster_services.start(settings)
        if with_superset:
            starting("Superset", superset.daemon(settings), superset.stop)
            _superset_up(settings, report)
    except BaseException:
        _stop_started(settings, started, report)
        raise


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


def _superset_up(settings: Settings, report: Report) -> None:
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
    where = f"http://127.0.0.1:{settings.dagster_port}"
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
    return rows
