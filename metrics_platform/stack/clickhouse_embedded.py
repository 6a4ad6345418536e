"""Starting and stopping the embedded ClickHouse server process (see clickhouse_server.py)."""

from __future__ import annotations

import sys

from metrics_platform.settings import Settings
from metrics_platform.stack import network
from metrics_platform.stack.process import Daemon, http_get, require_free_ports, wait_until


def daemon(settings: Settings) -> Daemon:
    return Daemon("clickhouse", settings.run_dir, settings.log_dir)


def healthy(settings: Settings) -> bool:
    try:
        status, body = http_get(f"{settings.clickhouse.url}/ping", timeout_s=1.0)
    except OSError:
        return False
    return status == 200 and body.strip() == "Ok."


def start(settings: Settings, timeout_s: float = 60.0) -> None:
    """Start the embedded server and wait until it answers /ping."""
    server = daemon(settings)
    if server.pid() is not None:
        return
    ch = settings.clickhouse
    require_free_ports("ClickHouse", {"HTTP": ch.http_port, "native": ch.tcp_port})
    # The embedded engine serves no TLS (SYSTEM START LISTEN HTTPS is refused: README, "Network and TLS").
    in_clear = "no TLS: queries, results and passwords travel in clear; accounts with passwords"
    network.warn_if_exposed("ClickHouse", ch.listen_host, {"HTTP": ch.http_port, "native": ch.tcp_port}, in_clear)
    home = settings.state_dir / "clickhouse"
    server.start(
        [
            sys.executable,
            "-m",
            "metrics_platform.stack.clickhouse_server",
            "--data-dir",
            str(home / "data"),
            "--run-dir",
            str(home / "run"),
            "--http-port",
            str(ch.http_port),
            "--tcp-port",
            str(ch.tcp_port),
        ]
    )
    # A second server on the same data directory fails only on its stderr: /ping is the truth.
    wait_until(lambda: healthy(settings), timeout_s, f"ClickHouse on {ch.url}/ping", server)


def stop(settings: Settings) -> bool:
    return daemon(settings).stop(timeout_s=90)
