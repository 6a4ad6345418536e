"""Saved dashboard questions: the SQL files in ``sql/dashboards``, run against ClickHouse.

Any SQL client or BI tool (Metabase, Grafana, Superset) can use the same files; the CLI runs them
for a quick look (``metrics-platform dashboard``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from metrics_platform.paths import SQL_DIR

DASHBOARD_DIR = SQL_DIR / "dashboards"


@dataclass(frozen=True)
class Answer:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple]
    elapsed_ms: float


def available() -> dict[str, Path]:
    """Dashboard name (file stem) → SQL file."""
    return {path.stem: path for path in sorted(DASHBOARD_DIR.glob("*.sql"))}


def run(ch: Client, name: str) -> Answer:
    """Run one dashboard question; its first comment line is the title."""
    files = available()
    if name not in files:
        raise KeyError(f"no dashboard {name!r}; known: {', '.join(files)}")
    sql = files[name].read_text()
    title = next((line.lstrip("- ").strip() for line in sql.splitlines() if line.startswith("--")), name)
    started = time.perf_counter()
    result = ch.query(sql)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Answer(name, title, tuple(result.column_names), list(result.result_rows), elapsed_ms)
