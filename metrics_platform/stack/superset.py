"""Apache Superset, the platform's dashboards: its own virtualenv, a one-time setup, the web server.

Superset pins Flask and SQLAlchemy versions that clash with the platform's packages, so it lives in
a virtualenv of its own under the cache directory, named by a hash of deploy/superset's
requirements and constraints (an edit builds a new one; an unchanged file reuses it). Its
configuration is deploy/superset/superset_config.py; its data (SQLite metadata by default) is
under ``<state>/superset``; its secrets are generated once into ``<state>/secrets``.

Superset queries ClickHouse as the platform's read-only account (``metrics_reader``). The embedded
ClickHouse cannot create users by SQL (the engine has no writable access storage), so the account is
declared in the server's users file (stack/clickhouse_users.py); an external ClickHouse needs it
created by its operator (deploy/superset/README.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from metrics_platform.paths import DEPLOY_DIR
from metrics_platform.settings import Settings
from metrics_platform.stack import network
from metrics_platform.stack.process import Daemon, StackError, http_get, require_free_ports, wait_until

SUPERSET_DIR = DEPLOY_DIR / "superset"
REQUIREMENTS = SUPERSET_DIR / "requirements.txt"
CONSTRAINTS = SUPERSET_DIR / "constraints.txt"
CONFIG = SUPERSET_DIR / "superset_config.py"
EMBED_PACKAGE = SUPERSET_DIR / "embed"
EMBED_SDK_BUNDLE = Path("node_modules/@superset-ui/embedded-sdk/bundle/index.js")
SECRETS = ("superset_secret_key", "superset_guest_token_secret", "superset_embed_api_key", "superset_admin_password")

# One worker with threads: the whole UI in ~300 MB, and a dashboard's queries still run in parallel.
_GUNICORN_OPTIONS = (
    *("--workers", "1", "--worker-class", "gthread", "--threads", "8", "--timeout", "120"),
    *("--limit-request-line", "0", "--limit-request-field_size", "0", "superset.app:create_app()"),
)
_ADMIN_PROFILE = ("--firstname", "Platform", "--lastname", "Admin", "--email", "admin@metrics-platform.invalid")

Report = Callable[[str], None]


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def venv_dir(settings: Settings) -> Path:
    return settings.cache_dir / "superset" / f"venv-{_digest(REQUIREMENTS, CONSTRAINTS)}"


def _run(
    argv: list[str],
    what: str,
    log: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a set-up step with its output appended to ``log``; fail with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {what}: {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            input=stdin.encode() if stdin else None,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise StackError(f"Superset: {what} failed (exit {result.returncode}); log {log}:\n{tail}")


def install(settings: Settings, report: Report = print) -> Path:
    """Create Superset's virtualenv from the pinned requirements, unless it exists; returns it."""
    venv = venv_dir(settings)
    if (venv / ".installed").exists():
        return venv
    report(f"Superset: installing apache-superset into {venv} (~1 min cold, cached afterwards)")
    shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted install
    log = settings.log_dir / "superset-install.log"
    # The platform's own interpreter (3.11+) is what Superset 6.1 supports.
    _run([sys.executable, "-m", "venv", str(venv)], "creating the virtualenv", log)
    env = {**os.environ, "PIP_CACHE_DIR": str(settings.cache_dir / "pip"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS)]
    _run(pip, "pip install", log, env=env)
    (venv / ".installed").touch()
    return venv


def install_embed_sdk(settings: Settings, report: Report = print) -> Path | None:
    """Install @superset-ui/embedded-sdk from npm (cached); None, with a warning, without npm."""
    target = settings.cache_dir / "superset" / f"embed-{_digest(EMBED_PACKAGE / 'package-lock.json')}"
    bundle = target / EMBED_SDK_BUNDLE
    if bundle.exists():
        return bundle
    npm = shutil.which("npm")
    if npm is None:
        report("Superset: npm not found; pages embedding dashboards must get @superset-ui/embedded-sdk elsewhere")
        return None
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(EMBED_PACKAGE / name, target / name)
    _run(
        [npm, "ci", "--no-audit", "--no-fund", "--cache", str(settings.cache_dir / "npm")],
        "npm ci (embedded SDK)",
        settings.log_dir / "superset-install.log",
        env={**os.environ, "npm_config_update_notifier": "false"},
        cwd=target,
    )
    if not bundle.exists():
        raise StackError(f"Superset: npm installed the embedded SDK but {bundle} is missing")
    return bundle


