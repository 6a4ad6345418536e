"""The one ClickHouse client factory: every process but the embedded server goes through it."""

from __future__ import annotations

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from metrics_platform.settings import ClickHouseSettings


def client(settings: ClickHouseSettings, **kwargs: object) -> Client:
    """A clickhouse-connect client for the configured server (embedded or remote), as the platform's account.

    Extra keyword arguments go to ``clickhouse_connect.get_client`` (timeouts, settings).
    """
    try:
        return clickhouse_connect.get_client(
            host=settings.host,
            port=settings.http_port,
            username=settings.user,
            password=settings.password,
            database=settings.database,
            secure=settings.secure,
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
