"""A local cluster on one machine: several Kafka brokers and one embedded ClickHouse server per shard.

``metrics-platform up --topology brokers=3,shards=2`` (or ``up(settings, Topology(3, 2))``) starts:

- N KRaft brokers (combined broker+controller, static voters, one cluster id), replication factor 3 and
  ``min.insync.replicas`` 2 when there are 3 or more, from the project's jars (kafka_broker.install);
- one embedded ClickHouse server per shard (clickhouse_server.py), each with ``remote_servers`` and
  ``macros`` in its config, the single-node migrations applied to it (its own ledger), the price table
  loaded into it, and the read database of Distributed tables (cluster.py) on top;
- the Collector, writing to every broker. Its kafka exporter keys records by trace id
  (``partition_traces_by_id``), the servers' Kafka engine tables share one consumer group, so each
  server receives whole traces and attributes them alone.

Every process runs under the stack's supervisord like the single-node ones (names ``kafka-<i>`` and
``clickhouse-<s>``); shard 1 and broker 1 keep the platform's configured ports, so the Collector's and
ClickHouse's URLs stay the same. The topology and the services started with it are kept in
``<state>/cluster/topology.json`` so that ``down`` and ``status`` know what runs and what should. Dagster
(and Superset, when asked) start as in single-node mode, with the same starters; every reader (Superset's
connection, Dagster's reading checks and sensors, the CLI's ``summary``/``dashboard``/``audit``) finds the
read database through ``clickhouse.read_database``, which sees the topology file. Per-server work (migrations,
price and enrichment loads, cost and cost-by-account recompute, rollup repair, retention and unpriced-model
checks) runs on every shard, from the CLI and Dagster alike (``servers``); model drift is computed from
shard 1's events only (docs/runbook.md, "Cluster mode").
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from clickhouse_connect.driver.client import Client

from metrics_platform import clickhouse, cluster, migrations
from metrics_platform.cluster import Node, Topology
from metrics_platform.prices.load import load_prices
from metrics_platform.settings import Settings
from metrics_platform.stack import collector, kafka_broker
from metrics_platform.stack.clickhouse_users import write_private
from metrics_platform.stack.process import Daemon, StackError, http_get, port_in_use, require_free_ports, wait_until

Report = Callable[[str], None]


def cluster_dir(settings: Settings) -> Path:
    return settings.state_dir / "cluster"


def active(settings: Settings) -> Topology | None:
    """The local cluster's topology if ``up --topology`` made one in this state directory (until ``down``)."""
    try:
        data = json.loads((cluster_dir(settings) / "topology.json").read_text())
    except FileNotFoundError:
        return None
    return Topology.parse(data["topology"])


def started_services(settings: Settings) -> frozenset[str]:
    """What ``up`` started besides the servers and the Collector ("dagster", "superset"), from topology.json;
    empty when no cluster is set up (or one set up before this was recorded)."""
    try:
        data = json.loads((cluster_dir(settings) / "topology.json").read_text())
    except FileNotFoundError:
        return frozenset()
    return frozenset(data.get("services", ()))


def read_database(settings: Settings) -> str:
    return settings.cluster.read_database or f"{settings.clickhouse.database}_cluster"


def brokers(settings: Settings, topology: Topology) -> list[Node]:
    controller = settings.kafka.controller_port
    return cluster.broker_nodes(topology, _kafka_port(settings), controller, settings.cluster.port_base)


def shards(settings: Settings, topology: Topology) -> list[Node]:
    ch = settings.clickhouse
    return cluster.shard_nodes(topology, ch.http_port, ch.tcp_port, settings.cluster.port_base)


