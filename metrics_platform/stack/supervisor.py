"""supervisord keeps the stack's processes running: a component that dies is started again by itself.

One supervisord per run directory (``<state>/run``), driven by a configuration the platform writes
there: ``supervisord.conf`` (socket, log) and one ``supervisor/<name>.conf`` per component. A
component's command line, environment and working directory go into ``supervisor/<name>.json``
(mode 0600: the environment may hold secrets); the program supervisord runs is this module's
``exec`` entry point, which replaces itself with that command, so the pid supervisord watches is
the component's own.

Restart policy (the same for every component): a process that dies is started again at once; one
that dies again within ``START_SECONDS`` of starting is retried after 1, 2, 3 ... seconds, and left
``FATAL`` after ``START_RETRIES`` such tries (``metrics-platform status`` says so; ``up`` starts it
again). Stops asked for through the supervisor are never restarted. supervisord itself runs while
it supervises something: stopping the last component shuts it down.

Operators can use supervisord's own tools: ``supervisorctl -c .state/run/supervisord.conf status``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# A process alive this long counts as started; dying sooner is a failed start, retried with backoff.
START_SECONDS = 5
START_RETRIES = 10
# supervisord's own last resort when a stop is not finished (Daemon.stop kills sooner, per component).
STOP_WAIT_SECONDS = 600
# supervisord's state names (supervisor.states.ProcessStates).
ALIVE_STATES = frozenset({"STARTING", "RUNNING", "STOPPING"})
STOPPED_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})
# Unix sockets paths are limited to 107 bytes.
_MAX_SOCKET_PATH = 107
# What talking to a supervisord that is not there (or is going away) raises.
_UNREACHABLE = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError)


class SupervisorError(RuntimeError):
    """supervisord could not be started or did not do what was asked; the message says why."""


@dataclass(frozen=True)
class ProgramInfo:
    """What supervisord knows about one component."""

    name: str
    state: str
    pid: int | None
    spawn_error: str

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES and self.pid is not None


# supervisord logs every exit it did not ask for as "exited: NAME (...)"; a stop it was asked for
# is "stopped: NAME". Each start of supervisord begins with "supervisord started with pid N".
_STARTED = re.compile(r"^\S+ \S+ \w+ supervisord started with pid \d+", re.MULTILINE)
_EXITED = re.compile(r"^\S+ \S+ \w+ exited: (\S+) \((.*)\)$", re.MULTILINE)
_GAVE_UP = re.compile(r"^\S+ \S+ \w+ gave up: (\S+) ", re.MULTILINE)


def restart_counts(log_text: str) -> dict[str, int]:
    """Unplanned exits (each followed by a restart or a retry) per component since supervisord last
    started, from its log; components that never crashed are absent."""
    starts = list(_STARTED.finditer(log_text))
    text = log_text[starts[-1].end() :] if starts else log_text
    counts: dict[str, int] = {}
    for match in _EXITED.finditer(text):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def gave_up(log_text: str) -> set[str]:
    """Components supervisord stopped retrying (FATAL) since it last started."""
    starts = list(_STARTED.finditer(log_text))
    text = log_text[starts[-1].end() :] if starts else log_text
    return {match.group(1) for match in _GAVE_UP.finditer(text)}


def _ini_value(text: str) -> str:
    # supervisord expands %(name)s in values; a literal % is written %%.
    return text.replace("%", "%%")


def render_supervisord_conf(run_dir: Path, log_dir: Path, min_fds: int) -> str:
    """supervisord's main configuration: a socket only the owner can use, its log, the programs."""
    # Run as root, supervisord warns unless told that root is meant; it changes no user either way.
    user = "\nuser = root" if os.getuid() == 0 else ""
    return f"""; Written by metrics-platform at start; edits are overwritten.
[unix_http_server]
file = {_ini_value(str(run_dir / "supervisor.sock"))}
chmod = 0700

[supervisord]
logfile = {_ini_value(str(log_dir / "supervisord.log"))}
logfile_maxbytes = 10MB
logfile_backups = 2
loglevel = info
pidfile = {_ini_value(str(run_dir / "supervisord.pid"))}
directory = {_ini_value(str(run_dir))}
minfds = {min_fds}
nodaemon = false
silent = true{user}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{_ini_value(str(run_dir / "supervisor.sock"))}

[include]
files = supervisor/*.conf
"""


