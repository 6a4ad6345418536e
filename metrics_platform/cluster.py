"""Cluster rendering: topology, the replicated variant of the migrations, the Distributed read layer.

Pure functions over plain data; starting a local cluster is ``stack/topology.py``.

One migration set serves every shape. Per server the local schema is exactly the single-node one
(span_inbox, agent_events with its projections, the finalizer, the ledger). A cluster adds:

- on real ClickHouse servers, the replicated variant of each statement (``statement_transform``):
  ``*MergeTree`` engines become ``Replicated*MergeTree`` and DDL gets ``ON CLUSTER``, except for the tables
  each server keeps for itself (``SERVER_LOCAL_TABLES``). This is a render-time transformation: released
  migration files are never edited (the runner refuses an edited file by its checksum, which covers the
  template, not the rendering);
- a read database (``<database>_cluster`` by default) on every server, with a Distributed table over each
  local table that holds events, a view over each table every server keeps a full copy of (prices, the
  ledger), and a Distributed table over every server for what each keeps of its own (its inbox). Readers
  switch one database name; aggregate states merge across shards in the initiator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from xml.sax.saxutils import escape

from metrics_platform.enrichment.cost import DayCost
from metrics_platform.prices.load import UnpricedModel
from metrics_platform.rollup_audit import AuditResult, Mismatch


class TopologyError(ValueError):
    """A topology string or cluster layout that cannot work; the message says why."""


@dataclass(frozen=True)
class Topology:
    """How many Kafka brokers and ClickHouse shards a platform runs (one replica per shard locally)."""

    brokers: int = 1
    shards: int = 1

    @classmethod
    def parse(cls, text: str) -> Topology:
        """``brokers=3,shards=2`` (either part may be left out; it then stays 1)."""
        values: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in ("brokers", "shards") or not raw.strip().isdigit():
                raise TopologyError(f"topology {text!r}: expected brokers=N,shards=M, got {item!r}")
            values[key] = int(raw)
        topology = cls(**values)
        if topology.brokers not in (1, 3, 5):
            # A KRaft quorum of combined nodes needs an odd count; 3 tolerates one failure.
            raise TopologyError(f"topology {text!r}: brokers must be 1, 3 or 5 (a KRaft voter quorum)")
        if not 1 <= topology.shards <= 8:
            raise TopologyError(f"topology {text!r}: shards must be between 1 and 8 on one machine")
        return topology

    @property
    def clustered(self) -> bool:
        return self.brokers > 1 or self.shards > 1

    @property
    def replication_factor(self) -> int:
        return min(3, self.brokers)

    @property
    def min_insync_replicas(self) -> int:
        # acks=all then survives the loss of one broker and still never acknowledges a single copy.
        return 2 if self.replication_factor >= 3 else 1

    def __str__(self) -> str:
        return f"brokers={self.brokers},shards={self.shards}"


@dataclass(frozen=True)
class Node:
    """One server of the local cluster: its index (1-based) and ports."""

    index: int
    port: int  # Kafka client port, or ClickHouse HTTP port
    second_port: int  # Kafka controller port, or ClickHouse native port


def broker_nodes(topology: Topology, first_port: int, first_controller_port: int, port_base: int) -> list[Node]:
    """Broker 1 keeps the platform's configured ports; the others take ports from ``port_base``."""
    nodes = [Node(1, first_port, first_controller_port)]
    nodes += [Node(i, port_base + 10 * (i - 1), port_base + 10 * (i - 1) + 1) for i in range(2, topology.brokers + 1)]
    return nodes


def shard_nodes(topology: Topology, first_http_port: int, first_tcp_port: int, port_base: int) -> list[Node]:
    """Shard 1 keeps the platform's configured ClickHouse ports (readers keep their URL); the others take
    ports from ``port_base + 100``."""
    base = port_base + 100
    nodes = [Node(1, first_http_port, first_tcp_port)]
    nodes += [Node(s, base + 10 * (s - 1), base + 10 * (s - 1) + 1) for s in range(2, topology.shards + 1)]
    return nodes


