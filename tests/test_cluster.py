"""Cluster mode: the replicated variant of the migrations, and a real local cluster (3 KRaft brokers, 2 embedded
ClickHouse shards, the Collector) on ports of its own, next to the session's single-node stack."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from metrics_platform import cluster, migrations
from metrics_platform.cluster import LocalTable, Topology, TopologyError
from tests import otlp_json
from tests.collector_helpers import post_otlp
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
_BASE = int(os.environ.get("METRICS_PLATFORM_TEST_PORT_BASE", "20000"))
# The cluster's ports: base + 1000 ... + 2999 (the single-node stack keeps base + its own offsets), or from
# METRICS_PLATFORM_TEST_CLUSTER_PORT_BASE ... + 1999 when another session's ports are there.
_C = int(os.environ.get("METRICS_PLATFORM_TEST_CLUSTER_PORT_BASE", "") or _BASE + 1000)
CLUSTER_ENV = {
    "METRICS_PLATFORM_STATE_DIR": str(ROOT / ".state" / f"test-{_BASE}-cluster"),
    "METRICS_PLATFORM_KAFKA_PORT": str(_C + 92),
    "METRICS_PLATFORM_KAFKA_CONTROLLER_PORT": str(_C + 93),
    "METRICS_PLATFORM_CLICKHOUSE_HTTP_PORT": str(_C + 123),
    "METRICS_PLATFORM_CLICKHOUSE_TCP_PORT": str(_C + 124),
    "METRICS_PLATFORM_OTLP_GRPC_PORT": str(_C + 317),
    "METRICS_PLATFORM_OTLP_HTTP_PORT": str(_C + 318),
    "METRICS_PLATFORM_COLLECTOR_HEALTH_PORT": str(_C + 333),
    "METRICS_PLATFORM_COLLECTOR_METRICS_PORT": str(_C + 388),
    "METRICS_PLATFORM_CLUSTER_PORT_BASE": str(_C + 1000),
}
TOPOLOGY = Topology(brokers=3, shards=2)

# --- rendering (no stack) ---------------------------------------------------------------------------------

_FORMAT_QUERY = """
import json, sys
import chdb
failures = []
for statement in json.load(sys.stdin):
    literal = statement.replace("\\\\", "\\\\\\\\").replace("'", "\\\\'")
    try:
        formatted = chdb.query(f"SELECT formatQuery('{literal}')", "TSVRaw").bytes().decode()
    except Exception as exc:
        failures.append([statement[:300], str(exc)[:500]])
        continue
    if ("ENGINE = Replicated" in statement) != ("ENGINE = Replicated" in formatted):
        failures.append([statement[:300], "engine lost in formatting"])
