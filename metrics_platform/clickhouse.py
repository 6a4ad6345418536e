"""The one ClickHouse client factory: every process but the embedded server goes through it."""

from __future__ import annotations

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from metrics_platform.settings import ClickHouseSettings


def client(settings: ClickHouseSettings, **kwargs: object) -> Client:
    """A clickhouse-connect client for the configured server (embedded or remote).

    Extra keyword arguments go to ``clickhouse_connect.get_client`` (timeouts, settings).
    """
    return clickhouse_connect.get_client(
        host=settings.host,
        port=settings.http_port,
        username=settings.user,
        password=settings.password,
        database=settings.database,
        secure=settings.secure,
        **kwargs,
    )
