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
import signal
import sys
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from xml.sax.saxutils import escape

# The keep-alive query; KILL QUERY finds it by this marker.
_MARKER = "metrics_platform_keepalive"
_KEEPALIVE = f"SELECT sleepEachRow(1) AS {_MARKER} FROM numbers(1000000000000) FORMAT Null SETTINGS max_block_size = 1"


def render_config(
    http_port: int,
    tcp_port: int,
    listen_host: str = "127.0.0.1",
    readonly_users: Mapping[str, str] | None = None,
    readonly_database: str = "default",
) -> str:
    """The server's config.xml: loopback only (the default user has no password).

    ``readonly_users`` (name -> SHA-256 hex of the password) get ``readonly = 1`` and SELECT on
    ``readonly_database``, for BI tools (Superset). The engine has no writable access storage, so
    ``CREATE USER`` is refused; users must come from this file.
    """
    users = _users_section(readonly_users, readonly_database) if readonly_users else ""
    return f"""<clickhouse>{users}
    <listen_host>{escape(listen_host)}</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <kafka>
        <!-- A consumer that died without leaving its group holds its partitions this long. -->
        <session_timeout_ms>10000</session_timeout_ms>
        <heartbeat_interval_ms>3000</heartbeat_interval_ms>
    </kafka>
</clickhouse>
"""


def _users_section(readonly_users: Mapping[str, str], database: str) -> str:
    # Declaring users replaces the engine's built-in list, so `default` is declared as it was
    # (no password, named collections allowed); users_xml must point at this file to be read.
    readonly = "".join(
        f"""
        <{escape(name)}>
            <password_sha256_hex>{escape(sha256_hex)}</password_sha256_hex>
            <networks><ip>::/0</ip></networks>
            <profile>readonly</profile>
            <quota>default</quota>
            <grants><query>GRANT SELECT ON {escape(database)}.*</query></grants>
        </{escape(name)}>"""
        for name, sha256_hex in readonly_users.items()
    )
    return f"""
    <user_directories><users_xml><path>config.xml</path></users_xml></user_directories>
    <profiles><default/><readonly><readonly>1</readonly></readonly></profiles>
    <quotas><default/></quotas>
    <users>
        <default>
            <password></password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
            <named_collection_control>1</named_collection_control>
        </default>{readonly}
    </users>"""


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


def _kill_keepalive(http_port: int) -> None:
    query = f"KILL QUERY WHERE query LIKE '%{_MARKER} FROM numbers%' AND query NOT LIKE 'KILL%' SYNC"
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/", data=query.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def serve(
    data_dir: Path,
    run_dir: Path,
    http_port: int,
    tcp_port: int,
    readonly_users: Mapping[str, str] | None = None,
    readonly_database: str = "default",
) -> int:
    """Serve until SIGTERM or SIGINT, then stop the engine cleanly; returns an exit code."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.xml").write_text(
        render_config(http_port, tcp_port, readonly_users=readonly_users, readonly_database=readonly_database)
    )
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
                f"SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; {_KEEPALIVE}",
                "TabSeparated",  # becomes the HTTP default format; clickhouse-connect needs it
                path=str(data_dir),
            )
        except BaseException as exc:  # reported below; the thread must not die silently
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="clickhouse-engine", daemon=True)
    worker.start()
    print(f"embedded ClickHouse: data {data_dir}, http {http_port}, tcp {tcp_port}", flush=True)
    while worker.is_alive():
        received = signal.sigtimedwait(stop_signals, 1.0)
        if received is not None:
            print(f"signal {received.si_signo}: stopping", flush=True)
            try:
                _kill_keepalive(http_port)
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
    args = parser.parse_args(argv)
    # The read-only user Superset queries as; the settings come from the same environment as the parent's.
    from metrics_platform.settings import Settings
    from metrics_platform.stack.superset import clickhouse_readonly_users

    settings = Settings.from_env()
    readonly = clickhouse_readonly_users(settings)
    database = settings.clickhouse.database
    return serve(args.data_dir.resolve(), args.run_dir.resolve(), args.http_port, args.tcp_port, readonly, database)


if __name__ == "__main__":
    sys.exit(main())