print(json.dumps(failures))
"""


ON_CLUSTER = cluster.DdlMode(replicated=True, on_cluster=True, cluster="metrics")
IN_REPLICATED_DATABASE = cluster.DdlMode(replicated=True, cluster="metrics", replicated_database=True)


def _rendered(settings, mode: cluster.DdlMode) -> list[str]:
    """Every statement of every migration as the runner would send it in ``mode``, ledger first."""
    shape = dataclasses.replace(settings.cluster, replicated=mode.replicated, on_cluster=mode.on_cluster)
    values = migrations.template_values(
        dataclasses.replace(settings, cluster=shape), every_server="metrics_every_server"
    )
    transform = cluster.statement_transform(mode)
    assert transform is not None
    ledger = migrations.LEDGER_DDL.format(engine=cluster.ledger_engine(mode))
    return [cluster.on_cluster(ledger, mode.cluster) if mode.on_cluster else ledger] + [
        transform(statement)
        for m in migrations.discover()
        for statement in migrations.split_statements(migrations.render(m, values))
    ]


def test_replicated_variants_of_every_migration_parse(settings):
    """Every statement of every migration, in both replicated variants (ON CLUSTER with explicit Keeper paths;
    inside a Replicated database with the server's default paths), is valid ClickHouse SQL (formatQuery in
    the embedded engine, in a process of its own: the engine is global to a process). The tables each server
    keeps for itself stay plain, and every refreshable view refreshes on every server."""
    on_cluster, in_database = _rendered(settings, ON_CLUSTER), _rendered(settings, IN_REPLICATED_DATABASE)
    for statements in (on_cluster, in_database):
        engines = sum("ENGINE = Replicated" in s for s in statements)
        plain = [s for s in statements if re.search(r"ENGINE = (Aggregating|Replacing|Summing)?MergeTree", s)]
        assert engines >= 15, engines
        assert {cluster._created_table(s) for s in plain} == cluster.SERVER_LOCAL_TABLES
        # The replicas of a shard share agent_events, each finalizing its own inbox under its own name.
        assert any("DEFAULT getMacro('replica')" in s for s in statements)
        assert not any("finalized_by = ''" in s for s in statements)
    # The refreshable views as they stand after the last migration: APPEND on every server (a full refresh
    # inside a Replicated database is coordinated, and its table swap replicates to every shard).
    latest: dict[str, str] = {}
    for s in on_cluster:
        match = re.search(r"CREATE MATERIALIZED VIEW (?:IF NOT EXISTS )?(\w+) ON CLUSTER metrics\s+REFRESH", s)
        if match:
            latest[match.group(1)] = s
    assert set(latest) == {"finalize_spans", "skip_copied_batches", "refresh_user_cost_30d"}
    assert all("SETTINGS all_replicas = 1 APPEND TO" in s for s in latest.values())
    ddl = [s for s in on_cluster if migrations.guard(s) is None and not s.lstrip().upper().startswith("INSERT")]
    assert all(" ON CLUSTER metrics" in s for s in ddl), [s[:80] for s in ddl if " ON CLUSTER" not in s][:3]
    # Inside a Replicated database: no ON CLUSTER (refused there), and no Keeper path but the shared ledger's.
    assert not any(" ON CLUSTER" in s for s in in_database)
    paths = [s for s in in_database if "/clickhouse/" in s]
    assert len(paths) == 1 and cluster.LEDGER_ZK_PATH in paths[0]
    result = subprocess.run(
        [sys.executable, "-c", _FORMAT_QUERY],
        input=json.dumps(on_cluster + in_database),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_replicated_engines_keep_their_arguments():
    create = "CREATE TABLE t (v UInt8) ENGINE = ReplacingMergeTree(evaluated_at) ORDER BY v"
    got = cluster.replicated_engines(create)
    path = "'/clickhouse/tables/{uuid}/{shard}', '{replica}'"
    assert f"ENGINE = ReplicatedReplacingMergeTree({path}, evaluated_at)" in got
    bare = cluster.replicated_engines(create, explicit_path=False)
    assert "ENGINE = ReplicatedReplacingMergeTree(evaluated_at) ORDER BY v" in bare
    assert "ENGINE = ReplicatedMergeTree ORDER BY" in cluster.replicated_engines(
        "CREATE TABLE t (v UInt8) ENGINE = MergeTree ORDER BY v", explicit_path=False
    )
    # What each server keeps for itself stays plain in both variants.
    inbox = "-- staging\nCREATE TABLE IF NOT EXISTS span_inbox (v UInt8) ENGINE = MergeTree ORDER BY v"
    assert cluster.replicated_engines(inbox) == cluster.replicated_engines(inbox, explicit_path=False) == inbox
    rename = cluster.on_cluster("-- if: SELECT 1\nRENAME TABLE IF EXISTS a TO b", "c1")
    assert rename == "-- if: SELECT 1\nRENAME TABLE IF EXISTS a TO b ON CLUSTER c1"
    assert migrations.guard(rename) == "SELECT 1"
    assert cluster.on_cluster("INSERT INTO a SELECT 1", "c1") == "INSERT INTO a SELECT 1"
    assert (
        cluster.on_cluster("ALTER TABLE d ADD COLUMN x UInt8", "c1") == "ALTER TABLE d ON CLUSTER c1 ADD COLUMN x UInt8"
    )


def test_ddl_mode_chooses_the_variant_the_runner_applies():
    create = "CREATE TABLE IF NOT EXISTS t (v UInt8) ENGINE = MergeTree ORDER BY v"
    assert cluster.statement_transform(cluster.DdlMode()) is None  # single node and local cluster: as written
    assert cluster.ledger_engine(cluster.DdlMode()) == "MergeTree"  # a ledger per server
    on_cluster = cluster.statement_transform(cluster.DdlMode(replicated=True, on_cluster=True, cluster="prod"))
    assert on_cluster is not None
    assert on_cluster(create).startswith("CREATE TABLE IF NOT EXISTS t ON CLUSTER prod (v UInt8) ENGINE = Replicated")
    inside = cluster.statement_transform(IN_REPLICATED_DATABASE)
    assert inside is not None and inside(create).endswith("ENGINE = ReplicatedMergeTree ORDER BY v")
    # Plain tables in a Replicated database: DDL travels, data stays per server.
    assert cluster.statement_transform(cluster.DdlMode(replicated_database=True)) is None
    # Cluster-wide DDL shares one replicated ledger; replicated tables created server by server are refused.
    shared = cluster.ledger_engine(IN_REPLICATED_DATABASE)
    assert shared.startswith("ReplicatedMergeTree('/clickhouse/metrics_platform/")
    assert cluster.ledger_engine(cluster.DdlMode(on_cluster=True)) == cluster.ledger_engine(IN_REPLICATED_DATABASE)
    with pytest.raises(TopologyError, match="ON_CLUSTER=true or create the database with ENGINE = Replicated"):
        cluster.statement_transform(cluster.DdlMode(replicated=True))


def test_settings_reach_the_runner(settings, ch, monkeypatch):
    """The runner's mode comes from the settings and the database's engine (a single node here)."""
    from metrics_platform.settings import Settings

    assert migrations.ddl_mode(ch, settings) == cluster.DdlMode(cluster=settings.cluster.name)
    monkeypatch.setenv("METRICS_PLATFORM_CLICKHOUSE_REPLICATED", "true")
    monkeypatch.setenv("METRICS_PLATFORM_CLUSTER_NAME", "prod")
    replicated = Settings.from_env()
    assert migrations.ddl_mode(ch, replicated) == cluster.DdlMode(replicated=True, cluster="prod")
    # Replicated tables without ON CLUSTER outside a Replicated database: refused before anything runs.
    with pytest.raises(migrations.MigrationError, match="need their DDL on every replica"):
        migrations.migrate(ch, replicated)


def test_one_server_per_shard_takes_per_shard_writes():
    hosts = cluster.cluster_hosts(
        [(1, 1, "ch-0-0", 3), (1, 2, "ch-0-1", 0), (2, 1, "ch-1-0", 0), (2, 2, "ch-1-1", 0)], "prod"
    )
    assert [(h.shard, h.host) for h in cluster.write_targets(hosts)] == [(1, "ch-0-1"), (2, "ch-1-0")]
    with pytest.raises(TopologyError, match="'prod' is not in system.clusters"):
        cluster.cluster_hosts([], "prod")


def test_topology_parsing_and_read_layer():
    assert Topology.parse("brokers=3,shards=2") == Topology(3, 2)
    assert Topology.parse("shards=4") == Topology(1, 4)
    assert (Topology(3, 2).replication_factor, Topology(3, 2).min_insync_replicas) == (3, 2)
    for bad in ("brokers=2", "shards=0", "replicas=2", "brokers"):
        with pytest.raises(TopologyError):
            Topology.parse(bad)
    tables = [
        LocalTable("agent_events", "MergeTree", ("ts", "trace_id")),
        LocalTable("alert_status", "ReplacingMergeTree", ("rule",)),
        LocalTable("model_prices", "MergeTree", ("model",)),
        LocalTable("kafka_otel_spans", "Kafka", ("raw",)),
        LocalTable("span_inbox", "MergeTree", ("trace_id",)),
        LocalTable("finalizer_settling", "View", ("settling_spans",)),
    ]
    ddl = cluster.read_layer_ddl("metrics", "metrics_cluster", "metrics", tables)
    assert ddl[0] == "CREATE DATABASE IF NOT EXISTS `metrics_cluster`"
    assert "ENGINE = Distributed(metrics, metrics, agent_events, cityHash64(trace_id))" in ddl[1]
    assert "ENGINE = Distributed(metrics, metrics, alert_status, rand())" in ddl[2]
    assert (
        ddl[4] == "CREATE VIEW IF NOT EXISTS `metrics_cluster`.`model_prices` AS SELECT * FROM `metrics`.`model_prices`"
    )
    # Each server's own inbox and finalizer state: read from every server.
    assert [ddl[3], ddl[5]] == [
        f"CREATE TABLE IF NOT EXISTS `metrics_cluster`.`{t}` AS `metrics`.`{t}` "
        f"ENGINE = Distributed(metrics, metrics, {t})"
        for t in ("finalizer_settling", "span_inbox")
    ]
    assert (
        "Distributed(metrics_every_server, metrics, span_inbox)"
        in cluster.read_layer_ddl("metrics", "metrics_cluster", "metrics", tables, "metrics_every_server")[5]
    )
    assert cluster.every_server_cluster("prod", ["prod", "prod_every_server"]) == "prod_every_server"
    assert cluster.every_server_cluster("metrics", ["metrics"]) == "metrics"
    assert len(ddl) == 6  # no Distributed table over the Kafka engine table
    with pytest.raises(TopologyError):
        cluster.shard_of_traces({"t1": {1}, "t2": {1, 2}})


def test_per_server_results_merge_and_copies_are_read_once():
    """Per-server work merges into one answer: cost-by-account totals add up, unpriced models sum their calls;
    the enrichment tables every server keeps a copy of are read through a view of one copy."""
    from metrics_platform.enrichment.cost import DayCost
    from metrics_platform.prices.load import UnpricedModel

    day = datetime(2026, 1, 2).date()
    merged = cluster.merge_day_costs(
        [DayCost(day, 3, 10, Decimal("1.5"), Decimal("0.5")), DayCost(day, 2, 5, Decimal("2"), Decimal(0))]
    )
    assert merged == DayCost(day, 5, 15, Decimal("3.5"), Decimal("0.5"))
    with pytest.raises(ValueError, match="one day"):
        cluster.merge_day_costs(
            [DayCost(day, 1, 1, Decimal(1), Decimal(0)), DayCost(day.replace(day=3), 1, 1, Decimal(1), Decimal(0))]
        )
    a, b = UnpricedModel("openai", "x", "", 3), UnpricedModel("openai", "y", "", 4)
    assert cluster.merge_unpriced([[a, b], [UnpricedModel("openai", "x", "", 2)], []]) == [
        UnpricedModel("openai", "x", "", 5),
        b,
    ]
    for table in ("billing_accounts", "feature_flags"):
        ddl = cluster.read_layer_ddl("metrics", "metrics_cluster", "metrics", [LocalTable(table, "MergeTree", ("k",))])
        assert ddl[1] == f"CREATE VIEW IF NOT EXISTS `metrics_cluster`.`{table}` AS SELECT * FROM `metrics`.`{table}`"


def test_cluster_status_lists_what_the_cluster_was_started_with():
    """Dagster and Superset rows stay in a cluster's status when `up` started them, DOWN once they stop; a
    cluster started without them (a test's) lists neither while they do not run."""
    from metrics_platform.stack.platform import ComponentStatus, cluster_service_rows

    rows = [
        ComponentStatus("kafka", False, "stopped"),
        ComponentStatus("clickhouse", False, "stopped"),
        ComponentStatus("otelcol", True, "pid 1"),
        ComponentStatus("dagster-ui", False, "stopped"),
        ComponentStatus("dagster-daemon", False, "stopped"),
        ComponentStatus("dagster-code", False, "stopped"),
    ]
    names = lambda shown: [(r.name, r.running) for r in shown]  # noqa: E731
    assert names(cluster_service_rows(rows, frozenset())) == [("otelcol", True)]
    assert names(cluster_service_rows(rows, frozenset({"dagster", "superset"}))) == [
        ("otelcol", True),
        ("dagster-ui", False),
        ("dagster-daemon", False),
        ("dagster-code", False),
        ("superset", False),
    ]
    running = [*rows[:3], ComponentStatus("superset", True, "pid 2")]
    assert names(cluster_service_rows(running, frozenset({"dagster"}))) == [("otelcol", True), ("superset", True)]


def test_users_file_grants_the_read_database(settings):
    from metrics_platform.stack import clickhouse_users

    plain = clickhouse_users.render_users(settings.clickhouse, 3)
    users = clickhouse_users.render_users(settings.clickhouse, 3, extra_databases=("metrics_cluster",))
    assert "metrics_cluster" not in plain and "ON Distributed" not in plain
    # Everything to the writer (it creates the Distributed tables), SELECT to the reader, once each.
    assert users.count("GRANT ALL ON `metrics_cluster`.*") == 1
    assert users.count("GRANT SELECT ON `metrics_cluster`.*") == 1
    assert users.count("GRANT TABLE ENGINE ON Distributed") == 1
    with pytest.raises(ValueError, match="letters, digits"):
        clickhouse_users.render_users(settings.clickhouse, 3, extra_databases=("x`; DROP",))


def test_readers_and_per_server_writers_follow_the_cluster(tmp_path, monkeypatch):
    """One place decides where readers go (clickhouse.read_database): the platform's database on a single node,
    the local cluster's read layer once `up --topology` wrote its file, or the configured one. Superset's
    connection (rendered here as a unit: starting Superset in the cluster test would cost ~2 min) follows it;
    per-server writes go to every shard's own database."""
    from metrics_platform import clickhouse
    from metrics_platform.bi import provision
    from metrics_platform.settings import Settings
    from metrics_platform.stack import topology

    for name, value in CLUSTER_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("METRICS_PLATFORM_STATE_DIR", str(tmp_path))
    single = Settings.from_env()
    local_db = single.clickhouse.database
    assert clickhouse.read_database(single) == local_db
    assert provision.sqlalchemy_uri(single).endswith(f":{single.clickhouse.http_port}/{local_db}")
    assert topology.servers(single) == [("", single)]

    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "topology.json").write_text(json.dumps({"topology": str(TOPOLOGY)}))
    assert clickhouse.read_database(single) == f"{local_db}_cluster"
    assert clickhouse.reader_settings(single).http_port == single.clickhouse.http_port  # shard 1 answers
    assert provision.sqlalchemy_uri(single).endswith(f":{single.clickhouse.http_port}/{local_db}_cluster")
    servers = topology.servers(single)
    assert [label for label, _ in servers] == ["shard 1", "shard 2"]
    assert [s.clickhouse.http_port for _, s in servers] == [n.port for n in topology.shards(single, TOPOLOGY)]
    assert {s.clickhouse.database for _, s in servers} == {local_db}
    assert all(len(s.kafka.bootstrap_servers.split(",")) == TOPOLOGY.brokers for _, s in servers)

    monkeypatch.setenv("METRICS_PLATFORM_CLICKHOUSE_READ_DATABASE", "analytics")
    assert clickhouse.read_database(Settings.from_env()) == "analytics"


