"""Retention facts of the platform's ClickHouse tables: TTLs, expired rows, size."""

from __future__ import annotations

import re
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

# Table → the column its TTL is based on.
# Rollups are projections of agent_events and expire with its rows.
RETAINED_TABLES = {
    "agent_events": "ts",
    "dead_letters": "received_at",
    "cost_by_account_daily": "day",
    "model_drift_daily": "day",
}
_TTL_RE = re.compile(r"\bTTL\b.*?(?:toIntervalDay\((\d+)\)|INTERVAL\s+(\d+)\s+DAY)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class TableRetention:
    table: str
    ttl_days: int | None  # None: the table has no day-based TTL
    expired_rows: int
    rows: int
    bytes_on_disk: int


def ttl_days(engine_full: str) -> int | None:
    """The day count of a table's TTL clause, as ClickHouse reports it in engine_full."""
    match = _TTL_RE.search(engine_full)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def inspect(ch: Client, retention_days: int) -> list[TableRetention]:
    """TTL, rows older than ``retention_days`` and storage of each retained table."""
    engines = dict(
        ch.query(
            "SELECT name, engine_full FROM system.tables "
            "WHERE database = currentDatabase() AND name IN {t:Array(String)}",
            parameters={"t": list(RETAINED_TABLES)},
        ).result_rows
    )
    sizes = {
        table: (rows, size)
        for table, rows, size in ch.query(
            "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts "
            "WHERE active AND database = currentDatabase() AND table IN {t:Array(String)} GROUP BY table",
            parameters={"t": list(RETAINED_TABLES)},
        ).result_rows
    }
    result = []
    for table, column in RETAINED_TABLES.items():
        if table not in engines:
            raise RuntimeError(f"table {table} does not exist: apply the migrations first")
        expired = ch.query(
            f"SELECT count() FROM {table} WHERE {column} < now() - toIntervalDay({{d:UInt32}})",
            parameters={"d": retention_days},
        ).result_rows[0][0]
        rows, size = sizes.get(table, (0, 0))
        result.append(TableRetention(table, ttl_days(engines[table]), int(expired), int(rows), int(size)))
    return result
