"""The Dagster webserver (UI) and daemon (schedules, sensors, run queue) next to the stack."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from metrics_platform.paths import PROJECT_ROOT
from metrics_platform.settings import Settings
from metrics_platform.stack.process import Daemon, http_get, require_free_ports, wait_until


def dagster_home(settings: Settings) -> Path:
    return Path(os.environ.get("DAGSTER_HOME", settings.state_dir / "dagster"))


def webserver(settings: Settings) -> Daemon:
    return Daemon("dagster-webserver", settings.run_dir, settings.log_dir)


def daemon(settings: Settings) -> Daemon:
    return Daemon("dagster-daemon", settings.run_dir, settings.log_dir)


def _environment(settings: Settings) -> dict[str, str]:
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    # DAGSTER_HOME must hold dagster.yaml; the repository's copy is the source of truth.
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home)}


def healthy(settings: Settings) -> bool:
    try:
        status, _ = http_get(f"http://127.0.0.1:{settings.dagster_port}/server_info", timeout_s=2.0)
    except OSError:
        return False
    return status == 200


def start(settings: Settings, timeout_s: float = 120.0) -> None:
    """Start the webserver and daemon on the code location in workspace.yaml."""
    env = _environment(settings)
    bin_dir = Path(sys.executable).parent
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    if daemon(settings).pid() is None:
        daemon(settings).start([str(bin_dir / "dagster-daemon"), "run", "-w", workspace], env=env, cwd=PROJECT_ROOT)
    ui = webserver(settings)
    if ui.pid() is None:
        require_free_ports("the Dagster webserver", {"UI": settings.dagster_port})
        ui.start(
            [str(bin_dir / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(settings.dagster_port)],
            env=env,
            cwd=PROJECT_ROOT,
        )
    wait_until(lambda: healthy(settings), timeout_s, f"the Dagster UI on :{settings.dagster_port}", ui)


def stop(settings: Settings) -> bool:
    stopped_ui = webserver(settings).stop(timeout_s=30)
    stopped_daemon = daemon(settings).stop(timeout_s=60)
    return stopped_ui or stopped_daemon