def test_audits_of_the_servers_merge_into_one_verdict():
    from metrics_platform.rollup_audit import AuditResult, Mismatch

    start, end = datetime(2026, 1, 1), datetime(2026, 1, 1, 1)
    good = AuditResult(start, end, groups=3, raw_spans=30, max_quantile_error=0.01)
    bad = AuditResult(start, end, groups=2, raw_spans=12, parts_without_projection=1, max_quantile_error=0.02,
                      mismatches=[Mismatch(("2026-01-01 00:01:00", "/r"), "spans", "1", "2")])  # fmt: skip
    merged = cluster.merge_audits(start, end, [("shard 1", good), ("shard 2", bad)])
    assert (merged.groups, merged.raw_spans, merged.parts_without_projection) == (5, 42, 1)
    assert merged.max_quantile_error == 0.02 and not merged.passed
    assert merged.mismatches[0].key == ("shard 2", "2026-01-01 00:01:00", "/r")
    assert cluster.merge_audits(start, end, [("", good)]).passed


# --- the local cluster ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_stack():
    """A 3-broker, 2-shard cluster from a clean state directory (its own supervisord and ports)."""
    import shutil

    from metrics_platform.settings import Settings
    from metrics_platform.stack import topology
    from metrics_platform.stack.process import port_in_use

    with pytest.MonkeyPatch.context() as env:
        for name, value in CLUSTER_ENV.items():
            env.setenv(name, value)
        base = Settings.from_env()
        topology.down(base, report=lambda _: None)  # leftovers of an interrupted session
        busy = sorted(p for p in _ports(base) if port_in_use(p))
        if busy:
            pytest.fail(
                f"the cluster test's ports {busy} are in use by another stack: run with "
                f"METRICS_PLATFORM_TEST_CLUSTER_PORT_BASE set to a free range of 2,000 ports (now {_C})"
            )
        for path in base.state_dir.glob("*"):
            if path.is_dir() and path.name != "secrets":
                shutil.rmtree(path)
        started = time.monotonic()
        # Dagster's and Superset's starters are the single-node ones; the tests run Dagster's objects in-process.
        settings_in_use = topology.up(base, TOPOLOGY, report=lambda _: None, with_dagster=False)
        print(f"cluster {TOPOLOGY} up in {time.monotonic() - started:.1f}s")
        try:
            yield settings_in_use
        finally:
            topology.down(base, report=lambda _: None)


