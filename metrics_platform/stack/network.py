"""Listen addresses, exposure warnings and the OTLP bearer token: pure helpers shared by the launchers.

Every component listens on loopback unless its ``METRICS_PLATFORM_<X>_LISTEN_HOST`` says otherwise. A
non-loopback address makes a port reachable from other machines, so each launcher logs what it then
exposes and whether TLS or a password protects it (``exposure_warning``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metrics_platform.settings import Settings

LOG = logging.getLogger("metrics_platform.network")
# Addresses that mean "every interface": a local client still dials loopback.
WILDCARDS = ("0.0.0.0", "::", "")
OTLP_TOKEN_SECRET = "otlp_token"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it resolves to whatever interface it names


def connect_host(listen_host: str) -> str:
    """The address a process on this machine dials to reach a server listening on ``listen_host``."""
    return "127.0.0.1" if listen_host in WILDCARDS else listen_host


def host_port(host: str, port: int) -> str:
    """``host:port`` with an IPv6 address in brackets, as URLs and listener strings want it."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def address(host: str) -> str:
    """``host`` as written before ``:port`` (IPv6 in brackets)."""
    return host_port(host, 0).rsplit(":", 1)[0]


def exposure_warning(component: str, host: str, ports: Mapping[str, int], protection: str) -> str | None:
    """The warning for ``component`` listening on ``host`` (None on loopback): what others can now reach.

    ``ports`` names each exposed port; ``protection`` says what guards them ("TLS and a bearer token", "no
    TLS, accounts with passwords", ...), so an operator sees at once what travels in clear.
    """
    if is_loopback(host):
        return None
    where = "every interface" if host in WILDCARDS else host
    listed = ", ".join(f"{name} :{port}" for name, port in ports.items())
    return f"{component} listens on {where}, not loopback: {listed} reachable from other machines ({protection})"


def warn_if_exposed(component: str, host: str, ports: Mapping[str, int], protection: str) -> str | None:
    """Log ``exposure_warning`` when there is one; returns it."""
    message = exposure_warning(component, host, ports, protection)
    if message:
        LOG.warning(message)
    return message


def otlp_token_file(settings: Settings) -> Path:
    """The file holding the OTLP bearer token(s): the operator's, or one generated into the state directory."""
    c = settings.collector
    if c.token_file:
        return Path(c.token_file)
    settings.generated_secret(OTLP_TOKEN_SECRET)  # created once, mode 0600
    return settings.state_dir / "secrets" / OTLP_TOKEN_SECRET


def otlp_token(settings: Settings) -> str:
    """The token the platform's own senders (demo, load generator, CLI) present; the file's first line."""
    lines = otlp_token_file(settings).read_text().split()
    if not lines:
        raise ValueError(f"the OTLP token file {otlp_token_file(settings)} is empty")
    return lines[0]


def otlp_headers(settings: Settings) -> dict[str, str]:
    """HTTP/gRPC headers an OTLP sender adds: the bearer token when the receivers require one."""
    if not settings.collector.auth:
        return {}
    return {"Authorization": f"Bearer {otlp_token(settings)}"}