def render_program_conf(name: str, spec: Path, log_file: Path, python: str = sys.executable) -> str:
    """One component's section: started on request only, restarted whenever it dies unasked."""
    command = shlex.join([python, "-m", "metrics_platform.stack.supervisor", "exec", str(spec)])
    return f"""[program:{name}]
command = {_ini_value(command)}
autostart = false
autorestart = true
startsecs = {START_SECONDS}
startretries = {START_RETRIES}
stopsignal = TERM
stopwaitsecs = {STOP_WAIT_SECONDS}
; Stop and kill the component's children too (gunicorn workers, Dagster's code servers).
stopasgroup = true
killasgroup = true
redirect_stderr = true
stdout_logfile = {_ini_value(str(log_file))}
stdout_logfile_maxbytes = 100MB
stdout_logfile_backups = 2
"""


@dataclass(frozen=True)
class Supervisor:
    """The supervisord of one run directory (pid, socket, configuration) and log directory."""

    run_dir: Path
    log_dir: Path

    @property
    def conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def programs_dir(self) -> Path:
        return self.run_dir / "supervisor"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "supervisord.log"

    def _rpc(self, timeout_s: float = 30.0):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        transport.timeout = timeout_s
        # The URL is a placeholder: the transport dials the socket.
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        """True if supervisord answers on its socket."""
        if not self.socket.exists():
            return False
        try:
            return self._rpc(timeout_s=5.0).getState()["statename"] == "RUNNING"
        except (*_UNREACHABLE, xmlrpc.client.Fault):
            return False

    def ensure_running(self, timeout_s: float = 20.0) -> None:
        """Write the configuration and start supervisord unless it runs already."""
        if self.running():
            return
        if len(str(self.socket).encode()) > _MAX_SOCKET_PATH:
            raise SupervisorError(f"the supervisor's socket path {self.socket} is too long; use a shorter state dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.programs_dir.mkdir(parents=True, exist_ok=True)
        import resource

        soft_fds, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Components inherit supervisord's limits: keep the caller's (never below supervisord's minimum).
        self.conf.write_text(render_supervisord_conf(self.run_dir, self.log_dir, max(1024, soft_fds)))
        # supervisord forks into the background; the first process returns once the socket is bound.
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=self.run_dir,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.1)
        raise SupervisorError(
            f"supervisord did not start (exit {result.returncode}) with {self.conf}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}\nlog {self.log_file}:\n{_tail(self.log_file)}"
        )

    def info(self, name: str) -> ProgramInfo | None:
        """The component's state, or None if supervisord is not running or does not know it."""
        if not self.socket.exists():
            return None
        try:
            raw = self._rpc().getProcessInfo(name)
        except xmlrpc.client.Fault:
            return None  # BAD_NAME: never started under this supervisord (or it is shutting down)
        except _UNREACHABLE:
            return None
        return ProgramInfo(name, raw["statename"], raw["pid"] or None, raw["spawnerr"])

    def all_info(self) -> list[ProgramInfo]:
        if not self.socket.exists():
            return []
        try:
            rows = self._rpc().getAllProcessInfo()
        except (*_UNREACHABLE, xmlrpc.client.Fault):
            return []
        return [ProgramInfo(r["name"], r["statename"], r["pid"] or None, r["spawnerr"]) for r in rows]

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None,
        log_file: Path,
        pid_file: Path | None = None,
    ) -> int:
        """Register (or update) the component and start it; returns its pid.

        Each start, restarts included, writes the component's pid to ``pid_file``: processes left
        running by a supervisord that was killed can still be found and stopped.
        """
        self.ensure_running()
        spec = self.programs_dir / f"{name}.json"
        # Created 0600 before anything is written: the environment may hold passwords.
        fd = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            spec_data = {"argv": list(argv), "env": dict(env), "cwd": str(cwd) if cwd else None}
            json.dump(spec_data | {"pid_file": str(pid_file) if pid_file else None}, out)
        program = self.programs_dir / f"{name}.conf"
        wanted = render_program_conf(name, spec, log_file)
        if not program.exists() or program.read_text() != wanted:
            program.write_text(wanted)
        rpc = self._rpc()
        try:
            [[added, changed, _removed]] = rpc.reloadConfig()
            for group in changed:
                # Only stopped programs can be replaced; a running one keeps its section until stopped.
                rpc.removeProcessGroup(group)
            for group in [*added, *changed]:
                rpc.addProcessGroup(group)
        except xmlrpc.client.Fault as exc:
            raise SupervisorError(f"supervisord could not register {name}: {exc.faultString}") from exc
        try:
            current = self.info(name)
            if current is not None and current.state == "BACKOFF":
                rpc.stopProcess(name, False)  # waiting to retry after a crash: start it now instead
            rpc.startProcess(name, False)
        except xmlrpc.client.Fault as exc:
            # Restarted by supervisord itself between the caller's check and this call: it runs, as asked.
            if "ALREADY_STARTED" not in exc.faultString:
                raise SupervisorError(f"supervisord could not start {name}: {exc.faultString}") from exc
        deadline = time.monotonic() + 10
        while (info := self.info(name)) is not None and info.pid is None and time.monotonic() < deadline:
            time.sleep(0.2)  # a retry supervisord had scheduled itself is about to spawn
        if info is None or info.pid is None:
            state = info.state if info else "unknown"
            raise SupervisorError(f"{name} did not start ({state}); log {log_file}:\n{_tail(log_file)}")
        return info.pid

    def stop(self, name: str, timeout_s: float) -> bool:
        """Stop the component (no restart follows): TERM to its process group, SIGKILL after
        ``timeout_s``. Returns True if it was running."""
        info = self.info(name)
        if info is None or info.state in STOPPED_STATES:
            return False
        try:
            # BACKOFF (waiting to retry) becomes STOPPED at once; a live process gets TERM.
            self._rpc().stopProcess(name, False)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString:
                raise SupervisorError(f"supervisord could not stop {name}: {exc.faultString}") from exc
        if not info.alive:
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = self.info(name)
            if current is None or current.state in STOPPED_STATES:
                return True
            time.sleep(0.2)
        # Still stopping: kill the whole group now (supervisord records it as the stop it asked for).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(info.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            current = self.info(name)
            if current is None or current.state in STOPPED_STATES:
                break
            time.sleep(0.2)
        return True

    def shutdown_if_idle(self) -> bool:
        """Stop supervisord when none of its components is alive or waiting to retry; True if it did."""
        if not self.running():
            return False
        if any(p.state in ALIVE_STATES or p.state == "BACKOFF" for p in self.all_info()):
            return False
        self.shutdown()
        return True

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop supervisord (and, if any still run, its components)."""
        try:
            self._rpc().shutdown()
        except (*_UNREACHABLE, xmlrpc.client.Fault):
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.running():
            time.sleep(0.1)

    def restarts(self) -> dict[str, int]:
        """Unplanned exits per component since supervisord started (see ``restart_counts``)."""
        try:
            return restart_counts(self.log_file.read_text(errors="replace"))
        except FileNotFoundError:
            return {}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _exec(spec_path: str) -> None:
    """Replace this process with the component described by the spec (argv, env, cwd)."""
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("pid_file"):
        Path(spec["pid_file"]).write_text(str(os.getpid()))  # exec keeps the pid
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "exec":
        sys.exit("usage: python -m metrics_platform.stack.supervisor exec SPEC.json")
    _exec(sys.argv[2])