def _ports(settings) -> set[int]:
    from metrics_platform.stack import topology

    nodes = [*topology.brokers(settings, TOPOLOGY), *topology.shards(settings, TOPOLOGY)]
    c = settings.collector
    return {p for n in nodes for p in (n.port, n.second_port)} | {c.otlp_http_port, c.otlp_grpc_port, c.health_port}


def _client(settings, shard: int | None = None, reader: bool = False):
    """A client of the read layer (shard None) or of one shard's local database."""
    import dataclasses

    from metrics_platform import clickhouse
    from metrics_platform.stack import topology

    if shard is None:
        ch = topology.read_settings(settings).clickhouse
    else:
        ch = topology.shard_settings(settings, topology.shards(settings, TOPOLOGY)[shard - 1]).clickhouse
    if reader:
        ch = dataclasses.replace(ch, user=ch.reader_user, password=ch.reader_password)
    return clickhouse.client(ch)


def _send_traces(settings, service: str, traces: int, children: int = 2, seed: int = 0, model: str = "gpt-4.1") -> int:
    """POST ``traces`` traces (a request span and ``children`` LLM spans each) through the Collector in
    requests of 20 traces; returns the spans sent (each acknowledged with 200: on the Collector's disk)."""
    import random

    rng = random.Random(seed)
    sent = 0
    for first in range(0, traces, 20):
        spans = []
        for _ in range(min(20, traces - first)):
            trace = uuid.uuid4().hex
            root = otlp_json.span(trace, "request", {"route": f"POST /r{rng.randrange(3)}"}, kind=otlp_json.SERVER,
                                  duration_ms=rng.choice([5, 50, 500, 5000]) * (1 + rng.random()))  # fmt: skip
            spans.append(root)
            for _ in range(children):
                attrs = {"gen_ai.request.model": model, "gen_ai.usage.input_tokens": rng.randrange(1, 5000),
                         "gen_ai.usage.output_tokens": rng.randrange(1, 500)}  # fmt: skip
                spans.append(otlp_json.span(trace, "chat", attrs, parent=root["spanId"], kind=otlp_json.CLIENT,
                                            duration_ms=rng.expovariate(1 / 300)))  # fmt: skip
        status, body = post_otlp(settings, otlp_json.request({"service.name": service}, spans))
        assert status == 200, body[:300]
        sent += len(spans)
    return sent


def _landed(ch, service: str) -> tuple[int, int]:
    total, unique = ch.query(
        "SELECT count(), uniqExact(span_id) FROM agent_events WHERE service = {s:String}", parameters={"s": service}
    ).result_rows[0]
    return int(total), int(unique)


def _wait_landed(ch, service: str, expected: int, timeout_s: float = 120) -> tuple[int, int]:
    def done():
        total, unique = _landed(ch, service)
        return (total, unique) if unique >= expected else None

    return wait_for(done, timeout_s, f"{expected} spans of {service} in the read layer")  # type: ignore[return-value]