def cluster_xml(
    cluster: str, shards: Sequence[tuple[str, int]], shard_index: int, user: str, password: str, replica: str = "r1"
) -> str:
    """The config.xml fragment of one server: ``remote_servers`` (one replica per shard), its ``macros``,
    and a pool that sends asynchronous Distributed inserts (without it they are never sent)."""
    replicas = "".join(
        f"""
            <shard><replica><host>{escape(host)}</host><port>{port}</port>"""
        f"<user>{escape(user)}</user><password>{escape(password)}</password></replica></shard>"
        for host, port in shards
    )
    return f"""
    <remote_servers>
        <{_identifier(cluster)}>{replicas}
        </{cluster}>
    </remote_servers>
    <macros>
        <cluster>{cluster}</cluster>
        <shard>{shard_index}</shard>
        <replica>{escape(replica)}</replica>
    </macros>
    <background_distributed_schedule_pool_size>4</background_distributed_schedule_pool_size>"""


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TopologyError(f"cluster or database name {name!r} must be letters, digits and underscores")
    return name


# --- the replicated variant -------------------------------------------------------------------------------

# `ENGINE = MergeTree`, `ENGINE = AggregatingMergeTree`, `ENGINE = ReplacingMergeTree(version)`, ...
_ENGINE_RE = re.compile(r"\bENGINE\s*=\s*(?P<family>[A-Za-z]*)MergeTree\b(?:\s*\((?P<args>[^()]*)\))?", re.IGNORECASE)
# ClickHouse's own default Keeper path. {uuid} is the same on every replica of a table created ON CLUSTER and
# new for each new table: a path naming the table would collide when a table swap (enrichment, retention)
# creates a table under a name whose previous holder still owns that path.
ZK_PATH = "/clickhouse/tables/{uuid}/{shard}"
# The migration ledger of a cluster with cluster-wide DDL: one for every server, whichever the runner reaches.
LEDGER_ZK_PATH = "/clickhouse/metrics_platform/{database}/schema_migrations"
# Where ON CLUSTER goes: after the object's name (CREATE/ALTER/DROP/...), or at the end (RENAME).
_NAMED_DDL_RE = re.compile(
    r"^(?P<head>\s*(?:CREATE|ALTER|DROP|TRUNCATE)\s+"
    r"(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?"
    r"(?:TABLE|MATERIALIZED\s+VIEW|VIEW|DICTIONARY|FUNCTION|DATABASE)\s+"
    r"(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
    r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_.]*))",
    re.IGNORECASE,
)
_RENAME_RE = re.compile(r"^\s*(?:RENAME|EXCHANGE)\s+(?:TABLE|TABLES|DICTIONARY)\b", re.IGNORECASE)
_CREATE_TABLE_RE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE
)
# Tables every server keeps for itself, never replicated, also where the rest replicates:
# - span_inbox: the Kafka engine's staging; the finalizer's cursor is its _block_number, which is one server's
#   commit order (a replicated table takes block numbers from Keeper, before commit, per partition);
# - finalizer_skips: that cursor's other half;
# - user_cost_30d_snapshots: what every server computes from its shard's replicated events (and 0014's
#   user_cost_30d before it: ClickHouse refuses a full refresh into a Replicated* table outside a Replicated
#   database).
# Each server runs the refreshable views over its own copies (sql/0017, 0018); agent_events says which server
# finalized a row (finalized_by), so the replicas of a shard share agent_events without sharing a cursor.
SERVER_LOCAL_TABLES = frozenset({"span_inbox", "finalizer_skips", "user_cost_30d", "user_cost_30d_snapshots"})


def replicated_engines(statement: str, explicit_path: bool = True) -> str:
    """Every ``*MergeTree`` engine of ``statement`` as its ``Replicated*MergeTree`` twin; the engine's own
    arguments follow. ``explicit_path``: with ``ZK_PATH`` and the ``{replica}`` macro (DDL ON CLUSTER);
    without: the arguments the server chooses (inside a ``Replicated`` database, which since ClickHouse 24.9
    refuses explicit ones by default: ``database_replicated_allow_replicated_engine_arguments`` = 0). A
    statement creating one of the ``SERVER_LOCAL_TABLES`` is left as written."""
    if _created_table(statement) in SERVER_LOCAL_TABLES:
        return statement

    def swap(match: re.Match[str]) -> str:
        family, args = match.group("family"), (match.group("args") or "").strip()
        if family.lower().startswith("replicated"):
            return match.group(0)
        if not explicit_path:
            return f"ENGINE = Replicated{family}MergeTree" + (f"({args})" if match.group("args") is not None else "")
        extra = f", {args}" if args else ""
        return f"ENGINE = Replicated{family}MergeTree('{ZK_PATH}', '{{replica}}'{extra})"

    return _ENGINE_RE.sub(swap, statement)


