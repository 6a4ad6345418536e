"""Dagster next to the stack: one code server, the webserver (UI) and the daemon (schedules, sensors, runs).

The code location (``metrics_platform.definitions``) is served by one gRPC code server on a Unix
socket that the webserver and the daemon share, through a workspace file written into
DAGSTER_HOME. Left to themselves (the repository's ``workspace.yaml``, as ``dagster dev`` without
its shared server), each starts a code server of its own, and the daemon replaces its one every
minute, re-importing the definitions: ~150 MB and ~2 % of a core more at idle. After a code change,
restart the code server (``metrics-platform down && metrics-platform up``, or
``supervisorctl -c .state/run/supervisord.conf restart dagster-code-server``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from metrics_platform.paths import PROJECT_ROOT
from metrics_platform.settings import Settings
from metrics_platform.stack import network
from metrics_platform.stack.process import Daemon, StackError, http_get, require_free_ports, wait_until

LOCATION = "metrics_platform"
DEFINITIONS_MODULE = "metrics_platform.definitions"


def dagster_home(settings: Settings) -> Path:
    return Path(os.environ.get("DAGSTER_HOME", settings.state_dir / "dagster"))


def webserver(settings: Settings) -> Daemon:
    return Daemon("dagster-webserver", settings.run_dir, settings.log_dir)


def daemon(settings: Settings) -> Daemon:
    return Daemon("dagster-daemon", settings.run_dir, settings.log_dir)


def code_server(settings: Settings) -> Daemon:
    return Daemon("dagster-code-server", settings.run_dir, settings.log_dir)


def code_server_socket(settings: Settings) -> Path:
    return settings.run_dir / "dagster-code.sock"


def render_workspace(socket_path: Path) -> str:
    """The workspace the webserver and daemon load: the shared code server (JSON is valid YAML)."""
    entry = {"grpc_server": {"socket": str(socket_path), "host": "localhost", "location_name": LOCATION}}
    return json.dumps({"load_from": [entry]}, indent=2) + "\n"


def _environment(settings: Settings) -> dict[str, str]:
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    # DAGSTER_HOME must hold dagster.yaml; the repository's copy is the source of truth.
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    (home / "workspace.yaml").write_text(render_workspace(code_server_socket(settings)))
    # glibc gives each thread (gRPC, sensor and schedule workers) its own malloc arena; two are plenty.
    return {**os.environ, "DAGSTER_HOME": str(home), "MALLOC_ARENA_MAX": "2"}


def ui_url(settings: Settings) -> str:
    """The webserver's address as a process on this machine reaches it."""
    return f"http://{network.host_port(network.connect_host(settings.dagster_listen_host), settings.dagster_port)}"


def healthy(settings: Settings) -> bool:
    """The webserver answers."""
    try:
        status, _ = http_get(f"{ui_url(settings)}/server_info", timeout_s=2.0)
    except OSError:
        return False
    return status == 200


def code_server_healthy(settings: Settings) -> bool:
    """The code server accepts connections (it binds its socket once the definitions are loaded)."""
    path = code_server_socket(settings)
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _graphql(settings: Settings, query: str) -> dict:
    """The webserver's answer to a GraphQL query ({} when it does not answer)."""
    request = urllib.request.Request(
        f"{ui_url(settings)}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read()).get("data") or {}
    except (OSError, ValueError):
        return {}


def daemon_heartbeats(settings: Settings) -> dict[str, float]:
    """Last heartbeat (epoch seconds) of each of the daemon's required loops, as the webserver sees
    them; empty when the webserver does not answer."""
    data = _graphql(
        settings, "{ instance { daemonHealth { allDaemonStatuses { daemonType required lastHeartbeatTime } } } }"
    )
    statuses = data.get("instance", {}).get("daemonHealth", {}).get("allDaemonStatuses", [])
    return {s["daemonType"]: s["lastHeartbeatTime"] or 0.0 for s in statuses if s["required"]}


def code_location_loaded(settings: Settings) -> bool:
    """The webserver has loaded the code location from the code server (no load error)."""
    data = _graphql(settings, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename } } } } }")  # fmt: skip
    entries = data.get("workspaceOrError", {}).get("locationEntries", [])
    return [(e["name"], e["loadStatus"], (e["locationOrLoadError"] or {}).get("__typename")) for e in entries] == [
        (LOCATION, "LOADED", "RepositoryLocation")
    ]


def running(settings: Settings) -> bool:
    """The code server, webserver and daemon processes are all alive."""
    return all(d.pid() is not None for d in (code_server(settings), webserver(settings), daemon(settings)))


def migrate_storage(settings: Settings, env: dict[str, str]) -> None:
    """Create or upgrade the instance's storage (SQLite schema) before anything opens it.

    The webserver and the daemon each create missing tables when they start; started together on a
    fresh DAGSTER_HOME they race ("table secondary_indexes already exists"). Done once up front,
    neither has anything left to create. It also applies the schema migrations of a Dagster upgrade.
    """
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "instance", "migrate"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise StackError(
            f"migrating the Dagster storage in {env['DAGSTER_HOME']} failed (exit {result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )


def webserver_argv(settings: Settings, bin_dir: Path, workspace: str) -> list[str]:
    """The webserver's command line, on the configured listen address."""
    host = ["-h", settings.dagster_listen_host, "-p", str(settings.dagster_port)]
    return [str(bin_dir / "dagster-webserver"), "-w", workspace, *host]


def start(settings: Settings, timeout_s: float = 120.0) -> None:
    """Start the code server, then the webserver and daemon on it (the storage migrated first)."""
    env = _environment(settings)
    bin_dir = Path(sys.executable).parent
    workspace = str(dagster_home(settings) / "workspace.yaml")
    code, ui, background = code_server(settings), webserver(settings), daemon(settings)
    port = settings.dagster_port
    if ui.pid() is None:
        require_free_ports("the Dagster webserver", {"UI": settings.dagster_port})
    if ui.pid() is None and background.pid() is None:
        migrate_storage(settings, env)
    if code.pid() is None:
        sock = code_server_socket(settings)
        sock.unlink(missing_ok=True)  # a killed server's socket file would pass for a listening one
        options = {"--module-name": DEFINITIONS_MODULE, "--socket": str(sock), "--location-name": LOCATION}
        argv = [str(bin_dir / "dagster"), "api", "grpc", *(a for pair in options.items() for a in pair)]
        code.start([*argv, "--log-level", "warning"], env=env, cwd=PROJECT_ROOT)
        wait_until(lambda: code_server_healthy(settings), timeout_s, f"the Dagster code server on {sock}", code)
    if background.pid() is None:
        background.start([str(bin_dir / "dagster-daemon"), "run", "-w", workspace], env=env, cwd=PROJECT_ROOT)
    if ui.pid() is None:
        exposed = "no TLS and no login: anyone who reaches it can see the data and launch runs"
        network.warn_if_exposed("The Dagster webserver", settings.dagster_listen_host, {"UI": port}, exposed)
        ui.start(
            webserver_argv(settings, bin_dir, workspace),
            env=env,
            cwd=PROJECT_ROOT,
        )
    wait_until(lambda: healthy(settings), timeout_s, f"the Dagster UI on :{settings.dagster_port}", ui)


def stop(settings: Settings) -> bool:
    """Stop the webserver, the daemon (it finishes its current ticks), then the code server; True if any ran."""
    stopped = [webserver(settings).stop(timeout_s=30), daemon(settings).stop(timeout_s=60)]
    stopped.append(code_server(settings).stop(timeout_s=30))
    return any(stopped)
