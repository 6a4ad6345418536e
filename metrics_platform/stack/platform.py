"""The whole stack in order: Kafka, topics, ClickHouse, migrations, Collector (and back down)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metrics_platform import clickhouse, kafka_clients, migrations
from metrics_platform.prices.load import load_prices
from metrics_platform.settings import Settings
from metrics_platform.stack import clickhouse_embedded, collector, dagster_services, kafka_broker, superset

Report = Callable[[str], None]


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
    are used as they are and not started.
    """
    if settings.kafka.embedded:
        report("Kafka: fetching jars (cached after the first run) and starting the broker")
        kafka_broker.start(settings)
    report(f"Kafka: ensuring topics on {settings.kafka.bootstrap_servers}")
    created = kafka_clients.ensure_topics(settings.kafka)
    if created:
        report(f"  created {', '.join(created)}")
    if settings.clickhouse.embedded:
        report("ClickHouse: starting the embedded server")
        clickhouse_embedded.start(settings)
    report(f"ClickHouse: applying migrations at {settings.clickhouse.url}")
    ch = clickhouse.client(settings.clickhouse)
    applied = migrations.migrate(ch, settings)
    report(f"  applied {len(applied)} migration(s)" if applied else "  schema up to date")
    loaded = load_prices(ch, settings.price_overrides)
    report(f"ClickHouse: loaded {loaded.entries:,} model prices ({loaded.overrides} override(s))")
    report("Collector: building (cached after the first run) and starting")
    collector.start(settings)
    if with_dagster:
        report(f"Dagster: starting the webserver (http://127.0.0.1:{settings.dagster_port}) and the daemon")
        dagster_services.start(settings)
    if with_superset:
        _superset_up(settings, report)


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


def status(settings: Settings) -> list[ComponentStatus]:
    """What runs, where, and whether it answers its health check."""
    rows: list[ComponentStatus] = []
    if settings.kafka.embedded:
        pid = kafka_broker.daemon(settings).pid()
        rows.append(
            ComponentStatus(
                "kafka",
                pid is not None,
                f"pid {pid}, {settings.kafka.bootstrap_servers}" if pid else "stopped",
            )
        )
    else:
        rows.append(ComponentStatus("kafka", True, f"external: {settings.kafka.bootstrap_servers}"))
    ch_ok = clickhouse_embedded.healthy(settings)
    if settings.clickhouse.embedded:
        pid = clickhouse_embedded.daemon(settings).pid()
        detail = (
            f"pid {pid}, {settings.clickhouse.url}, {'healthy' if ch_ok else 'not answering'}" if pid else "stopped"
        )
        rows.append(ComponentStatus("clickhouse", pid is not None and ch_ok, detail))
    else:
        rows.append(ComponentStatus("clickhouse", ch_ok, f"external: {settings.clickhouse.url}"))
    pid = collector.daemon(settings).pid()
    col_ok = collector.healthy(settings)
    c = settings.collector
    detail = (
        (
            f"pid {pid}, OTLP grpc :{c.otlp_grpc_port} http :{c.otlp_http_port}, "
            f"{'healthy' if col_ok else 'not answering'}"
        )
        if pid
        else "stopped"
    )
    rows.append(ComponentStatus("otelcol", pid is not None and col_ok, detail))
    pid = dagster_services.webserver(settings).pid()
    ui_ok = dagster_services.healthy(settings)
    detail = f"pid {pid}, http://127.0.0.1:{settings.dagster_port}, {'healthy' if ui_ok else 'not answering'}"
    rows.append(ComponentStatus("dagster-ui", pid is not None and ui_ok, detail if pid else "stopped"))
    pid = dagster_services.daemon(settings).pid()
    rows.append(ComponentStatus("dagster-daemon", pid is not None, f"pid {pid}" if pid else "stopped"))
    pid = superset.daemon(settings).pid()
    # Listed only when it runs: `up --no-superset` leaves it out on purpose.
    if pid is not None:
        ok = superset.healthy(settings)
        detail = f"pid {pid}, {settings.superset.url}, {'healthy' if ok else 'not answering'}"
        rows.append(ComponentStatus("superset", ok, detail))
    return rows