def test_cluster_runs_every_server_supervised(cluster_stack):
    from metrics_platform.stack import topology

    rows = topology.status(cluster_stack, TOPOLOGY)
    assert [name for name, *_ in rows] == ["kafka-1", "kafka-2", "kafka-3", "clickhouse-1", "clickhouse-2"]
    for name, daemon, _, healthy in rows:
        assert daemon.pid() is not None and daemon.info() is not None, name  # run by supervisord
        assert healthy is not False, name
    # `metrics-platform status` shows the cluster's servers in place of the single-node ones.
    from metrics_platform.stack import platform

    shown = platform.status(cluster_stack)
    assert [r.name for r in shown] == [*(name for name, *_ in rows), "otelcol"]
    assert all(r.running for r in shown), shown
    # `up` recorded that it started neither Dagster nor Superset; had it, they would show as DOWN now.
    state = topology.cluster_dir(cluster_stack) / "topology.json"
    assert json.loads(state.read_text())["services"] == [] and topology.started_services(cluster_stack) == set()
    recorded = state.read_text()
    try:
        state.write_text(json.dumps({"topology": str(TOPOLOGY), "services": ["dagster", "superset"]}))
        down = [r.name for r in platform.status(cluster_stack) if not r.running]
        assert down == ["dagster-ui", "dagster-daemon", "dagster-code", "superset"]
    finally:
        state.write_text(recorded)
    # Every server holds the single-node schema with a ledger of its own, and the read layer.
    for shard in (1, 2):
        ch = _client(cluster_stack, shard)
        assert len(migrations.status(ch)) == sum(s.applied for s in migrations.status(ch))
        assert ch.command("SELECT count() FROM system.tables WHERE database = 'metrics_cluster'") >= 10


def test_a_real_clusters_servers_come_from_system_clusters(cluster_stack, tmp_path):
    """Without the local cluster's topology file but with a read database set (a real cluster), per-shard writes,
    migrations and read layers go to the servers system.clusters lists: here both shards, on one address."""
    import dataclasses

    from metrics_platform.stack import topology

    real = dataclasses.replace(
        cluster_stack, state_dir=tmp_path, cluster=dataclasses.replace(cluster_stack.cluster, read_database="mc")
    )
    assert topology.active(real) is None
    servers = topology.servers(real)
    assert [label for label, _ in servers] == ["shard 1 replica 1 (127.0.0.1)", "shard 2 replica 1 (127.0.0.1)"]
    assert {s.clickhouse.host for _, s in servers} == {"127.0.0.1"}
    # Per-server DDL (no ON CLUSTER, no Replicated database): every server migrates and gets the read layer.
    assert [label for label, _ in topology.migration_servers(real)] == [label for label, _ in servers]
    assert len(topology.read_layer_servers(real)) == 2
    wrong = dataclasses.replace(real, cluster=dataclasses.replace(real.cluster, name="nosuch"))
    with pytest.raises(TopologyError, match="'nosuch' is not in system.clusters"):
        topology.servers(wrong)


def test_spans_land_once_and_each_trace_on_one_shard(cluster_stack):
    service = f"cluster-{uuid.uuid4().hex[:8]}"
    sent = _send_traces(cluster_stack, service, traces=600)
    total, unique = _wait_landed(_client(cluster_stack), service, sent)
    assert (total, unique) == (sent, sent), f"{total - sent} duplicated, {sent - unique} lost"
    per_shard = {}
    for shard in (1, 2):
        rows = (
            _client(cluster_stack, shard)
            .query(
                "SELECT trace_id, count() FROM agent_events WHERE service = {s:String} GROUP BY trace_id",
                parameters={"s": service},
            )
            .result_rows
        )
        per_shard[shard] = {trace: n for trace, n in rows}
        # Attribution saw whole traces: every child inherited its request's route.
        missing = _client(cluster_stack, shard).command(
            "SELECT countIf(parent_missing) FROM agent_events WHERE service = {s:String}", parameters={"s": service}
        )
        assert missing == 0, f"shard {shard}: {missing} spans without their parent"
    assert per_shard[1] and per_shard[2], "one shard received nothing: partitions are not split across servers"
    traces = {t: {s for s in (1, 2) if t in per_shard[s]} for t in per_shard[1].keys() | per_shard[2].keys()}
    cluster.shard_of_traces(traces)  # raises if a trace is split
    assert all(n == 3 for shard in per_shard.values() for n in shard.values())


def test_aggregates_merge_across_shards_and_the_rollup_audit_passes(cluster_stack):
    """Sums over the Distributed tables equal the sum of the shards'; t-digest quantiles equal the merge of
    the shards' t-digest states; the audit of every rollup passes over the read layer and on each shard."""
    from metrics_platform import rollup_audit
    from metrics_platform.rollups import ROLLUPS

    service = f"merge-{uuid.uuid4().hex[:8]}"
    sent = _send_traces(cluster_stack, service, traces=400, children=3, seed=7)
    reader = _client(cluster_stack, reader=True)  # dashboards' account, through the read layer
    _wait_landed(reader, service, sent)
    params = {"s": service}
    merged = reader.query(
        "SELECT route, count(), sum(tokens_prompt), sum(cost_usd), quantilesTDigest(0.5, 0.95)(latency_ms) "
        "FROM agent_events WHERE service = {s:String} GROUP BY route ORDER BY route",
        parameters=params,
    ).result_rows
    # The shards' unmerged states (one row per shard and route), merged here: the union of the shards.
    union = reader.query(
        "SELECT route, sum(c), sum(t), sum(u), quantilesTDigestMerge(0.5, 0.95)(q) FROM ("
        " SELECT route, count() AS c, sum(tokens_prompt) AS t, sum(cost_usd) AS u,"
        " quantilesTDigestState(0.5, 0.95)(latency_ms) AS q FROM agent_events WHERE service = {s:String}"
        " GROUP BY route SETTINGS distributed_group_by_no_merge = 1) GROUP BY route ORDER BY route",
        parameters=params,
    ).result_rows
    # Counts and sums are exact; a t-digest merged in another order may move a quantile by a fraction.
    assert [row[:4] for row in merged] == [row[:4] for row in union]
    for (route, *_, mine), (_, *_, theirs) in zip(merged, union, strict=True):
        assert all(abs(a - b) <= 0.01 * b + 0.5 for a, b in zip(mine, theirs, strict=True)), (route, mine, theirs)
    by_shard: dict[str, list] = {}
    for shard in (1, 2):
        for route, count, tokens, cost in (
            _client(cluster_stack, shard)
            .query(
                "SELECT route, count(), sum(tokens_prompt), sum(cost_usd) FROM agent_events WHERE service = {s:String} "
                "GROUP BY route",
                parameters=params,
            )
            .result_rows
        ):
            acc = by_shard.setdefault(route, [0, 0, Decimal(0)])
            acc[0], acc[1], acc[2] = acc[0] + count, acc[1] + tokens, acc[2] + cost
    assert {r: tuple(v) for r, v in by_shard.items()} == {r: (c, t, u) for r, c, t, u, _ in merged}
    assert sum(c for _, c, *_ in merged) == sent and len(by_shard) == 3
    exact = dict(reader.query(
        "SELECT route, quantilesExact(0.5, 0.95)(latency_ms) FROM agent_events WHERE service = {s:String} "
        "GROUP BY route", parameters=params,
    ).result_rows)  # fmt: skip
    for route, *_, quantiles in merged:
        for estimate, truth in zip(quantiles, exact[route], strict=True):
            assert abs(estimate - truth) <= max(rollup_audit.QUANTILE_TOLERANCE * truth, 1.0), (route, quantiles)
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=3)
    for name, rollup in ROLLUPS.items():
        across = rollup_audit.audit(_client(cluster_stack), start, end, rollup)
        assert across.passed, (name, across.mismatches[:5])
        for shard in (1, 2):  # each shard's parts carry the projection
            local = rollup_audit.audit(_client(cluster_stack, shard), start, end, rollup)
            assert local.passed and local.parts_without_projection == 0, (name, shard, local.mismatches[:5])
    assert rollup_audit.audit(_client(cluster_stack), start, end, ROLLUPS["p_route_minute"]).raw_spans >= sent


