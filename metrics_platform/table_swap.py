"""Atomic replacement of ClickHouse tables, whole or one day partition at a time, via staging tables.

The new rows are written to a staging table created ``AS`` the target (same engine and columns)
and swapped in with one statement: EXCHANGE TABLES for a whole table, REPLACE PARTITION for a
day. Readers therefore never see a half-loaded table or day, and a re-run replaces what it
wrote before instead of adding to it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import date

from clickhouse_connect.driver.client import Client

# A staging table older than this belongs to a load that died; younger ones may be in use.
_STALE_STAGING_S = 3600


def replace_table(ch: Client, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Replace every row of ``table`` atomically: readers see the old rows or the new, never a mix.

    The rows go into a staging table created ``AS`` the live one (same engine and columns), which
    is then swapped in with EXCHANGE TABLES. The staging name is unique per load, so two loads
    never write into each other's staging table; the last to swap wins.
    """
    _drop_stale_staging(ch, table)
    staging = f"{table}_load_{secrets.token_hex(4)}"
    ch.command(f"CREATE TABLE {staging} AS {table}")
    try:
        if rows:
            ch.insert(staging, list(rows), column_names=list(columns))
        ch.command(f"EXCHANGE TABLES {staging} AND {table}")
    finally:
        ch.command(f"DROP TABLE IF EXISTS {staging}")


def replace_day_partitions(ch: Client, table: str, days: Sequence[date], fill: Callable[[str, date], None]) -> None:
    """Recompute whole-day partitions of ``table`` (``PARTITION BY day``) atomically per day.

    ``fill(staging, day)`` inserts the day's rows into a staging table made ``AS`` the target;
    the day's partition is then swapped in with REPLACE PARTITION, so readers never see a day
    half-written or missing, and a re-run replaces rather than adds. A day that computes to no
    rows has its partition dropped.
    """
    _drop_stale_staging(ch, table)
    staging = f"{table}_load_{secrets.token_hex(4)}"
    ch.command(f"CREATE TABLE {staging} AS {table}")
    try:
        for day in days:
            fill(staging, day)
            # A date's ISO form is a safe literal; ALTER ... PARTITION takes no query parameters.
            partition = f"'{day.isoformat()}'"
            filled = ch.query(
                f"SELECT count() FROM {staging} WHERE day = {{d:Date}}", parameters={"d": day}
            ).result_rows[0][0]
            if filled:
                ch.command(f"ALTER TABLE {table} REPLACE PARTITION {partition} FROM {staging}")
            else:
                # REPLACE from an empty partition is refused by recent servers; dropping says it plainly.
                ch.command(f"ALTER TABLE {table} DROP PARTITION {partition}")
    finally:
        ch.command(f"DROP TABLE IF EXISTS {staging}")


def _drop_stale_staging(ch: Client, table: str) -> None:
    stale = ch.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND startsWith(name, {p:String}) "
        "AND metadata_modification_time < now() - toIntervalSecond({s:UInt32})",
        parameters={"p": f"{table}_load_", "s": _STALE_STAGING_S},
    ).result_rows
    for (name,) in stale:
        ch.command(f"DROP TABLE IF EXISTS {name}")
