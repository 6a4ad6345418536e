"""The one migration runner, shared by ``metrics-platform migrate`` and Dagster.

Migrations are the ordered ``sql/NNNN_name.sql`` files. Each is a template: ``{{name}}``
placeholders are filled from settings (broker list, topics, retention) at apply time, while the
checksum covers the template, so moving a broker does not look like an edited migration.
Statements are idempotent (``IF NOT EXISTS``), so a run that died half-way is simply re-run.
A statement that cannot be written idempotently (moving a table aside, a one-time copy) carries a
guard comment ``-- if: <query>``: it runs only while the query returns a non-zero first value.
A migration edited after it was applied is refused: fix forward with a new file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from metrics_platform.cluster import DdlMode, every_server_cluster, ledger_engine, on_cluster, statement_transform
from metrics_platform.paths import SQL_DIR
from metrics_platform.settings import Settings

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine}
ORDER BY version
"""

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER_RE = re.compile(r"\{\{(\w+)\}\}")
_GUARD_RE = re.compile(r"^\s*--\s*if:\s*(.+?)\s*$", re.MULTILINE)


class MigrationError(RuntimeError):
    """A migration cannot be applied; the message names the file and statement."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def template(self) -> str:
        return self.path.read_text()


@dataclass(frozen=True)
class MigrationStatus:
    migration: Migration
    applied: bool


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """All migrations in version order; refuses malformed names and duplicate versions."""
    found: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files must be named NNNN_lower_snake.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version} already used by {found[version].path.name}")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found[version] = Migration(version, match.group(2), path, checksum)
    return [found[v] for v in sorted(found)]


def template_values(settings: Settings, every_server: str | None = None) -> dict[str, str]:
    """The values the SQL templates may refer to. ``every_server``: the cluster listing every server that
    consumes the platform's topics (``every_server_cluster_of``), None on a single node."""
    return {
        "kafka_brokers": settings.kafka.clickhouse_brokers,
        "spans_topic": settings.kafka.spans_topic,
        "events_topic": settings.kafka.events_topic,
        "consumer_group_prefix": settings.kafka.consumer_group_prefix,
        "kafka_num_consumers": str(settings.kafka_num_consumers),
        "kafka_flush_interval_ms": str(settings.kafka_flush_interval_ms),
        "kafka_poll_timeout_ms": str(settings.kafka_poll_timeout_ms),
        "retention_days": str(settings.retention_days),
        "database": settings.clickhouse.database,
        # inside SQL string literals (dictionary sources)
        "clickhouse_user": _sql_string(settings.clickhouse.user),
        "clickhouse_password": _sql_string(settings.clickhouse.password),
        "attribution_delay_seconds": str(settings.ingest.attribution_delay_s),
        "context_lookback_seconds": str(settings.ingest.context_lookback_s),
        "inbox_retention_hours": str(settings.ingest.inbox_retention_hours),
        "finalizer_max_rows": str(settings.ingest.finalizer_max_rows),
        "finalizer_interval_seconds": str(settings.ingest.finalizer_interval_s),
        "max_future_seconds": str(settings.ingest.max_future_s),
        # Which server finalized a row (sql/0017): replicas of a shard share agent_events, each finalizing its
        # own span_inbox. One server per agent_events (single node, local cluster): nothing to tell apart.
        "finalizer_identity": "getMacro('replica')" if settings.cluster.replicated else "''",
        # Where the views that store Kafka messages read the offsets already stored (sql/0022): on a cluster, every
        # server's, since a rebalance hands a partition to another server with its uncommitted offsets.
        "ledger_cluster": every_server or settings.cluster.name,
        "ledger_is_cluster_wide": "1" if every_server else "0",
        "inbox_ledger": "span_inbox_every_server" if every_server else "span_inbox",
        "dead_letters_ledger": "dead_letters_every_server" if every_server else "dead_letters",
    }


def every_server_cluster_of(ch: Client, settings: Settings) -> str | None:
    """The cluster listing every server as a shard of its own, as the server ``ch`` knows it:
    ``<cluster>_every_server`` where defined, else the platform's cluster (``cluster.every_server_cluster``);
    None when the server knows no cluster of that name (a single node). Both the Kafka offset ledger (sql/0022)
    and the read layer's per-server tables read every server through it."""
    defined = [str(name) for (name,) in ch.query("SELECT DISTINCT cluster FROM system.clusters").result_rows]
    name = settings.cluster.name
    return every_server_cluster(name, defined) if name in defined else None