def _created_table(statement: str) -> str | None:
    match = _CREATE_TABLE_RE.match(_without_leading_comments(statement))
    return match.group("name").strip("`") if match else None


def on_cluster(statement: str, cluster: str) -> str:
    """``statement`` run on every server of ``cluster`` (DDL only; INSERT/SELECT/SYSTEM are left alone)."""
    clause = f" ON CLUSTER {_identifier(cluster)}"
    code = _without_leading_comments(statement)
    prefix = statement[: len(statement) - len(code)]
    if re.search(r"\bON\s+CLUSTER\b", code, re.IGNORECASE):
        return statement
    match = _NAMED_DDL_RE.match(code)
    if match:
        return prefix + match.group("head") + clause + code[match.end() :]
    if _RENAME_RE.match(code):
        return prefix + code.rstrip() + clause
    return statement


def _without_leading_comments(statement: str) -> str:
    lines = statement.splitlines(keepends=True)
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "".join(lines)


@dataclass(frozen=True)
class DdlMode:
    """How migration DDL reaches the servers of a real cluster.

    ``replicated``: tables replicate (``Replicated*MergeTree``); ``on_cluster``: DDL carries ``ON CLUSTER
    <cluster>``; ``replicated_database``: the database is a ``Replicated`` one, which carries DDL to every server
    itself (and refuses ``ON CLUSTER``). All false: a single node, or the local cluster's per-server migrations.
    """

    replicated: bool = False
    on_cluster: bool = False
    cluster: str = "metrics"
    replicated_database: bool = False

    @property
    def cluster_wide(self) -> bool:
        """Whether one run against any one server changes every server's schema."""
        return self.replicated_database or self.on_cluster


def statement_transform(mode: DdlMode) -> Callable[[str], str] | None:
    """What the migration runner applies to each statement: nothing (single node, local cluster, plain tables
    in a Replicated database), ``ON CLUSTER``, or the replicated engines with or without it."""
    if mode.replicated_database:
        return (lambda statement: replicated_engines(statement, explicit_path=False)) if mode.replicated else None
    if mode.replicated and not mode.on_cluster:
        raise TopologyError(
            "replicated tables need their DDL on every replica at once: set "
            "METRICS_PLATFORM_CLICKHOUSE_ON_CLUSTER=true or create the database with ENGINE = Replicated "
            "(a replicated table created server by server gets a different Keeper path on each)"
        )
    if not mode.replicated and not mode.on_cluster:
        return None
    if not mode.replicated:
        return lambda statement: on_cluster(statement, mode.cluster)
    return lambda statement: on_cluster(replicated_engines(statement), mode.cluster)


def ledger_engine(mode: DdlMode) -> str:
    """The migration ledger's engine: plain per server, unless DDL is cluster-wide; then one ledger replicated
    to every server of every shard, so a run through any server sees what an earlier run applied."""
    if not mode.cluster_wide:
        return "MergeTree"
    return f"ReplicatedMergeTree('{LEDGER_ZK_PATH}', '{{shard}}-{{replica}}')"


# --- the servers of a real cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterHost:
    """One server of a real cluster, as ``system.clusters`` lists it (``CLUSTER_HOSTS_QUERY``)."""

    shard: int
    replica: int
    host: str
    errors: int = 0


# Every server of cluster {name}, in shard and replica order.
CLUSTER_HOSTS_QUERY = """
SELECT shard_num, replica_num, host_name, errors_count
FROM system.clusters WHERE cluster = {name:String}
ORDER BY shard_num, replica_num
"""


def cluster_hosts(rows: Sequence[tuple[int, int, str, int]], name: str) -> list[ClusterHost]:
    """``ClusterHost``s from ``CLUSTER_HOSTS_QUERY`` rows; an unknown cluster is an error naming it."""
    if not rows:
        raise TopologyError(
            f"cluster {name!r} is not in system.clusters of the configured server: set METRICS_PLATFORM_CLUSTER_NAME "
            "to a cluster of its remote_servers (or the name of its Replicated database)"
        )
    return [ClusterHost(int(shard), int(replica), str(host), int(errors)) for shard, replica, host, errors in rows]


