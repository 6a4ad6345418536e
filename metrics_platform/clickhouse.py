"""The one ClickHouse client factory: every process but the embedded server goes through it."""

from __future__ import annotations

import dataclasses
import sys

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from metrics_platform.settings import ClickHouseSettings, Settings


def _without_dataframe_probes() -> None:
    """Let clickhouse-connect take pandas and numpy as absent unless this process imported them already.

    Every insert asks whether its rows are a pandas DataFrame or a numpy array, and asking imports pandas,
    numpy and pyarrow: ~80 MB more in each long-lived process that inserts (measured with bench/idle.py in
    the Dagster code server, whose sensors insert alert and health rows). The platform passes lists only
    (it has no query_df or insert_df); a process that imports pandas before its first client keeps them.
    """
    from clickhouse_connect.driver import options

    for attribute, module in (("pd", "pandas"), ("pd_time_test", "pandas"), ("np", "numpy")):
        if module not in sys.modules and attribute not in vars(options):
            setattr(options, attribute, None)


def client(settings: ClickHouseSettings, **kwargs: object) -> Client:
    """A clickhouse-connect client for the configured server (embedded or remote), as the platform's account.

    Extra keyword arguments go to ``clickhouse_connect.get_client`` (timeouts, settings).
    """
    _without_dataframe_probes()
    # Over TLS, verify the server with the configured CA bundle (a private CA, a proxy's self-signed certificate).
    tls = {"ca_cert": settings.ca_cert} if settings.secure and settings.ca_cert else {}
    try:
        return clickhouse_connect.get_client(
            host=settings.host,
            port=settings.http_port,
            username=settings.user,
            password=settings.password,
            database=settings.database,
            secure=settings.secure,
            **tls,
            **kwargs,
        )
    except DatabaseError as exc:
        if "Authentication failed" not in str(exc):
            raise
        # The server's own message does not say where the password comes from.
        where = (
            "the embedded server declares it at start with the password generated into "
            "<state>/secrets/clickhouse_writer_password (or CLICKHOUSE_PASSWORD): restart it if either changed"
            if settings.embedded
            else "set CLICKHOUSE_USER and CLICKHOUSE_PASSWORD (or CLICKHOUSE_URL) to an account of that server"
        )
        raise DatabaseError(f"ClickHouse at {settings.url} refused the account {settings.user!r}; {where}") from exc


def read_database(settings: Settings) -> str:
    """The database readers query: a cluster's read layer of Distributed tables, else the platform's database.

    The read layer is METRICS_PLATFORM_CLICKHOUSE_READ_DATABASE (a real cluster), or the one of the local
    cluster that ``up --topology`` set up in this state directory. Writers (migrations, the finalizer, price
    loads, recompute, repair, replay's inserts) keep ``settings.clickhouse.database``: each server's own tables.
    """
    if settings.cluster.read_database:
        return settings.cluster.read_database
    from metrics_platform.stack import topology  # imports this module

    return topology.read_database(settings) if topology.active(settings) else settings.clickhouse.database


def reader_settings(settings: Settings) -> ClickHouseSettings:
    """``settings.clickhouse`` with the readers' database (``read_database``); same server and accounts."""
    return dataclasses.replace(settings.clickhouse, database=read_database(settings))


def reader(settings: Settings, **kwargs: object) -> Client:
    """A client of the readers' database as the platform's account: what dashboards' SQL, audits, alert
    rules and health reads use (on a cluster they see every shard's rows once)."""
    ch = reader_settings(settings)
    result = client(ch, **kwargs)
    if ch.database != settings.clickhouse.database:
        # IN/JOIN subqueries over Distributed tables (users mapped to accounts) run once, on every shard's rows.
        result.set_client_setting("distributed_product_mode", "global")
    return result
