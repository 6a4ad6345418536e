"""The embedded ClickHouse's accounts: the platform's writer, a read-only reader, and the engine's own session.

The embedded engine (clickhouse-local's code path) has no writable access storage: ``CREATE USER`` is refused,
so the accounts are declared in a users file that the server process writes at every start (``users.xml``
next to ``config.xml``, mode 0600, passwords as SHA-256; the plain passwords live in ``<state>/secrets``).

- The **writer** (``settings.clickhouse.user``, ``metrics_writer``): the platform itself (CLI, Dagster,
  migrations, dictionaries, benchmarks, tests). Everything in the platform's database, its SQL functions,
  the system tables, ``KILL QUERY`` (the server stops itself with it). No ``file()``, ``url()``,
  ``remote()``, ``s3()`` and no other database, as in the deployment's users file
  (deploy/helm/metrics-platform/files/clickhouse/users.d/metrics-platform.xml).
- The **reader** (``metrics_reader``): dashboards (Superset) and analysts. ``SELECT`` on the platform's
  database and nothing else: ``readonly = 1`` (no writes, DDL, setting changes but the planner's rollup hint
  ``preferred_optimize_projection_name``, or temporary tables, hence no table functions), system tables only
  those every session may read (its own settings and quota, tables and columns it can see:
  ``select_from_system_db_requires_grant``), per-query limits and an hourly quota.
- ``default``: the engine authenticates its own session as ``default`` without a password from loopback
  (hard-wired; measured: with any other user, a password or a non-loopback network the server does not
  start). That session creates the platform's database, starts the listeners and runs the keep-alive query
  forever. So ``default`` exists, but holds only ``SYSTEM LISTEN`` and ``CREATE DATABASE`` on the platform's
  database, and a lifetime quota that the server uses up as soon as the keep-alive runs: from then on every
  query as ``default`` that reads a table or runs a command is refused (QUOTA_EXCEEDED, ACCESS_DENIED), and
  any password fails. Left are constant expressions (``SELECT version()``), which the quota does not count:
  they read no data and their memory is capped.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from xml.sax.saxutils import escape

from metrics_platform.settings import ClickHouseSettings

ENGINE_USER = "default"
# The engine's own database joins a Filesystem database (any local file is a table) to its tables, so
# reading any table in it needs READ ON FILE, which allows file() anywhere: the platform keeps its tables in
# a database of its own (`metrics` by default, as on real servers), which the engine's session creates.
ENGINE_DATABASE = "default"
ENGINE_DATABASE_WARNING = (
    "WARNING: the platform's tables are in the engine's `default` database (CLICKHOUSE_DATABASE=default): "
    "its accounts can then read local files (READ ON FILE), the read-only one included"
)
ENGINE_DATABASE_IN_USE = (
    "ClickHouse in {data_dir} holds the platform's tables in the engine's `default` database (an installation "
    "from before the platform had its own database and accounts), and the platform now uses `{database}`. "
    "Either keep them there with CLICKHOUSE_DATABASE=default (every account, the read-only one included, can "
    "then read local files), or remove {data_dir} to start afresh in `{database}`."
)
# The table engines the migrations, replays and tests create (as the deployment's users file lists them).
TABLE_ENGINES = (
    *("MergeTree", "AggregatingMergeTree", "ReplacingMergeTree", "SummingMergeTree"),
    *("Kafka", "Null", "Memory"),
)
# A quota interval this long never ends while a server runs (quota intervals are aligned to multiples of
# their duration since 1970, so this one ends in 2070; the engine rejects ~100 years).
_LIFETIME_S = 50 * 365 * 24 * 3600
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _name(kind: str, value: str) -> str:
    # Account and database names become XML element names and SQL identifiers.
    if not _NAME_RE.match(value):
        raise ValueError(f"ClickHouse {kind} {value!r} must be letters, digits and underscores")
    return value


def password_sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _file_access(database: str) -> list[str]:
    # Tables in the engine's own database cannot be read without it (see ENGINE_DATABASE).
    return ["GRANT READ ON FILE"] if database == ENGINE_DATABASE else []


def tables_in_engine_database(data_dir: Path) -> bool:
    """Whether the engine's own database holds the platform's tables (installations from before accounts)."""
    return (data_dir / "metadata" / ENGINE_DATABASE / "schema_migrations.sql").exists()


def writer_grants(database: str, extra_databases: tuple[str, ...] = ()) -> list[str]:
    """What the platform's own account may do on the embedded server; ``extra_databases`` (a local cluster's
    read database) are its own too, and it may create the Distributed tables there."""
    db = _name("database", database)
    extra = [f"GRANT ALL ON `{_name('database', name)}`.*" for name in extra_databases]
    return [
        f"GRANT ALL ON `{db}`.*",
        *extra,
        *(["GRANT TABLE ENGINE ON Distributed"] if extra_databases else []),
        *_file_access(database),
        # SQL functions are server-wide objects: the migrations define mp_* functions.
        "GRANT CREATE FUNCTION, DROP FUNCTION ON *.*",
        # Parts, projections, view refreshes, consumers: audits, retention and health read them.
        "GRANT SELECT ON system.*",
        # Price loads reload the dictionaries; the server ends its keep-alive query with KILL QUERY.
        "GRANT SYSTEM RELOAD DICTIONARY ON *.*",
        "GRANT KILL QUERY ON *.*",
        # The engine requires a grant per table engine (the grammar takes one engine per grant).
        *(f"GRANT TABLE ENGINE ON {engine}" for engine in TABLE_ENGINES),
    ]


def reader_grants(database: str, extra_databases: tuple[str, ...] = ()) -> list[str]:
    """What dashboards and analysts may do: read the platform's database (and ``extra_databases``)."""
    extra = [f"GRANT SELECT ON `{_name('database', name)}`.*" for name in extra_databases]
    return [f"GRANT SELECT ON `{_name('database', database)}`.*", *extra, *_file_access(database)]