def write_targets(hosts: Sequence[ClusterHost]) -> list[ClusterHost]:
    """One server per shard for per-shard work (price and enrichment loads, recompute, repairs, audits): a
    replica's writes reach its shard's other replicas through replication. Per shard, the replica with the
    fewest connection errors, then the first."""
    best: dict[int, ClusterHost] = {}
    for h in hosts:
        held = best.get(h.shard)
        if held is None or (h.errors, h.replica) < (held.errors, held.replica):
            best[h.shard] = h
    return [best[shard] for shard in sorted(best)]


# --- the read layer ---------------------------------------------------------------------------------------

# Tables every server keeps a full copy of (loaded per server, read by its own ingest): the read layer
# shows one server's copy, since a Distributed table would count them once per shard.
PER_SERVER_TABLES = frozenset(
    {"schema_migrations", "model_prices", "model_price_aliases", "billing_accounts", "feature_flags"}
)

# What each server holds of its own (its finalizer's inbox and state): the read layer reads it from every server,
# through a Distributed table over a cluster that lists each server as a shard of its own (where the cluster
# itself would read one replica per shard). remote()/clusterAllReplicas() would need a grant the platform's
# accounts do not have.
EVERY_SERVERS_OWN = frozenset({"span_inbox", "finalizer_skips", "finalizer_settling"})
# That cluster's name: ``<cluster>_every_server`` when the servers define it (the chart does), else the cluster
# itself, which is the same thing with one replica per shard (the local cluster).
EVERY_SERVER_SUFFIX = "_every_server"


def every_server_cluster(cluster: str, defined: Sequence[str]) -> str:
    """The cluster the read layer reads ``EVERY_SERVERS_OWN`` through, among the ``defined`` cluster names."""
    candidate = cluster + EVERY_SERVER_SUFFIX
    return candidate if candidate in defined else cluster


# Views answered by each shard (any one replica) over its own data, read through a Distributed table.
SHARD_VIEWS = frozenset({"user_cost_30d"})


@dataclass(frozen=True)
class LocalTable:
    """A table of the local (per-server) database, as system.tables/system.columns describe it."""

    name: str
    engine: str
    columns: tuple[str, ...]


def sharding_key(table: LocalTable) -> str:
    """Rows of one trace go to one shard (attribution needs the whole trace there); others anywhere."""
    return "cityHash64(trace_id)" if "trace_id" in table.columns else "rand()"


def read_layer_ddl(
    local_db: str, read_db: str, cluster: str, tables: Sequence[LocalTable], every_server: str | None = None
) -> list[str]:
    """Statements creating the read database: a Distributed table per local MergeTree-family table (reads
    fan out to every shard; inserts are routed by ``sharding_key``), a view per per-server table, and a
    Distributed table over ``every_server`` (``every_server_cluster``; default: ``cluster``) for what each
    server holds of its own.

    Idempotent (``IF NOT EXISTS``); a table added by a later migration is picked up by running it again.
    """
    local, read, name = _identifier(local_db), _identifier(read_db), _identifier(cluster)
    if local == read:
        raise TopologyError(f"the read database must differ from the local one ({local!r})")
    statements = [f"CREATE DATABASE IF NOT EXISTS `{read}`"]
    for table in sorted(tables, key=lambda t: t.name):
        t = _identifier(table.name)
        if t in EVERY_SERVERS_OWN:
            servers = _identifier(every_server or cluster)
            statements.append(
                f"CREATE TABLE IF NOT EXISTS `{read}`.`{t}` AS `{local}`.`{t}` "
                f"ENGINE = Distributed({servers}, {local}, {t})"
            )
            continue
        if not table.engine.endswith("MergeTree") and t not in SHARD_VIEWS:
            continue  # Kafka, Null, views: the ingest path, not data
        if t in PER_SERVER_TABLES:
            statements.append(f"CREATE VIEW IF NOT EXISTS `{read}`.`{t}` AS SELECT * FROM `{local}`.`{t}`")
        else:
            statements.append(
                f"CREATE TABLE IF NOT EXISTS `{read}`.`{t}` AS `{local}`.`{t}` "
                f"ENGINE = Distributed({name}, {local}, {t}, {sharding_key(table)})"
            )
    return statements


def local_tables(rows: Sequence[tuple[str, str, Sequence[str]]]) -> list[LocalTable]:
    """``LocalTable``s from (name, engine, column names) rows (``LOCAL_TABLES_QUERY``)."""
    return [LocalTable(str(name), str(engine), tuple(columns)) for name, engine, columns in rows]