def clickhouse_credentials(settings: Settings) -> tuple[str, str]:
    """The read-only ClickHouse user Superset connects as (the platform's reader by default), and its password."""
    s = settings.superset
    if not s.clickhouse_password:
        raise StackError(
            "Superset needs a read-only ClickHouse user on the external server: create it (see "
            "deploy/superset/README.md) and set METRICS_PLATFORM_CLICKHOUSE_READER_USER/_PASSWORD"
        )
    return s.clickhouse_user, s.clickhouse_password


def admin_password(settings: Settings) -> str:
    return settings.generated_secret("superset_admin_password")


def embed_api_key(settings: Settings) -> str:
    """The bearer key of the guest-token endpoint (deploy/superset/embed_api.py)."""
    return settings.generated_secret("superset_embed_api_key")


def home(settings: Settings) -> Path:
    return settings.state_dir / "superset"


def environment(settings: Settings, sdk_bundle: Path | None = None) -> dict[str, str]:
    """The environment superset_config.py reads (and no telemetry from Selenium)."""
    for name in SECRETS:
        settings.generated_secret(name)
    home(settings).mkdir(parents=True, exist_ok=True)
    # The platform's own credentials (ClickHouse's default user, Kafka's SASL) stay out of Superset.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_PLATFORM_", "CLICKHOUSE_"))}
    env = {
        **inherited,
        "SUPERSET_CONFIG_PATH": str(CONFIG),
        "SUPERSET_HOME": str(home(settings)),
        "FLASK_APP": "superset",
        "METRICS_PLATFORM_SUPERSET_SECRETS_DIR": str(settings.state_dir / "secrets"),
        "METRICS_PLATFORM_SUPERSET_DATABASE_URI": settings.superset.database_uri,
        "METRICS_PLATFORM_SUPERSET_EMBED_ORIGINS": ",".join(settings.superset.frame_origins),
        "METRICS_PLATFORM_SUPERSET_EMBED_SDK": str(sdk_bundle or ""),
        "SE_AVOID_STATS": "true",
        "SE_OFFLINE": "true",
    }
    # The platform's virtualenv must not leak into Superset's.
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


def setup(settings: Settings, report: Report = print) -> None:
    """Create or upgrade Superset's metadata database, its admin user and roles (once per venv)."""
    venv = venv_dir(settings)
    marker = home(settings) / f"setup-{venv.name}.done"
    if marker.exists():
        return
    report("Superset: first-time setup (db upgrade, admin user, roles; ~1-2 min)")
    env = environment(settings)
    superset = str(venv / "bin" / "superset")
    log = settings.log_dir / "superset-setup.log"
    _run([superset, "db", "upgrade"], "superset db upgrade", log, env=env)
    password = admin_password(settings)
    # The password goes through stdin (click prompts for it), not the command line.
    _run(
        [superset, "fab", "create-admin", "--username", settings.superset.admin_user, *_ADMIN_PROFILE],
        "superset fab create-admin",
        log,
        env=env,
        stdin=f"{password}\n{password}\n",
    )
    _run([superset, "init"], "superset init", log, env=env)
    marker.touch()


def daemon(settings: Settings) -> Daemon:
    return Daemon("superset", settings.run_dir, settings.log_dir)


def healthy(settings: Settings) -> bool:
    try:
        status, body = http_get(f"{settings.superset.url}/health", timeout_s=2.0)
    except OSError:
        return False
    return status == 200 and body.strip() == "OK"


def gunicorn_argv(settings: Settings, venv: Path) -> list[str]:
    """Superset's web server command line, bound to the configured listen address."""
    bind = network.host_port(settings.superset.listen_host, settings.superset.port)
    return [str(venv / "bin" / "gunicorn"), "--bind", bind, *_GUNICORN_OPTIONS]


def start(settings: Settings, report: Report = print, timeout_s: float = 180.0) -> None:
    """Install (cached), set up (once) and start Superset's web server; wait for /health."""
    server = daemon(settings)
    if server.pid() is not None:
        return
    venv = install(settings, report)
    sdk_bundle = install_embed_sdk(settings, report)
    setup(settings, report)
    require_free_ports("Superset", {"web": settings.superset.port})
    in_clear = "no TLS: Superset logins and dashboards travel in clear"
    network.warn_if_exposed("Superset", settings.superset.listen_host, {"web": settings.superset.port}, in_clear)
    server.start(
        gunicorn_argv(settings, venv),
        env=environment(settings, sdk_bundle),
        cwd=home(settings),
    )
    wait_until(lambda: healthy(settings), timeout_s, f"Superset on {settings.superset.url}/health", server)


def stop(settings: Settings) -> bool:
    return daemon(settings).stop(timeout_s=30)


def rss_mb(settings: Settings) -> float:
    """Resident memory of the Superset server and its workers, in MB (0 when stopped)."""
    pid = daemon(settings).pid()
    if pid is None:
        return 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total_kb = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total_kb / 1024
