"""Background processes of the stack (run by supervisord, see supervisor.py), health waits, ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from metrics_platform.stack.supervisor import ProgramInfo, Supervisor, SupervisorError


class StackError(RuntimeError):
    """A component could not be installed, started or stopped; the message says which and why."""


@dataclass(frozen=True)
class Daemon:
    """One background process of the stack, known by name, run and restarted by supervisord.

    Its output goes to ``<log_dir>/<name>.log``, its pid to ``<run_dir>/<name>.pid`` at each start.
    A process the supervisor does not know (its supervisord was killed, or an older version of the
    platform started it) is still found by that pid file, and stopped.
    """

    name: str
    run_dir: Path
    log_dir: Path

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.run_dir, self.log_dir)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def info(self) -> ProgramInfo | None:
        """supervisord's view: state (RUNNING, STARTING, BACKOFF, FATAL, ...), pid, last spawn error."""
        return self.supervisor.info(self.name)

    def pid(self) -> int | None:
        """The pid if the process is alive (starting or running), else None."""
        info = self.info()
        if info is not None:
            return info.pid if info.alive else None
        return self._unsupervised_pid()

    def restarts(self) -> int:
        """How often it died unasked and was started again since the supervisor started."""
        return self.supervisor.restarts().get(self.name, 0)

    def _unsupervised_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start it under the supervisor (restarted if it dies), output appended to the log."""
        if self.pid() is not None:
            raise StackError(f"{self.name} is already running (pid {self.pid()})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        try:
            # The environment is the caller's, whoever started the supervisor.
            environment = dict(os.environ if env is None else env)
            return self.supervisor.start(self.name, argv, environment, cwd, self.log_file, self.pid_file)
        except SupervisorError as exc:
            raise StackError(str(exc)) from exc

    def stop(self, timeout_s: float = 60.0) -> bool:
        """SIGTERM to its process group, wait, then SIGKILL; returns True if a process was running.

        The supervisor shuts down with its last component.
        """
        unsupervised = self._unsupervised_pid() if self.info() is None else None
        if unsupervised is not None:
            stopped = _stop_pid(unsupervised, timeout_s)
            self.pid_file.unlink(missing_ok=True)
            return stopped
        try:
            stopped = self.supervisor.stop(self.name, timeout_s)
            self.supervisor.shutdown_if_idle()
        except SupervisorError as exc:
            raise StackError(str(exc)) from exc
        self.pid_file.unlink(missing_ok=True)
        return stopped

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _stop_pid(pid: int, timeout_s: float) -> bool:
    """SIGTERM, wait, then SIGKILL a process that is not under the supervisor."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        # Children of this process that exited stay as zombies until reaped.
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return True
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return False


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_ports(component: str, ports: Mapping[str, int]) -> None:
    """Fail before starting a component whose ports another process already holds."""
    taken = [f"{what} {port}" for what, port in ports.items() if port_in_use(port)]
    if taken:
        raise StackError(
            f"cannot start {component}: port(s) already in use: {', '.join(taken)}. Stop whatever "
            "holds them or choose other ports (see the README's configuration table)."
        )


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, daemon: Daemon | None = None, every_s: float = 0.5
) -> None:
    """Poll ``check`` until it holds; on time-out (or if the daemon died) raise with its log tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # a health probe failing is the expected state while starting
            pass
        if daemon is not None and daemon.pid() is None:
            raise StackError(
                f"{daemon.name} exited while waiting for {what}; log {daemon.log_file}:\n{daemon.log_tail()}"
            )
        time.sleep(every_s)
    tail = f"; log {daemon.log_file}:\n{daemon.log_tail()}" if daemon else ""
    raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}{tail}")


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
