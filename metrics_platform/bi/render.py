"""Dashboards rendered in headless Chromium: screenshots for the docs and proof that charts draw.

The browser is driven by deploy/superset/screenshot.py with Superset's own interpreter, which has
Selenium and Pillow; the platform's virtualenv needs neither. Chromium and chromedriver come from
Debian (deploy/check-prereqs.sh installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from metrics_platform.settings import Settings
from metrics_platform.stack import superset

SCRIPT = superset.SUPERSET_DIR / "screenshot.py"


@dataclass(frozen=True)
class Rendered:
    """One page as the browser drew it."""

    url: str
    file: Path
    timed_out: bool
    charts: int
    canvases: int  # ECharts canvases: a time series or pie that drew
    tables: int
    errors: list[str]
    text: str
    distinct_colours: int
    non_background: float  # share of pixels unlike the background colour


def render(settings: Settings, pages: list[tuple[str, Path]], timeout_s: float = 90) -> list[Rendered]:
    """Log in as the admin, open each (path or URL, output PNG) in turn, screenshot it once drawn."""
    missing = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not found: run deploy/check-prereqs.sh as root (Debian packages)")
    superset.admin_password(settings)
    argv = [
        str(superset.venv_dir(settings) / "bin" / "python"),
        str(SCRIPT),
        "--base-url",
        settings.superset.url,
        "--user",
        settings.superset.admin_user,
        "--password-file",
        str(settings.state_dir / "secrets" / "superset_admin_password"),
        "--timeout",
        str(timeout_s),
    ]
    for path, out in pages:
        argv += ["--page", f"{path}={out}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60 + timeout_s * len(pages), check=False)
    if result.returncode != 0:
        raise RuntimeError(f"rendering failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    rendered = []
    for line in result.stdout.splitlines():
        row = json.loads(line)
        rendered.append(
            Rendered(
                url=row["url"],
                file=Path(row["file"]),
                timed_out=row["timed_out"],
                charts=row.get("charts", 0),
                canvases=row.get("canvases", 0),
                tables=row.get("tables", 0),
                errors=row.get("errors", []),
                text=row.get("text", ""),
                distinct_colours=row["distinct_colours"],
                non_background=row["non_background"],
            )
        )
    return rendered