def test_dashboard_questions_read_through_the_read_layer(cluster_stack):
    """The saved dashboard questions, unchanged, as the reader account on the read database: each runs, and the
    requests per endpoint are the sum of the shards' own, among them this test's own traces."""
    from metrics_platform import dashboards

    service = f"questions-{uuid.uuid4().hex[:8]}"
    sent = _send_traces(cluster_stack, service, traces=40, children=1, seed=3)
    reader = _client(cluster_stack, reader=True)
    _wait_landed(reader, service, sent)
    answers = {name: dashboards.run(reader, name) for name in dashboards.available()}
    usage = answers["usage_by_endpoint_24h"]
    requests = {(row[0], row[1]): row[2] for row in usage.rows}
    # The question lists the 20 costliest endpoints: all of this test's, unless earlier tests' fill the list.
    ours = sum(n for (svc, _), n in requests.items() if svc == service)
    assert ours == 40 or len(usage.rows) == 20, usage.rows
    per_shard = _requests_per_endpoint_24h(cluster_stack)
    assert requests == {key: per_shard[key] for key in requests}


def _requests_per_endpoint_24h(settings) -> dict[tuple[str, str], int]:
    """Requests per (service, route) in the last day's hours, summed over each shard's own rows."""
    total: dict[tuple[str, str], int] = {}
    for shard in (1, 2):
        rows = (
            _client(settings, shard)
            .query(
                "SELECT service, route, count() FROM agent_events "
                "WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 1 DAY) AND is_request "
                "GROUP BY service, route"
            )
            .result_rows
        )
        for service, route, n in rows:
            total[(service, route)] = total.get((service, route), 0) + n
    return total


def _per_shard(settings, sql: str, params: dict | None = None) -> list[int]:
    return [int(_client(settings, shard).command(sql, parameters=params or {})) for shard in (1, 2)]