def _sql_string(value: str) -> str:
    """``value`` escaped for the inside of a single-quoted ClickHouse string literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def render(migration: Migration, values: dict[str, str]) -> str:
    """Fill a migration's placeholders; an unknown placeholder is an error, not an empty string."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise MigrationError(f"{migration.path.name}: unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER_RE.sub(substitute, migration.template)


def split_statements(sql: str) -> list[str]:
    """Split a script on ``;`` outside quotes and comments (ClickHouse runs one statement a call)."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        ch = sql[i]
        if quote:
            current.append(ch)
            if ch == "\\" and i + 1 < n:
                current.append(sql[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
            current.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            current.append(sql[i:end])
            i = end
            continue
        elif ch == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def guard(statement: str) -> str | None:
    """The statement's ``-- if:`` query, or None when it always runs."""
    match = _GUARD_RE.search(statement)
    return match.group(1) if match else None


def applied_checksums(ch: Client) -> dict[int, str]:
    # Only migrate() creates the ledger: its engine depends on how DDL reaches a cluster's servers.
    if not _truthy(ch.command("EXISTS TABLE schema_migrations")):
        return {}
    rows = ch.query("SELECT version, argMax(checksum, applied_at) FROM schema_migrations GROUP BY version")
    return {int(version): checksum for version, checksum in rows.result_rows}


def status(ch: Client, migrations: list[Migration] | None = None) -> list[MigrationStatus]:
    """Which migrations are applied; raises if an applied one was edited since."""
    migrations = discover() if migrations is None else migrations
    applied = applied_checksums(ch)
    for m in migrations:
        if m.version in applied and applied[m.version] != m.checksum:
            raise MigrationError(
                f"{m.path.name} was edited after it was applied (checksum {applied[m.version][:12]} in "
                f"schema_migrations, {m.checksum[:12]} on disk): restore it and add a new migration instead"
            )
    return [MigrationStatus(m, m.version in applied) for m in migrations]


def migrate(
    ch: Client,
    settings: Settings,
    migrations: list[Migration] | None = None,
    on_statement: Callable[[Migration, int, int], None] | None = None,
) -> list[Migration]:
    """Apply every pending migration in order and record it; returns those applied now.

    ``on_statement(migration, index, total)`` reports progress after each statement. Each rendered statement
    is rewritten for how DDL reaches the servers (``ddl_mode``, ``cluster.statement_transform``: the replicated
    variant for real clusters, as written for a single node). The ledger keeps the template's checksum, so
    one migration set serves every variant.
    """
    mode = ddl_mode(ch, settings)
    try:
        transform = statement_transform(mode)
    except ValueError as exc:
        raise MigrationError(f"database {settings.clickhouse.database}: {exc}") from exc
    _create_ledger(ch, mode)
    values = template_values(settings, every_server_cluster_of(ch, settings))
    pending = [s.migration for s in status(ch, migrations) if not s.applied]
    for m in pending:
        statements = split_statements(render(m, values))
        if transform is not None:
            statements = [transform(statement) for statement in statements]
        for index, statement in enumerate(statements, start=1):
            try:
                condition = guard(statement)
                if condition is None or _truthy(ch.command(condition)):
                    ch.command(statement)
            except Exception as exc:
                first_line = next(ln for ln in statement.splitlines() if not ln.lstrip().startswith("--"))
                raise MigrationError(
                    f"{m.path.name}, statement {index}/{len(statements)} ({first_line.strip()[:100]!r}): {exc}"
                ) from exc
            if on_statement:
                on_statement(m, index, len(statements))
        ch.insert("schema_migrations", [[m.version, m.name, m.checksum]], ["version", "name", "checksum"])
    return pending


def ddl_mode(ch: Client, settings: Settings) -> DdlMode:
    """How DDL reaches the servers: from the settings, and whether the database is a ``Replicated`` one."""
    engine = ch.command("SELECT engine FROM system.databases WHERE name = currentDatabase()")
    c = settings.cluster
    return DdlMode(c.replicated, c.on_cluster, c.name, replicated_database=str(engine) == "Replicated")


def _create_ledger(ch: Client, mode: DdlMode) -> None:
    statement = LEDGER_DDL.format(engine=ledger_engine(mode))
    if mode.replicated_database:
        # The one explicit Keeper path the platform uses inside a Replicated database: the ledger is shared by
        # every shard, where the database's default path would give each shard its own.
        ch.command(statement, settings={"database_replicated_allow_replicated_engine_arguments": 3})
    else:
        ch.command(on_cluster(statement, mode.cluster) if mode.on_cluster else statement)


def _truthy(result: object) -> bool:
    # clickhouse-connect's command() returns the single value, or a list for several columns.
    value = result[0] if isinstance(result, list) else result
    return str(value).strip() not in ("", "0", "false")
