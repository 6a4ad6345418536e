"""Pipeline health numbers: Collector queue, ClickHouse freshness and insert delay, dead letters."""

from __future__ import annotations

import re

from clickhouse_connect.driver.client import Client

from metrics_platform.stack.process import http_get

_QUEUE_RE = re.compile(r'^otelcol_exporter_queue_(size|capacity)\{[^}]*exporter="kafka"[^}]*\}\s+([0-9.eE+-]+)$')


def collector_queue(metrics_port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """The Kafka exporter's sending-queue size and capacity from the Collector's own metrics."""
    status, body = http_get(f"http://{host}:{metrics_port}/metrics", timeout_s=5.0)
    if status != 200:
        raise RuntimeError(f"Collector metrics at {host}:{metrics_port} answered HTTP {status}")
    found: dict[str, float] = {}
    for line in body.splitlines():
        match = _QUEUE_RE.match(line)
        if match:
            found[f"collector_queue_{match.group(1)}"] = float(match.group(2))
    return found


# Replays insert old events on purpose: delays are measured on live events only (span ended
# within the last hour), freshness on the newest event of the last day.
_CLICKHOUSE_SQL = """
SELECT
    (SELECT dateDiff('millisecond', max(ts + toIntervalMillisecond(latency_ms)), now64(3)) / 1000
     FROM agent_events WHERE ts >= now() - INTERVAL 1 DAY) AS freshness_s,
    quantiles(0.5, 0.95)(dateDiff('millisecond', ts + toIntervalMillisecond(latency_ms), ingested_at) / 1000)
        AS insert_delay_s,
    count() AS live_rows_last_5m
FROM agent_events
WHERE ingested_at >= now64(3) - INTERVAL 5 MINUTE AND ts >= now() - INTERVAL 1 HOUR
"""


def clickhouse_health(ch: Client) -> dict[str, float]:
    """Freshness (now − newest span end) and insert delay (span end → stored), last 5 minutes."""
    freshness, delays, rows = ch.query(_CLICKHOUSE_SQL).result_rows[0]
    dead = ch.query("SELECT count() FROM dead_letters WHERE received_at >= now64(3) - INTERVAL 1 HOUR")
    health = {"live_rows_last_5m": float(rows), "dead_letters_last_1h": float(dead.result_rows[0][0])}
    if freshness is not None:
        health["clickhouse_freshness_s"] = float(freshness)
    if rows:
        health |= {"insert_delay_p50_s": float(delays[0]), "insert_delay_p95_s": float(delays[1])}
    return health