def _kafka_port(settings: Settings) -> int:
    return int(settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


def cluster_settings(settings: Settings, topology: Topology) -> Settings:
    """``settings`` with every broker in the bootstrap list (Collector, ClickHouse's Kafka engine, clients)."""
    servers = ",".join(f"127.0.0.1:{node.port}" for node in brokers(settings, topology))
    kafka = dataclasses.replace(settings.kafka, bootstrap_servers=servers, clickhouse_brokers=servers)
    return dataclasses.replace(settings, kafka=kafka)


def shard_settings(settings: Settings, node: Node) -> Settings:
    """``settings`` pointing at one shard's server (its local database)."""
    ch = dataclasses.replace(settings.clickhouse, http_port=node.port, tcp_port=node.second_port)
    return dataclasses.replace(settings, clickhouse=ch)


def servers(settings: Settings) -> list[tuple[str, Settings]]:
    """Where per-shard writes go: (``"shard <n>"``, settings of that server) for each shard of the local cluster
    set up in this state directory; on a real cluster (``METRICS_PLATFORM_CLICKHOUSE_READ_DATABASE`` set), one
    server per shard of ``system.clusters``; else ``[("", settings)]`` (the configured server)."""
    shape = active(settings)
    if shape is not None:
        cs = cluster_settings(settings, shape)
        return [(f"shard {node.index}", shard_settings(cs, node)) for node in shards(cs, shape)]
    if settings.cluster.read_database:
        return [_host_server(settings, h) for h in cluster.write_targets(_cluster_hosts(settings))]
    return [("", settings)]


def migration_servers(settings: Settings) -> list[tuple[str, Settings]]:
    """Where the migration runner runs: each shard of the local cluster; on a real cluster whose DDL is
    cluster-wide (``ON CLUSTER``, a ``Replicated`` database) the configured server once, else every server;
    on a single node, that node."""
    if active(settings) is not None or not settings.cluster.read_database:
        return servers(settings)
    ch = clickhouse.client(settings.clickhouse)
    try:
        mode = migrations.ddl_mode(ch, settings)
    finally:
        ch.close()
    if mode.cluster_wide:
        return [("", settings)]
    return [_host_server(settings, h) for h in _cluster_hosts(settings)]


def read_layer_servers(settings: Settings) -> list[tuple[str, Settings]]:
    """Every server that needs the read database's Distributed tables (each is a per-server object): the
    local cluster's shards, every server of a real cluster, none on a single node."""
    if active(settings) is not None:
        return servers(settings)
    if settings.cluster.read_database:
        return [_host_server(settings, h) for h in _cluster_hosts(settings)]
    return []


def _cluster_hosts(settings: Settings) -> list[cluster.ClusterHost]:
    ch = clickhouse.client(settings.clickhouse)
    try:
        rows = ch.query(cluster.CLUSTER_HOSTS_QUERY, parameters={"name": settings.cluster.name}).result_rows
    finally:
        ch.close()
    return cluster.cluster_hosts(rows, settings.cluster.name)


def _host_server(settings: Settings, host: cluster.ClusterHost) -> tuple[str, Settings]:
    # A real cluster's servers answer HTTP on one port (the configured one); system.clusters lists native ports.
    ch = dataclasses.replace(settings.clickhouse, host=host.host)
    return f"shard {host.shard} replica {host.replica} ({host.host})", dataclasses.replace(settings, clickhouse=ch)


def read_settings(settings: Settings) -> Settings:
    """``settings`` whose ClickHouse database is the read layer (Distributed tables): what readers use."""
    ch = dataclasses.replace(settings.clickhouse, database=read_database(settings))
    return dataclasses.replace(settings, clickhouse=ch)


def broker_daemon(settings: Settings, index: int) -> Daemon:
    return Daemon(f"kafka-{index}", settings.run_dir, settings.log_dir)


def shard_daemon(settings: Settings, index: int) -> Daemon:
    return Daemon(f"clickhouse-{index}", settings.run_dir, settings.log_dir)


# --- Kafka ------------------------------------------------------------------------------------------------


def render_broker_properties(settings: Settings, topology: Topology, node: Node, log_dir: Path) -> str:
    """One broker's server.properties: a combined node of a static-voter KRaft quorum on loopback."""
    voters = ",".join(f"{n.index}@127.0.0.1:{n.second_port}" for n in brokers(settings, topology))
    rf, isr = topology.replication_factor, topology.min_insync_replicas
    k = settings.kafka
    return "\n".join(
        [
            "# Written by metrics-platform (local cluster); edits are overwritten at start.",
            "process.roles=broker,controller",
            f"node.id={node.index}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.second_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={log_dir}",
            f"num.partitions={k.partitions}",
            f"log.retention.ms={k.retention_hours * 3600 * 1000}",
            "auto.create.topics.enable=false",
            f"message.max.bytes={k.max_message_bytes}",
            f"replica.fetch.max.bytes={k.max_message_bytes}",
            # Topics (created with replication_factor -1) and internal topics take these.
            f"default.replication.factor={rf}",
            f"min.insync.replicas={isr}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={isr}",
            "group.initial.rebalance.delay.ms=0",
            # A dead broker is fenced after this long; producers with acks=all wait for it meanwhile.
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=6000",
            "",
        ]
    )


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("Java 17+ is needed to run Kafka; install it (apt-get install openjdk-17-jre-headless)")
    return java


def _cluster_id(settings: Settings) -> str:
    """One id for every broker's storage, kept with the cluster's state."""
    path = cluster_dir(settings) / "kafka_cluster_id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    return path.read_text().strip()


def start_broker(settings: Settings, topology: Topology, node: Node) -> None:
    """Format the broker's storage on first use and start it (no wait: a quorum needs its peers)."""
    daemon = broker_daemon(settings, node.index)
    if daemon.pid() is not None:
        return
    require_free_ports(f"Kafka broker {node.index}", {"broker": node.port, "controller": node.second_port})
    libs = kafka_broker.install(settings)
    home = cluster_dir(settings) / f"kafka-{node.index}"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    write_private(properties, render_broker_properties(settings, topology, node, data))
    classpath, java = f"{libs}/*", _java()
    if not (data / "meta.properties").exists():
        command = [java, "-cp", classpath, "kafka.tools.StorageTool", "format"]
        command += [f"--cluster-id={_cluster_id(settings)}", "-c", str(properties)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {data} failed:\n{result.stdout}{result.stderr}")
    overrides = [arg for key, value in kafka_broker.IDLE_OVERRIDES.items() for arg in ("--override", f"{key}={value}")]
    daemon.start(
        [
            java,
            *kafka_broker.JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={kafka_broker.LOG4J}",
            f"-Dkafka.logs.dir={settings.log_dir / f'kafka-{node.index}'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(properties),
            *overrides,
        ],
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )


def _brokers_ready(settings: Settings, expected: int) -> bool:
    from confluent_kafka.admin import AdminClient

    from metrics_platform.kafka_clients import LIBRDKAFKA_LOG

    if not all(port_in_use(int(s.rsplit(":", 1)[1])) for s in settings.kafka.bootstrap_servers.split(",")):
        return False
    config = {"bootstrap.servers": settings.kafka.bootstrap_servers, "logger": LIBRDKAFKA_LOG}
    return len(AdminClient(config).list_topics(timeout=2).brokers) == expected


# --- ClickHouse -------------------------------------------------------------------------------------------


def _healthy(node: Node) -> bool:
    try:
        status, body = http_get(f"http://127.0.0.1:{node.port}/ping", timeout_s=1.0)
    except OSError:
        return False
    return status == 200 and body.strip() == "Ok."


def start_shard(settings: Settings, topology: Topology, node: Node, timeout_s: float = 90.0) -> None:
    """Start shard ``node``'s server, joined to the cluster, and wait for /ping."""
    daemon = shard_daemon(settings, node.index)
    if daemon.pid() is None:
        require_free_ports(f"ClickHouse shard {node.index}", {"HTTP": node.port, "native": node.second_port})
        home = cluster_dir(settings) / f"clickhouse-{node.index}"
        home.mkdir(parents=True, exist_ok=True)
        ch = settings.clickhouse
        # Distributed tables reach the other shards as the platform's writer (the file is owner-only).
        xml = cluster.cluster_xml(
            settings.cluster.name,
            [("127.0.0.1", n.second_port) for n in shards(settings, topology)],
            node.index,
            ch.user,
            ch.password,
        )
        fragment = home / "cluster.xml"
        write_private(fragment, xml)
        daemon.start(
            [
                sys.executable,
                "-m",
                "metrics_platform.stack.clickhouse_server",
                *("--data-dir", str(home / "data"), "--run-dir", str(home / "run")),
                *("--http-port", str(node.port), "--tcp-port", str(node.second_port)),
                *("--cluster-xml", str(fragment), "--read-database", read_database(settings)),
            ]
        )
    wait_until(lambda: _healthy(node), timeout_s, f"ClickHouse shard {node.index} on :{node.port}/ping", daemon)


def prepare_shard(settings: Settings, node: Node, report: Report) -> None:
    """The single-node schema on one server (its own ledger), its price table, then its read layer."""
    local = shard_settings(settings, node)
    ch = clickhouse.client(local.clickhouse)
    try:
        applied = migrations.migrate(ch, local)
        loaded = load_prices(ch, settings.price_overrides)
        ensure_read_layer(ch, settings)
    finally:
        ch.close()
    report(f"  shard {node.index}: {len(applied)} migration(s) applied, {loaded.entries:,} prices loaded")


def ensure_read_layer(ch: Client, settings: Settings) -> list[str]:
    """Create the read database's Distributed tables and views on one server; returns the statements."""
    local_db = settings.clickhouse.database
    rows = ch.query(cluster.LOCAL_TABLES_QUERY, parameters={"db": local_db}).result_rows
    name = settings.cluster.name
    every_server = migrations.every_server_cluster_of(ch, settings) or name
    statements = cluster.read_layer_ddl(
        local_db, read_database(settings), name, cluster.local_tables(rows), every_server
    )
    for statement in statements:
        ch.command(statement)
    return statements


def ensure_read_layers(settings: Settings) -> list[str]:
    """The read layer on every server that needs it (``read_layer_servers``), picking up tables that migrations
    added; returns the labels of the servers done."""
    done = []
    for label, server in read_layer_servers(settings):
        ch = clickhouse.client(server.clickhouse)
        try:
            ensure_read_layer(ch, server)
        finally:
            ch.close()
        done.append(label)
    return done


def _partitions_assigned(settings: Settings, topology: Topology) -> bool:
    """Whether the shards' Kafka engine tables hold every partition between them, each shard some (when there
    are enough). The consumers join their group seconds after the tables exist; spans sent before then wait
    in Kafka until they do."""
    held: dict[str, list[int]] = {}
    for node in shards(settings, topology):
        ch = clickhouse.client(shard_settings(settings, node).clickhouse)
        try:
            rows = ch.query(
                "SELECT table, sum(length(assignments.partition_id)) FROM system.kafka_consumers "
                "WHERE database = currentDatabase() GROUP BY table"
            ).result_rows
            tables = ch.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'Kafka'"
            ).result_rows
        finally:
            ch.close()
        counts = {str(table): int(n) for table, n in rows}
        for (table,) in tables:
            held.setdefault(str(table), []).append(counts.get(str(table), 0))
    partitions = settings.kafka.partitions
    return bool(held) and all(
        sum(per_shard) == partitions and (partitions < len(per_shard) or min(per_shard) > 0)
        for per_shard in held.values()
    )


# --- the whole cluster ------------------------------------------------------------------------------------


def up(
    settings: Settings,
    topology: Topology,
    report: Report = print,
    with_dagster: bool = False,
    with_superset: bool = False,
) -> Settings:
    """Start the local cluster (brokers, topics, shards with their schema, the Collector), then Dagster and
    Superset when asked (``platform.up``, hence ``up --topology``, asks for Dagster by default); returns the
    settings every client of this cluster should use. A failure stops what was started and raises."""
    if settings.kafka.sasl or not settings.kafka.embedded or not settings.clickhouse.embedded:
        raise StackError("the local cluster mode runs embedded Kafka (PLAINTEXT) and embedded ClickHouse only")
    if settings.cluster.replicated or settings.cluster.on_cluster:
        raise StackError(
            "METRICS_PLATFORM_CLICKHOUSE_REPLICATED/_ON_CLUSTER are for real ClickHouse clusters: the embedded "
            "engine cannot replicate or run ON CLUSTER; unset them for the local cluster"
        )
    current = active(settings)
    if current is not None and current != topology:
        raise StackError(f"a local cluster ({current}) is set up in {settings.state_dir}: run `down` first")
    cluster_dir(settings).mkdir(parents=True, exist_ok=True)
    # What runs, for `down` and `status` (which shows a started service as DOWN when it is not running).
    services = [name for name, wanted in (("dagster", with_dagster), ("superset", with_superset)) if wanted]
    (cluster_dir(settings) / "topology.json").write_text(json.dumps({"topology": str(topology), "services": services}))
    cs = cluster_settings(settings, topology)
    try:
        from metrics_platform import kafka_clients

        report(f"Kafka: starting {topology.brokers} broker(s) (RF {topology.replication_factor}, "
               f"min ISR {topology.min_insync_replicas})")  # fmt: skip
        nodes = brokers(settings, topology)
        for node in nodes:
            start_broker(cs, topology, node)
        what = f"{len(nodes)} Kafka brokers on {cs.kafka.bootstrap_servers}"
        wait_until(lambda: _brokers_ready(cs, len(nodes)), 120, what)
        created = kafka_clients.ensure_topics(cs.kafka)
        report(f"  topics created: {', '.join(created)}" if created else "  topics exist")
        report(f"ClickHouse: starting {topology.shards} shard server(s)")
        for node in shards(settings, topology):
            start_shard(cs, topology, node)
        for node in shards(settings, topology):
            prepare_shard(cs, node, report)
        report(f"  readers: database {read_database(cs)} (Distributed tables over every shard)")
        report("Collector: starting, writing to every broker")
        collector.start(cs)
        what = "every shard's Kafka consumers to get their partitions"
        wait_until(lambda: _partitions_assigned(cs, topology), 90, what)
        _start_services(cs, with_dagster, with_superset, report)
    except BaseException:
        down(settings, report)
        raise
    return cs


def _start_services(settings: Settings, with_dagster: bool, with_superset: bool, report: Report) -> None:
    """Dagster and Superset, with the single-node starters: they read through the read database, which
    ``clickhouse.read_database`` finds from the topology file written before."""
    from metrics_platform.stack import dagster_services, platform

    if with_dagster:
        report(f"Dagster: starting the webserver ({dagster_services.ui_url(settings)}) and the daemon")
        dagster_services.start(settings)
    if with_superset:
        platform.superset_up(settings, report)


def down(settings: Settings, report: Report = print) -> bool:
    """Stop the local cluster (Superset and Dagster, then the Collector, so nothing in flight is dropped);
    False if none was set up."""
    from metrics_platform.stack import dagster_services, superset

    topology = active(settings)
    if topology is None:
        return False
    for name, stop in (("Superset", superset.stop), ("Dagster", dagster_services.stop)):
        if stop(settings):
            report(f"{name}: stopped")
    report(f"Collector: {'stopped' if collector.stop(settings) else 'not running'}")
    servers = [(f"ClickHouse shard {n.index}", shard_daemon(settings, n.index), 90) for n in shards(settings, topology)]
    _stop_together(servers, report)
    # Together: a broker stopping after the others lost the controller quorum waits for it until killed.
    _stop_together(
        [(f"Kafka broker {n.index}", broker_daemon(settings, n.index), 60) for n in brokers(settings, topology)], report
    )
    (cluster_dir(settings) / "topology.json").unlink(missing_ok=True)
    return True


def _stop_together(daemons: list[tuple[str, Daemon, float]], report: Report) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(daemons)) as pool:
        outcomes = list(pool.map(lambda item: item[1].stop(timeout_s=item[2]), daemons))
    for (name, _, _), stopped in zip(daemons, outcomes, strict=True):
        report(f"{name}: {'stopped' if stopped else 'not running'}")