def test_dagster_objects_read_every_shard(cluster_stack):
    """The rollup audit check, evaluated in-process as Dagster runs it, audits each shard against its own raw
    rows: it passes, and its raw span count is the union of the shards' (exact). The alert sensor evaluates
    every rule through the read database."""
    import dagster as dg

    from metrics_platform.defs import resources
    from metrics_platform.defs.rollups import ROLLUP_ASSETS, ROLLUP_CHECKS
    from metrics_platform.rollups import ROLLUPS

    service = f"dagster-{uuid.uuid4().hex[:8]}"
    _wait_landed(_client(cluster_stack), service, _send_traces(cluster_stack, service, traces=100, seed=3))
    now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    start, end = now - timedelta(hours=2), now + timedelta(minutes=1)
    window = {"start": start.isoformat(), "end": end.isoformat()}
    asset = next(a for a in ROLLUP_ASSETS if a.key.path == ["p_route_minute"])
    check = next(c for c in ROLLUP_CHECKS if asset.key in {k.asset_key for k in c.check_keys})
    result = dg.materialize(
        [asset, check],
        resources=resources.resources(),
        selection=dg.AssetSelection.checks(check),
        run_config={"ops": {"p_route_minute_rollup_matches_raw": {"config": window}}},
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.metadata
    bucket = ROLLUPS["p_route_minute"].bucket
    sql = f"SELECT count() FROM agent_events WHERE {bucket} >= {{s:DateTime}} AND {bucket} < {{e:DateTime}}"
    shards = _per_shard(cluster_stack, sql, {"s": start, "e": end})
    assert all(shards), shards
    assert evaluation.metadata["raw_spans"].value == sum(shards)
    assert evaluation.metadata["parts_without_projection"].value == 0

    # The alert sensor evaluates every rule through the read database, the per-account ones too (their
    # users-to-accounts subquery runs GLOBAL over the Distributed tables).
    from metrics_platform.defs.alerts import build_alert_sensor, load_rules
    from metrics_platform.settings import Settings

    rules = load_rules(Settings.from_env(), keep=False).rules.rules
    context = dg.build_sensor_context(
        cursor=json.dumps({"active": [], "reported": {}}), resources=resources.resources()
    )
    tick = build_alert_sensor(checked_rules=rules)(context)
    message = tick.skip_reason.skip_message if tick.skip_reason else ""
    assert f"{len(rules)} rules" in message and "not evaluated" not in message, message


def test_model_drift_counts_the_calls_of_every_shard(cluster_stack):
    """Model drift is computed once, from the read layer's agent_events: a model's calls on both shards
    count (length quantiles cannot be merged from per-shard rows)."""
    from metrics_platform import drift
    from metrics_platform.stack import topology

    model, service = f"drift-{uuid.uuid4().hex[:8]}", f"drift-{uuid.uuid4().hex[:8]}"
    _wait_landed(_client(cluster_stack), service, _send_traces(cluster_stack, service, traces=60, model=model))
    read_database = topology.read_settings(cluster_stack).clickhouse.database
    today = datetime.now(UTC).date()
    stats = drift.refresh_model_drift(_client(cluster_stack, 1), [today], read_database)
    (row,) = [s for s in stats if s.model == model]
    shards = _per_shard(
        cluster_stack,
        "SELECT count() FROM agent_events WHERE model = {m:String} AND kind = 'llm' AND toDate(ts) = today()",
        {"m": model},
    )
    assert all(shards) and row.llm_calls == sum(shards) == 120, (row, shards)


def test_per_server_work_covers_every_shard(cluster_stack):
    """Dagster's enrichment loads put a full copy on every shard (read once through the read layer), cost by
    account covers every shard's events, the retention checks and storage inspect every shard, and unpriced
    models are counted on every shard (CLI and Dagster check alike)."""
    import dagster as dg
    from click.testing import CliRunner

    from metrics_platform.cli import main
    from metrics_platform.defs import resources
    from metrics_platform.defs.enrichment import billing_accounts, cost_by_account_daily, feature_flags
    from metrics_platform.defs.prices import model_prices, models_without_price
    from metrics_platform.defs.retention import nothing_past_retention, table_storage, ttl_matches_configuration

    model = f"mp-unpriced-{uuid.uuid4().hex[:8]}"
    service = f"per-server-{uuid.uuid4().hex[:8]}"
    sent = _send_traces(cluster_stack, service, traces=60, seed=5, model=model)
    _wait_landed(_client(cluster_stack), service, sent)
    reader = _client(cluster_stack)
    result = dg.materialize([billing_accounts, feature_flags, cost_by_account_daily], resources=resources.resources())
    assert result.success
    for table in ("billing_accounts", "feature_flags"):
        copies = _per_shard(cluster_stack, f"SELECT count() FROM {table}")
        assert copies[0] > 0 and copies[0] == copies[1], (table, copies)
        assert int(reader.command(f"SELECT count() FROM {table}")) == copies[0], table  # one copy read
    days = "(SELECT DISTINCT day FROM cost_by_account_daily)"
    per_shard_cost = _per_shard(cluster_stack, "SELECT toUInt64(sum(cost_usd) * 1e6) FROM cost_by_account_daily")
    events_cost = _per_shard(
        cluster_stack, f"SELECT toUInt64(sum(cost_usd) * 1e6) FROM agent_events WHERE toDate(ts) IN {days}"
    )
    assert all(per_shard_cost) and per_shard_cost == events_cost
    (cost,) = [m for m in result.get_asset_materialization_events() if m.asset_key == cost_by_account_daily.key]
    assert round(cost.materialization.metadata["cost_usd"].value * 1e6) == pytest.approx(sum(events_cost), abs=2)

    checks = [ttl_matches_configuration, nothing_past_retention]
    result = dg.materialize([table_storage, *checks], resources=resources.resources())
    assert (
        all(e.passed for e in result.get_asset_check_evaluations()) and len(result.get_asset_check_evaluations()) == 2
    )
    (storage,) = result.get_asset_materialization_events()
    rows = _per_shard(
        cluster_stack,
        "SELECT sum(rows) FROM system.parts WHERE active AND database = currentDatabase() AND table = 'agent_events'",
    )
    assert storage.materialization.metadata["agent_events.rows"].value == sum(rows) and all(rows)

    llm_calls = sent * 2 // 3  # two LLM spans under each request span
    shards = _per_shard(cluster_stack, "SELECT count() FROM agent_events WHERE model = {m:String}", {"m": model})
    assert all(shards) and sum(shards) == llm_calls, shards
    out = CliRunner().invoke(main, ["prices", "unpriced"])
    assert out.exit_code == 1 and [line.split()[-1] for line in out.output.splitlines() if model in line] == [
        f"{llm_calls:,}"
    ]
    result = dg.materialize(
        [model_prices, models_without_price],
        resources=resources.resources(),
        selection=dg.AssetSelection.checks(models_without_price),
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and model in evaluation.metadata["models"].value


def test_cli_readers_answer_from_every_shard(cluster_stack):
    """`summary`, `dashboard` and `lag` in the cluster's environment: counts are the union of the shards'."""
    from click.testing import CliRunner

    from metrics_platform.cli import main
    from metrics_platform.rollups import ROLLUPS

    runner = CliRunner()
    summary = runner.invoke(main, ["summary"])
    assert summary.exit_code == 0, summary.output
    spans = sum(_per_shard(cluster_stack, "SELECT count() FROM agent_events"))
    traces = sum(_per_shard(cluster_stack, "SELECT uniqExact(trace_id) FROM agent_events"))
    assert f"agent_events: {spans:,} spans in {traces:,} traces" in summary.output, summary.output
    assert "?database=metrics_cluster" in summary.output

    dashboard = runner.invoke(main, ["dashboard", "usage_by_endpoint_24h", "--rows", "100000"])
    assert dashboard.exit_code == 0, dashboard.output
    shown = {}
    for line in dashboard.output.splitlines():
        cells = line.strip().split(" | ")
        if len(cells) >= 3 and cells[2].isdigit():
            shown[(cells[0], cells[1])] = int(cells[2])
    expected = _requests_per_endpoint_24h(cluster_stack)
    assert shown and shown == {key: expected[key] for key in shown}
    assert len(shown) == len(expected)

    now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    start, end = now - timedelta(hours=2), now + timedelta(minutes=1)
    audit = runner.invoke(main, ["audit", "--start", start.isoformat(), "--end", end.isoformat(), "--rollup",
                                 "p_route_minute", "--repair"])  # fmt: skip
    assert audit.exit_code == 0, audit.output
    assert "materialized for 0 part(s) on shard 2" in audit.output, audit.output
    bucket = ROLLUPS["p_route_minute"].bucket
    in_window = f"SELECT count() FROM agent_events WHERE {bucket} >= {{s:DateTime}} AND {bucket} < {{e:DateTime}}"
    raw = sum(_per_shard(cluster_stack, in_window, {"s": start, "e": end}))
    assert f" {raw:,} raw spans, 0 mismatch(es), 0 part(s) without it" in audit.output, audit.output

    lag = runner.invoke(main, ["lag"])
    assert lag.exit_code == 0, lag.output
    assert "consumer shard 1" in lag.output and "consumer shard 2" in lag.output, lag.output
    assert "lag per leading broker: " in lag.output


def test_lag_is_reported_per_partition_with_its_broker_and_consumer(cluster_stack):
    from metrics_platform.stack import topology

    service = f"lag-{uuid.uuid4().hex[:8]}"
    _wait_landed(_client(cluster_stack), service, _send_traces(cluster_stack, service, traces=100))
    rows = topology.consumer_lag(cluster_stack, TOPOLOGY)
    spans = [r for r in rows if r.topic == cluster_stack.kafka.spans_topic]
    assert len(spans) == cluster_stack.kafka.partitions
    assert {r.leader_broker for r in rows} <= {1, 2, 3}
    # One group, its partitions split across the two servers' Kafka engine tables.
    assert {r.consumer for r in spans} == {"shard 1", "shard 2"}
    assert all(r.lag == 0 for r in spans), spans
    per_broker, per_consumer = cluster.lag_totals(rows)
    assert sum(per_broker.values()) == sum(per_consumer.values()) == sum(r.lag for r in rows)


def test_replay_across_shards_lands_each_event_once(cluster_stack, tmp_path):
    """A history day replayed through the read layer: stored once across the shards, traces whole on one shard,
    and a second replay finds every event already stored on whichever shard holds it."""
    import secrets

    import orjson

    from metrics_platform import replay

    service = f"replay-{uuid.uuid4().hex[:8]}"
    day = datetime.now(UTC).date() - timedelta(days=2)
    lines = []
    for i in range(60):
        trace, root = secrets.token_hex(16), secrets.token_hex(8)
        moment = datetime(day.year, day.month, day.day, 10, tzinfo=UTC) + timedelta(seconds=41 * i)
        common = {"trace_id": trace, "service": service, "route": f"POST /r{i % 3}", "status": "ok"}
        lines.append({**common, "ts": moment.isoformat(), "span_id": root, "parent_span_id": "", "latency_ms": 900})
        for child in range(2):
            lines.append({**common, "ts": (moment + timedelta(milliseconds=10 + child)).isoformat(),
                          "span_id": secrets.token_hex(8), "parent_span_id": root, "latency_ms": 300,
                          "model": "gpt-4.1", "tokens_prompt": 100, "kind": "llm"})  # fmt: skip
    (tmp_path / f"{day}.jsonl").write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    read = _client(cluster_stack)
    report = replay.replay_day(day, tmp_path, cluster_stack, read, run_id="cluster")
    assert (report.valid, report.produced) == (180, 180), report.rejects[:3]
    assert _wait_landed(read, service, 180) == (180, 180)
    shards_per_trace = read.query(
        # tcpPort() is evaluated on the shard that holds the row.
        "SELECT trace_id, groupUniqArray(tcpPort()) FROM agent_events WHERE service = {s:String} GROUP BY trace_id",
        parameters={"s": service},
    ).result_rows
    assert len(shards_per_trace) == 60 and all(len(ports) == 1 for _, ports in shards_per_trace)
    again = replay.replay_day(day, tmp_path, cluster_stack, read, run_id="cluster-again")
    assert (again.produced, again.already_stored) == (0, 180)
    assert _landed(read, service) == (180, 180)


def test_kill_9_of_a_broker_under_load_loses_nothing(cluster_stack):
    """While the Collector is sending, the broker coordinating ClickHouse's consumer group of the spans topic is
    killed (with 3 brokers it leads a partition as well, as a rule); the supervisor starts it again. The servers'
    offset commits fail meanwhile, and the group's rebalance usually hands each partition to the other server,
    which reads again from the last committed offset: every acknowledged span still lands exactly once across the
    shards (sql/0022)."""
    from metrics_platform import kafka_clients
    from metrics_platform.stack import topology

    service = f"brokerkill-{uuid.uuid4().hex[:8]}"
    group = f"{cluster_stack.kafka.consumer_group_prefix}_otel_spans"
    admin = kafka_clients.admin(cluster_stack.kafka)
    coordinator = admin.describe_consumer_groups([group])[group].result(timeout=10).coordinator.id
    victim = topology.broker_daemon(cluster_stack, coordinator)
    pid = victim.pid()
    assert pid is not None
    sent: list[int] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            deadline = time.monotonic() + 20
            seed = 0
            while time.monotonic() < deadline:
                sent.append(_send_traces(cluster_stack, service, traces=40, seed=seed))
                seed += 1
                time.sleep(0.1)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    sender = threading.Thread(target=load)
    sender.start()
    time.sleep(5)
    os.kill(pid, signal.SIGKILL)
    sender.join()
    assert not errors, errors
    wait_for(lambda: victim.pid() not in (None, pid), 30, f"broker {coordinator} restarted by the supervisor")
    total, unique = _wait_landed(_client(cluster_stack), service, sum(sent), timeout_s=150)
    moved = _client(cluster_stack).command(
        "SELECT countIf(n > 1) FROM (SELECT source_partition, uniqExact(_shard_num) AS n FROM span_inbox"
        " WHERE service = {s:String} GROUP BY source_partition)",
        parameters={"s": service},
    )
    print(f"broker {coordinator} kill: {sum(sent)} spans sent, {unique} stored, {total - unique} stored twice, "
          f"{moved} partition(s) read by both servers")  # fmt: skip
    assert (total, unique) == (sum(sent), sum(sent)), f"{total - sum(sent)} duplicated, {sum(sent) - unique} lost"
    assert victim.restarts() >= 1


def test_kill_9_of_a_shard_server_under_load_loses_nothing(cluster_stack):
    """Shard 2's server is killed while spans arrive; the supervisor starts it again from its data directory.
    Every acknowledged span is stored; the Kafka engine is at-least-once, so a block the dead server had
    stored but not committed may be stored again by the server that takes its partitions over."""
    from metrics_platform.stack import topology

    service = f"shardkill-{uuid.uuid4().hex[:8]}"
    victim = topology.shard_daemon(cluster_stack, 2)
    pid = victim.pid()
    assert pid is not None
    sent: list[int] = []

    def load() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            sent.append(_send_traces(cluster_stack, service, traces=40, seed=len(sent)))
            time.sleep(0.1)

    sender = threading.Thread(target=load)
    sender.start()
    time.sleep(4)
    os.kill(pid, signal.SIGKILL)
    sender.join()
    node = topology.shards(cluster_stack, TOPOLOGY)[1]
    wait_for(lambda: victim.pid() not in (None, pid) and topology._healthy(node), 90, "shard 2 restarted")
    total, unique = _wait_landed(_client(cluster_stack), service, sum(sent), timeout_s=150)
    print(f"shard kill: {sum(sent)} spans sent, {unique} stored, {total - unique} stored twice")
    assert unique == sum(sent), f"{sum(sent) - unique} spans lost"
    assert victim.restarts() >= 1
