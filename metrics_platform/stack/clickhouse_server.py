"""The embedded ClickHouse server: the chdb engine serving ClickHouse's HTTP and native protocols.

Run as its own process (``python -m metrics_platform.stack.clickhouse_server``); every other
process talks to it over HTTP with clickhouse-connect, exactly as to a real server.

How it works, and why it looks odd: chdb's module-level query function runs the clickhouse-local
code path, which honours ``SYSTEM START LISTEN``; the servers live as long as that call runs, so
the call ends with a long, cancellable query. Ports come from ``config.xml`` in the working
directory. ``import chdb`` must be avoided: its start-up query opens and closes an engine, after
which Kafka engine tables fail with "Shutdown was called". So the extension module is loaded
directly. The entry point is undocumented; chdb and chdb-core are pinned exactly for it.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.machinery
import importlib.util
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from metrics_platform.stack import clickhouse_users, network

if TYPE_CHECKING:
    from metrics_platform.settings import ClickHouseSettings, KafkaSettings, Settings

# The keep-alive query; KILL QUERY finds it by this marker.
_MARKER = "metrics_platform_keepalive"
_KEEPALIVE = f"SELECT sleepEachRow(1) AS {_MARKER} FROM numbers(1000000000000) FORMAT Null SETTINGS max_block_size = 1"
# A query the quota counts (reading a table; constant expressions are not counted) and that changes nothing.
_SPEND_QUERY = "SELECT count() FROM system.settings"
_KAFKA_KEY_RE = re.compile(r"^[a-z0-9_]+$")


def render_config(
    http_port: int,
    tcp_port: int,
    listen_host: str = "127.0.0.1",
    users_file: Path | None = None,
    kafka: Mapping[str, str] | None = None,
    extra: str = "",
) -> str:
    """The server's config.xml: loopback only, accounts from ``users_file`` (clickhouse_users.py).

    ``extra`` is more configuration (a local cluster's ``remote_servers`` and ``macros``, cluster.py).

    ``kafka`` holds librdkafka properties (``security.protocol``, ``sasl.username``, ...) for the Kafka
    engine, written into the ``<kafka>`` section the way ClickHouse takes them (dots as underscores).

    ``fetch.wait.max.ms`` stays librdkafka's 500 ms. At 5000 an idle broker answered half as many requests,
    but the first span after a start took 4.1 s instead of ~0.9 (compare_peer.py --first-span), most likely
    because a broker answers one connection's requests in order and the consumer's offset lookups waited
    behind its parked fetch.
    """
    users = f"\n    <users_config>{escape(str(users_file))}</users_config>" if users_file else ""
    return f"""<clickhouse>{users}{clickhouse_users.access_control_xml()}
    {_listen_hosts_xml(listen_host)}
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>{_system_logs_xml()}
    <kafka>
        <!-- A consumer that died without leaving its group holds its partitions this long. -->
        <session_timeout_ms>10000</session_timeout_ms>
        <heartbeat_interval_ms>3000</heartbeat_interval_ms>{_kafka_properties(kafka or {})}
    </kafka>{extra}
</clickhouse>
"""


def _listen_hosts_xml(listen_host: str) -> str:
    """``<listen_host>`` elements: the configured address, plus loopback when that is one other interface (the
    server's own helpers and the platform's local processes dial 127.0.0.1; a wildcard already covers it)."""
    alone = listen_host in network.WILDCARDS or network.is_loopback(listen_host)
    hosts = [listen_host] if alone else ["127.0.0.1", listen_host]
    return "\n    ".join(f"<listen_host>{escape(host)}</listen_host>" for host in hosts)


def engine_kafka_properties(kafka: KafkaSettings) -> dict[str, str]:
    """The platform's Kafka security properties as this engine's Kafka client can use them.

    chdb's librdkafka has no SCRAM (measured, chdb-core 26.9: "No provider for SASL mechanism SCRAM-SHA-512
    ... Current build options: PLAIN"): it logs in with SASL/PLAIN, with the platform's user and password.
    The embedded broker accepts PLAIN for that user; an external cluster must too, or be read by a real
    ClickHouse server.
    """
    properties = kafka.librdkafka_security()
    if kafka.sasl:
        properties["sasl.mechanism"] = "PLAIN"
    return properties


def _system_logs_xml() -> str:
    """The server's own logs and metrics, kept off or slow: at idle they are most of what a server does.

    System log tables (query_log, query_thread_log, part_log, trace_log, metric_log,
    asynchronous_metric_log, text_log, processors_profile_log, ...) exist only when the configuration
    declares them; none is declared, so the embedded server writes none (a real ClickHouse server's
    operator sets them up with TTLs). The asynchronous metrics (system.asynchronous_metrics: memory,
    table and part counts) are recomputed every minute instead of every second. The memory worker, which
    reconciles the server's memory tracker with the allocator's figures, wakes every second, not 10 times.
    """
    return """
    <asynchronous_metrics_update_period_s>60</asynchronous_metrics_update_period_s>
    <memory_worker_period_ms>1000</memory_worker_period_ms>"""


def _kafka_properties(properties: Mapping[str, str]) -> str:
    lines = []
    for key, value in properties.items():
        tag = key.replace(".", "_")
        if not _KAFKA_KEY_RE.match(tag):
            raise ValueError(f"Kafka property {key!r} cannot be a ClickHouse <kafka> setting")
        lines.append(f"\n        <{tag}>{escape(value)}</{tag}>")
    return "".join(lines)


def _load_engine() -> ModuleType:
    spec = importlib.util.find_spec("chdb")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the chdb package is not installed (pip install chdb chdb-core)")
    for location in spec.submodule_search_locations:
        library = Path(location) / "_chdb.abi3.so"
        if library.exists():
            break
    else:
        raise RuntimeError("chdb-core's _chdb extension was not found next to the chdb package")
    # chdb loads its engine with RTLD_DEEPBIND so its bundled libraries win over the host's.
    ctypes.CDLL(str(library), mode=sys.getdlopenflags() | os.RTLD_DEEPBIND)
    cwd = os.getcwd()
    os.chdir(library.parent)  # the extension resolves its helper libraries relative to cwd
    try:
        loader = importlib.machinery.ExtensionFileLoader("_chdb", str(library))
        module_spec = importlib.util.spec_from_file_location("_chdb", library, loader=loader)
        assert module_spec is not None
        module = importlib.util.module_from_spec(module_spec)
        loader.exec_module(module)
    finally:
        os.chdir(cwd)
    return module


def _query(http_port: int, sql: str, user: str, password: str) -> tuple[int, str]:
    """Run ``sql`` over HTTP as ``user``: (status, body); OSError when nothing listens."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/",
        data=sql.encode(),
        method="POST",
        headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _engine_statements(database: str) -> list[str]:
    """What the engine's own session (user `default`, see clickhouse_users.py) runs, in one call.

    The platform's database is created before anything listens. The users file gives `default` a lifetime
    quota of this many queries; the engine does not always count the first one (measured, chdb-core 26.9:
    one less from some starts to the next), so the server spends what may be left once it listens
    (``_spend_engine_quota``): from then on no client can run a query as `default`.
    """
    create = [] if database == clickhouse_users.ENGINE_DATABASE else [f"CREATE DATABASE IF NOT EXISTS `{database}`"]
    return [*create, "SYSTEM START LISTEN HTTP", "SYSTEM START LISTEN TCP", _KEEPALIVE]


def _kill_keepalive(http_port: int, user: str, password: str) -> None:
    query = f"KILL QUERY WHERE query LIKE '%{_MARKER} FROM numbers%' AND query NOT LIKE 'KILL%' SYNC"
    # As the platform's account; then as the engine's, for a users file that leaves it open (test_manifests).
    for login, key in ((user, password), (clickhouse_users.ENGINE_USER, "")):
        status, body = _query(http_port, query, login, key)
        if status == 200:
            return
    raise OSError(f"KILL QUERY refused: {body[:300]}")


def _spend_engine_quota(http_port: int, user: str, password: str, quota: int, timeout_s: float = 120.0) -> None:
    """Use up what the engine's session left of `default`'s quota, once its keep-alive query runs.

    Spending earlier could leave the engine's own statements without quota. ``user`` (the platform's
    account) sees whether the keep-alive runs; with a users file that is not ours it cannot log in, and
    then nothing needs spending either.
    """
    deadline = time.monotonic() + timeout_s
    running = (
        f"SELECT count() FROM system.processes WHERE query LIKE '%{_MARKER} FROM numbers%' "
        "AND query NOT LIKE '%system.processes%'"
    )
    while time.monotonic() < deadline:
        try:
            status, body = _query(http_port, running, user, password)
        except OSError:
            status, body = 0, ""  # not listening yet
        if status == 200 and body.strip() != "0":
            break
        if status in (401, 403, 516):
            print(f"`{user}` cannot see the engine's session: {body.strip()[:200]}", flush=True)
            break
        time.sleep(0.05)
    answered = 0
    while time.monotonic() < deadline:
        status, body = _query(http_port, _SPEND_QUERY, clickhouse_users.ENGINE_USER, "")
        answered += status == 200
        if status != 200 or answered > quota:
            if "QUOTA_EXCEEDED" not in body:
                # A users file that does not come from clickhouse_users (test_manifests' deployment file).
                print(f"`default` is not the platform's engine account: {body.strip()[:200]}", flush=True)
            return
    print(f"WARNING: could not use up the quota of `default` within {timeout_s:.0f} s", flush=True)


def _adopt_objects(http_port: int, ch: ClickHouseSettings) -> None:
    """Objects made by the engine's `default` in installations from before accounts act as the platform's
    account: dictionaries' ClickHouse sources log in as it, views run as it (their definer)."""

    def run(sql: str) -> str:
        status, body = _query(http_port, sql, ch.user, ch.password)
        if status != 200:
            raise OSError(f"{sql[:80]!r}: {body.strip()[:300]}")
        return body

    database = ch.database
    for name in run(f"SELECT name FROM system.dictionaries WHERE database = '{database}' FORMAT TSVRaw").split():
        create = run(f"SHOW CREATE DICTIONARY `{database}`.`{name}` FORMAT TSVRaw")
        ddl = clickhouse_users.adopted_dictionary_ddl(create, ch.user, ch.password)
        if ddl:
            run(ddl)
            print(f"dictionary {database}.{name} now reads as {ch.user}", flush=True)
    views = run(
        f"SELECT name FROM system.tables WHERE database = '{database}' "
        "AND create_table_query LIKE '%SQL SECURITY DEFINER%' "
        f"AND extract(create_table_query, 'DEFINER = `?([^` ]+)') != '{ch.user}' FORMAT TSVRaw"
    )
    for name in views.split():
        run(f"ALTER TABLE `{database}`.`{name}` MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER")
        print(f"view {database}.{name} now runs as {ch.user}", flush=True)


def _after_listening(http_port: int, settings: Settings, engine_queries: int) -> None:
    ch = settings.clickhouse
    _spend_engine_quota(http_port, ch.user, ch.password, engine_queries)
    try:
        _adopt_objects(http_port, ch)
    except OSError as exc:
        print(f"could not give the platform's account the objects of the engine's: {exc}", flush=True)


def serve(
    data_dir: Path,
    run_dir: Path,
    http_port: int,
    tcp_port: int,
    settings: Settings,
    cluster_xml: str = "",
    read_database: str = "",
) -> int:
    """Serve until SIGTERM or SIGINT, then stop the engine cleanly; returns an exit code.

    In a local cluster, ``cluster_xml`` joins the server to it and ``read_database`` (the Distributed
    tables) is granted to the platform's accounts (cluster.py).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    database = settings.clickhouse.database
    if database != clickhouse_users.ENGINE_DATABASE and clickhouse_users.tables_in_engine_database(data_dir):
        print(clickhouse_users.ENGINE_DATABASE_IN_USE.format(data_dir=data_dir, database=database), flush=True)
        return 2
    if database == clickhouse_users.ENGINE_DATABASE:
        print(clickhouse_users.ENGINE_DATABASE_WARNING, flush=True)
    statements = _engine_statements(database)
    users_file = run_dir / "users.xml"
    # Both files hold secrets (password hashes, Kafka credentials): owner only.
    extra = (read_database,) if read_database else ()
    users = clickhouse_users.render_users(settings.clickhouse, len(statements), extra_databases=extra)
    clickhouse_users.write_private(users_file, users)
    kafka = engine_kafka_properties(settings.kafka)
    listen = settings.clickhouse.listen_host
    config = render_config(http_port, tcp_port, listen, users_file=users_file, kafka=kafka, extra=cluster_xml)
    clickhouse_users.write_private(run_dir / "config.xml", config)
    # Block the stop signals before any engine thread exists, so every thread inherits the mask
    # and the main thread alone receives them through sigwait: the engine call blocks in C,
    # where a Python signal handler would never run.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    engine = _load_engine()
    os.chdir(run_dir)
    outcome: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            engine.query(
                "; ".join(statements),
                "TabSeparated",  # becomes the HTTP default format; clickhouse-connect needs it
                path=str(data_dir),
            )
        except BaseException as exc:  # reported below; the thread must not die silently
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="clickhouse-engine", daemon=True)
    worker.start()
    # Once it listens: close the engine's account to clients, then adopt what it made before accounts existed.
    after = (http_port, settings, len(statements))
    threading.Thread(target=_after_listening, args=after, name="after-listening", daemon=True).start()
    print(f"embedded ClickHouse: data {data_dir}, http {http_port}, tcp {tcp_port}", flush=True)
    while worker.is_alive():
        received = signal.sigtimedwait(stop_signals, 1.0)
        if received is not None:
            print(f"signal {received.si_signo}: stopping", flush=True)
            try:
                _kill_keepalive(http_port, settings.clickhouse.user, settings.clickhouse.password)
            except OSError as exc:
                print(f"could not cancel the keep-alive query ({exc}); exiting anyway", flush=True)
                return 1
            worker.join(timeout=60)
            break
    if outcome["error"] is not None and "QUERY_WAS_CANCELLED" not in str(outcome["error"]):
        print(f"engine stopped with an error: {outcome['error']}", file=sys.stderr, flush=True)
        return 1
    print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True, help="holds config.xml (the working dir)")
    parser.add_argument("--http-port", type=int, default=8123)
    parser.add_argument("--tcp-port", type=int, default=9000)
    parser.add_argument("--cluster-xml", type=Path, help="config fragment joining a local cluster (cluster.py)")
    parser.add_argument("--read-database", default="", help="the cluster's read database, granted to the accounts")
    args = parser.parse_args(argv)
    # Accounts and Kafka credentials come from the same environment as the parent's settings.
    from metrics_platform.settings import Settings

    settings = Settings.from_env()
    cluster_xml = args.cluster_xml.read_text() if args.cluster_xml else ""
    return serve(
        args.data_dir.resolve(),
        args.run_dir.resolve(),
        args.http_port,
        args.tcp_port,
        settings,
        cluster_xml=cluster_xml,
        read_database=args.read_database,
    )


if __name__ == "__main__":
    sys.exit(main())