# What ``local_tables`` reads, with the local database as parameter ``db``.
LOCAL_TABLES_QUERY = """
SELECT t.name, t.engine, groupArray(c.name)
FROM system.tables AS t INNER JOIN system.columns AS c ON c.database = t.database AND c.table = t.name
WHERE t.database = {db:String} AND NOT t.is_temporary
GROUP BY t.name, t.engine
"""


def merge_audits(start: datetime, end: datetime, results: Sequence[tuple[str, AuditResult]]) -> AuditResult:
    """One verdict from the rollup audits of each server, ``(label, result)``: a projection lives in the parts
    of one server and is checked against that server's raw rows, so the cluster passes when every server does.
    Counts add up (``raw_spans`` is the cluster's); mismatch keys get the server's label in front."""
    merged = AuditResult(start, end)
    for label, result in results:
        merged.groups += result.groups
        merged.raw_spans += result.raw_spans
        merged.parts_without_projection += result.parts_without_projection
        merged.max_quantile_error = max(merged.max_quantile_error, result.max_quantile_error)
        merged.mismatches += [
            Mismatch((label, *m.key) if label else m.key, m.field, m.rollup, m.raw) for m in result.mismatches
        ]
    return merged


def merge_day_costs(per_server: Sequence[DayCost]) -> DayCost:
    """One day's ``cost_by_account_daily`` totals from each server's recompute of its own events: sums (rows
    written count once per server that wrote them)."""
    days = {d.day for d in per_server}
    if len(days) != 1:
        raise ValueError(f"merge_day_costs: expected one day, got {sorted(days)}")
    return DayCost(
        per_server[0].day,
        sum(d.accounts for d in per_server),
        sum(d.calls for d in per_server),
        sum((d.cost_usd for d in per_server), start=Decimal(0)),
        sum((d.unassigned_cost_usd for d in per_server), start=Decimal(0)),
    )


def merge_unpriced(per_server: Sequence[Sequence[UnpricedModel]]) -> list[UnpricedModel]:
    """Unpriced models found on each server (its own events), calls summed per model, most calls first."""
    calls: dict[tuple[str, str, str], int] = {}
    for found in per_server:
        for u in found:
            key = (u.provider, u.model, u.response_model)
            calls[key] = calls.get(key, 0) + u.calls
    return [UnpricedModel(*key, n) for key, n in sorted(calls.items(), key=lambda item: (-item[1], item[0]))]


def shard_of_traces(rows: Mapping[str, set[int]]) -> dict[str, int]:
    """For each trace id, the one shard holding its rows; raises if a trace is split across shards."""
    split = {trace: shards for trace, shards in rows.items() if len(shards) != 1}
    if split:
        sample = ", ".join(f"{t}: shards {sorted(s)}" for t, s in list(split.items())[:5])
        raise TopologyError(f"{len(split)} trace(s) are split across shards ({sample})")
    return {trace: next(iter(shards)) for trace, shards in rows.items()}


@dataclass(frozen=True)
class OwnedLag:
    """One partition's consumer lag, with the broker leading it and the ClickHouse server consuming it."""

    group: str
    topic: str
    partition: int
    lag: int
    leader_broker: int
    consumer: str  # "shard <n>", or "" while no server holds the partition (a rebalance)


def lag_by_owner(
    group: str,
    topic: str,
    lags: Mapping[int, int],
    leaders: Mapping[int, int],
    owners: Mapping[tuple[str, int], str],
) -> list[OwnedLag]:
    """Per partition of ``topic``: its lag (``lags``), leader (``leaders``) and consuming server (``owners``,
    keyed by topic and partition), in partition order."""
    return [
        OwnedLag(group, topic, partition, lag, leaders.get(partition, -1), owners.get((topic, partition), ""))
        for partition, lag in sorted(lags.items())
    ]


def lag_totals(rows: Sequence[OwnedLag]) -> tuple[dict[int, int], dict[str, int]]:
    """Lag summed per leading broker and per consumer (unowned partitions under "")."""
    per_broker: dict[int, int] = {}
    per_consumer: dict[str, int] = {}
    for row in rows:
        per_broker[row.leader_broker] = per_broker.get(row.leader_broker, 0) + row.lag
        per_consumer[row.consumer] = per_consumer.get(row.consumer, 0) + row.lag
    return per_broker, per_consumer
