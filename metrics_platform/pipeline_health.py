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
# within the last hour), freshness on the newest event of the last day. A span reaches ClickHouse
# at ingested_at (span_inbox) and becomes final (attributed, in agent_events) at finalized_at.
_CLICKHOUSE_SQL = """
SELECT
    (SELECT dateDiff('millisecond', max(ts + toIntervalMillisecond(latency_ms)), now64(3)) / 1000
     FROM agent_events WHERE ts >= now() - INTERVAL 1 DAY) AS freshness_s,
    quantiles(0.5, 0.95)(dateDiff('millisecond', ts + toIntervalMillisecond(latency_ms), ingested_at) / 1000)
        AS insert_delay_s,
    quantiles(0.5, 0.95)(dateDiff('millisecond', ts + toIntervalMillisecond(latency_ms), finalized_at) / 1000)
        AS final_delay_s,
    count() AS live_rows_last_5m,
    countIf(parent_missing) AS parent_missing_last_5m
FROM agent_events
WHERE finalized_at >= now64(3) - INTERVAL 5 MINUTE AND ts >= now() - INTERVAL 1 HOUR
"""
# Spans still waiting in the inbox (the oldest's age is the finalizer's lag), and spans of blocks
# the finalizer can no longer see: stamped more than two minutes before its cursor (sql/0011; looked
# for over the last hour).
_SETTLING_SQL = """
WITH
    greatest((SELECT max(inbox_block) FROM agent_events), (SELECT max(inbox_block) FROM finalizer_skips)) AS done_block,
    greatest((SELECT max(ingested_at) FROM agent_events), (SELECT max(ingested_at) FROM finalizer_skips)) AS done_at
SELECT countIf(ingested_at >= done_at - INTERVAL 2 MINUTE),
       dateDiff('millisecond', minIf(ingested_at, ingested_at >= done_at - INTERVAL 2 MINUTE), now64(3)) / 1000,
       countIf(ingested_at < done_at - INTERVAL 2 MINUTE)
FROM span_inbox
WHERE ingested_at >= done_at - INTERVAL 1 HOUR AND _block_number > done_block
"""


def clickhouse_health(ch: Client) -> dict[str, float]:
    """Freshness (now − newest span end), insert and final delays (span end → stored / final), last
    5 minutes; spans still settling in the inbox and the age of the oldest; recent dead letters."""
    freshness, delays, final_delays, rows, orphans = ch.query(_CLICKHOUSE_SQL).result_rows[0]
    settling, oldest_s, stranded = ch.query(_SETTLING_SQL).result_rows[0]
    dead = ch.query("SELECT count() FROM dead_letters WHERE received_at >= now64(3) - INTERVAL 1 HOUR")
    health = {
        "live_rows_last_5m": float(rows),
        "parent_missing_last_5m": float(orphans),
        "settling_spans": float(settling),
        "stranded_spans": float(stranded),
        "dead_letters_last_1h": float(dead.result_rows[0][0]),
    }
    if settling:
        health["oldest_settling_s"] = float(oldest_s)
    if freshness is not None:
        health["clickhouse_freshness_s"] = float(freshness)
    if rows:
        health |= {"insert_delay_p50_s": float(delays[0]), "insert_delay_p95_s": float(delays[1])}
        health |= {"final_delay_p50_s": float(final_delays[0]), "final_delay_p95_s": float(final_delays[1])}
    return health