def engine_grants(database: str) -> list[str]:
    """What the engine's own session needs: create the platform's database, start the listeners."""
    db = _name("database", database)
    return ["GRANT SYSTEM LISTEN ON *.*"] + ([f"GRANT CREATE DATABASE ON `{db}`.*"] if db != ENGINE_DATABASE else [])


def _grants_xml(grants: list[str]) -> str:
    return "".join(f"<query>{escape(g)}</query>" for g in grants)


def _interval(duration_s: int, **limits: int) -> str:
    fields = {"queries": 0, "errors": 0, "result_rows": 0, "read_rows": 0, "execution_time": 0} | limits
    body = "".join(f"<{key}>{value}</{key}>" for key, value in fields.items())
    return f"<interval><duration>{duration_s}</duration>{body}</interval>"


def render_users(settings: ClickHouseSettings, engine_queries: int, extra_databases: tuple[str, ...] = ()) -> str:
    """The users file of the embedded server; ``extra_databases`` (a local cluster's read database) are granted
    to the writer (everything) and the reader (SELECT) next to the platform's database.

    ``engine_queries`` is how many statements the engine's own session runs; its ``default`` account gets
    that many queries for its lifetime, and the server spends what the session leaves (it does not always
    count its first one) as soon as it listens (clickhouse_server._spend_engine_quota).
    """
    writer, reader = _name("user", settings.user), _name("user", settings.reader_user)
    if ENGINE_USER in (writer, reader) or writer == reader:
        raise ValueError(
            f"ClickHouse accounts: the writer ({writer!r}) and the reader ({reader!r}) must differ and cannot be "
            f"{ENGINE_USER!r}, which the embedded engine keeps for its own session"
        )
    if not settings.password or not settings.reader_password:
        raise ValueError("the embedded ClickHouse's writer and reader need passwords (settings generate them)")
    # A client that names no database lands in the platform's, not in the engine's (see ENGINE_DATABASE).
    database = _name("database", settings.database)
    # Over a read database of Distributed tables, an IN/JOIN subquery over another Distributed table (users
    # mapped to accounts) is refused by default; GLOBAL runs it once and ships the result to every shard.
    distributed = "<distributed_product_mode>global</distributed_product_mode>" if extra_databases else ""
    queries = settings.reader_queries_per_hour
    reader_quota = _interval(
        3600,
        queries=queries,
        errors=max(1, queries // 10),
        result_rows=100_000_000,
        read_rows=100_000_000_000,
        execution_time=3600,
    )
    return f"""<clickhouse>
    <!-- Written by metrics-platform at every start (stack/clickhouse_users.py); edits are overwritten. -->
    <profiles>
        <default/>
        <!-- The engine's session needs next to no memory; neither may what a client can still run as
             `default` (constant expressions: the quota does not count them). -->
        <engine_session>
            <max_memory_usage>100000000</max_memory_usage>
            <constraints><max_memory_usage><readonly/></max_memory_usage></constraints>
        </engine_session>
        <{writer}>{distributed}</{writer}>
        <{reader}>{distributed}
            <readonly>1</readonly>
            <!-- The one setting a reader may change: the dashboard questions name their rollup to the planner. -->
            <constraints><preferred_optimize_projection_name><changeable_in_readonly/></preferred_optimize_projection_name></constraints>
            <max_execution_time>60</max_execution_time>
            <max_result_rows>1000000</max_result_rows>
            <max_memory_usage>4000000000</max_memory_usage>
        </{reader}>
    </profiles>
    <quotas>
        <!-- Tracked, not limited: the platform must never be throttled by its own quota. -->
        <{writer}>{_interval(3600)}</{writer}>
        <{reader}>{reader_quota}</{reader}>
        <engine_session>{_interval(_LIFETIME_S, queries=engine_queries)}</engine_session>
    </quotas>
    <users>
        <{ENGINE_USER}>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>engine_session</profile>
            <quota>engine_session</quota>
            <grants>{_grants_xml(engine_grants(settings.database))}</grants>
        </{ENGINE_USER}>
        <{writer}>
            <password_sha256_hex>{password_sha256(settings.password)}</password_sha256_hex>
            <networks><ip>::/0</ip></networks>
            <profile>{writer}</profile>
            <quota>{writer}</quota>
            <default_database>{database}</default_database>
            <grants>{_grants_xml(writer_grants(settings.database, extra_databases))}</grants>
        </{writer}>
        <{reader}>
            <password_sha256_hex>{password_sha256(settings.reader_password)}</password_sha256_hex>
            <networks><ip>::/0</ip></networks>
            <profile>{reader}</profile>
            <quota>{reader}</quota>
            <default_database>{database}</default_database>
            <grants>{_grants_xml(reader_grants(settings.database, extra_databases))}</grants>
        </{reader}>
    </users>
</clickhouse>
"""


_SOURCE_LOGIN_RE = re.compile(r"USER '((?:[^'\\]|\\.)*)' PASSWORD '\[HIDDEN\]'")


def sql_string(value: str) -> str:
    """``value`` escaped for the inside of a single-quoted ClickHouse string literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def adopted_dictionary_ddl(create: str, user: str, password: str) -> str | None:
    """``CREATE OR REPLACE`` for a dictionary (its SHOW CREATE text) whose ClickHouse source logs in as an
    account other than ``user``, logging in as ``user`` instead; None when there is nothing to change."""
    match = _SOURCE_LOGIN_RE.search(create)
    if match is None or match.group(1) == user or not create.startswith("CREATE DICTIONARY"):
        return None
    login = f"USER '{sql_string(user)}' PASSWORD '{sql_string(password)}'"
    ddl = create[: match.start()] + login + create[match.end() :]
    return ddl.replace("CREATE DICTIONARY", "CREATE OR REPLACE DICTIONARY", 1)


def access_control_xml() -> str:
    """The main config's access section: reading system tables needs a grant, as on a default server."""
    return """
    <access_control_improvements>
        <select_from_system_db_requires_grant>true</select_from_system_db_requires_grant>
        <select_from_information_schema_requires_grant>true</select_from_information_schema_requires_grant>
    </access_control_improvements>"""


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds password hashes or Kafka credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have been created with wider permissions
    with os.fdopen(fd, "w") as out:
        out.write(text)