def status(settings: Settings, topology: Topology) -> list[tuple[str, Daemon, str, bool | None]]:
    """The cluster's servers for ``platform.status``: (name, daemon, where, healthy)."""
    rows: list[tuple[str, Daemon, str, bool | None]] = []
    for node in brokers(settings, topology):
        rows.append((f"kafka-{node.index}", broker_daemon(settings, node.index), f"127.0.0.1:{node.port}", None))
    for node in shards(settings, topology):
        where = f"http://127.0.0.1:{node.port}"
        rows.append((f"clickhouse-{node.index}", shard_daemon(settings, node.index), where, _healthy(node)))
    return rows


def consumer_lag(settings: Settings, topology: Topology, timeout_s: float = 10.0) -> list[cluster.OwnedLag]:
    """Lag of ClickHouse's consumer groups per partition, with each partition's leading broker and the shard
    whose Kafka engine table holds it (system.kafka_consumers of every shard)."""
    from metrics_platform import kafka_clients, kafka_lag

    owners: dict[tuple[str, int], str] = {}
    for node in shards(settings, topology):
        try:
            ch = clickhouse.client(shard_settings(settings, node).clickhouse)
        except Exception:  # a shard that is down owns nothing now; its partitions show without a consumer
            continue
        try:
            rows = ch.query(
                "SELECT topic, toInt64(partition) FROM system.kafka_consumers "
                "ARRAY JOIN assignments.topic AS topic, assignments.partition_id AS partition"
            ).result_rows
        finally:
            ch.close()
        owners |= {(str(topic), int(partition)): f"shard {node.index}" for topic, partition in rows}
    admin = kafka_clients.admin(settings.kafka)
    result: list[cluster.OwnedLag] = []
    for group, topic in kafka_lag.clickhouse_groups(settings.kafka).items():
        metadata = admin.list_topics(topic, timeout=timeout_s).topics[topic]
        leaders = {p: meta.leader for p, meta in metadata.partitions.items()}
        lags = {p.partition: p.lag for p in kafka_lag.group_lag(settings.kafka, group, topic, timeout_s)}
        result += cluster.lag_by_owner(group, topic, lags, leaders, owners)
    return result
