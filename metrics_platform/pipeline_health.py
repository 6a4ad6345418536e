"""Pipeline health numbers: Collector queue, ClickHouse freshness and insert delay, dead letters,
restarts of the stack's components."""

from __future__ import annotations

import re

from clickhouse_connect.driver.client import Client

from metrics_platform import kafka_lag
from metrics_platform.settings import KafkaSettings
from metrics_platform.stack.process import http_get
from metrics_platform.stack.supervisor import Supervisor, gave_up, restart_counts

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
# Spans still waiting in the finalizers' inboxes, and spans of blocks a finalizer can no longer see (sql/0017):
# one row per server through a cluster's read layer.
_SETTLING_SQL = """
SELECT sum(settling_spans),
       dateDiff('millisecond', minIf(oldest_settling_at, settling_spans > 0), now64(3)) / 1000,
       sum(stranded_spans)
FROM finalizer_settling
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


def restarts(components: list[str], supervisor_log: str) -> dict[str, float]:
    """``restarts_<component>``: how often each component died and was restarted by the supervisor
    since the stack came up (0 for those that never did), and ``gave_up_<component>`` = 1 for one
    the supervisor stopped retrying."""
    counts = restart_counts(supervisor_log)
    health = {f"restarts_{name}": float(counts.get(name, 0)) for name in sorted({*components, *counts})}
    return health | {f"gave_up_{name}": 1.0 for name in sorted(gave_up(supervisor_log))}


def component_restarts(supervisor: Supervisor) -> dict[str, float]:
    """``restarts`` of the components this machine's supervisor runs (nothing if it runs none)."""
    components = [p.stem for p in sorted(supervisor.programs_dir.glob("*.conf"))]
    try:
        log = supervisor.log_file.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    return restarts(components, log)


# The tables ClickHouse fills from Kafka on its own (the Dagster UI shows them as observed assets).
STREAMS = ("span_inbox", "agent_events", "dead_letters")
# Messages a consumer group may be behind and still count as keeping up (a burst in flight).
LAG_KEEPING_UP = 10_000


def consumer_lags(settings: KafkaSettings, timeout_s: float = 10.0) -> dict[str, int]:
    """Messages behind per ClickHouse consumer group (its topic's partitions summed)."""
    return {
        group: kafka_lag.total_lag(settings, group, topic, timeout_s)
        for group, topic in kafka_lag.clickhouse_groups(settings).items()
    }


def stream_rows(ch: Client) -> dict[str, dict[str, float]]:
    """Rows of the streamed tables (active parts) and how many arrived in the last 5 minutes."""
    rows = ch.query(
        "SELECT table, sum(rows) FROM system.parts WHERE database = currentDatabase() AND active "
        "AND table IN ('span_inbox', 'agent_events', 'dead_letters') GROUP BY table"
    ).result_rows
    recent = ch.query(
        "SELECT (SELECT count() FROM span_inbox WHERE ingested_at >= now64(3) - INTERVAL 5 MINUTE), "
        "(SELECT count() FROM agent_events WHERE finalized_at >= now64(3) - INTERVAL 5 MINUTE), "
        "(SELECT count() FROM dead_letters WHERE received_at >= now64(3) - INTERVAL 5 MINUTE)"
    ).result_rows[0]
    facts = {table: {"rows": 0.0} for table in STREAMS}
    for table, count in rows:
        facts[table]["rows"] = float(count)
    for table, count in zip(STREAMS, recent, strict=True):
        facts[table]["rows_last_5m"] = float(count)
    return facts


def streams_up_to_date(
    health: dict[str, float], lags: dict[str, int] | None, spans_group: str, attribution_delay_s: float, margin_s: float
) -> dict[str, tuple[bool, str]]:
    """Whether each streamed table keeps up with what arrives, and why (pure: judged from the numbers).

    span_inbox and dead_letters are written by ClickHouse's Kafka consumers: up to date while the
    groups are at most LAG_KEEPING_UP messages behind. agent_events is up to date while no span waits
    in the inbox much longer than the attribution delay and none is stranded. Idle streams are up to
    date: nothing is waiting.
    """
    verdicts: dict[str, tuple[bool, str]] = {}
    if lags is None:
        verdicts["span_inbox"] = verdicts["dead_letters"] = (False, "Kafka consumer lag could not be read")
    else:
        spans_lag = lags.get(spans_group, 0)
        worst = max(lags.values(), default=0)
        verdicts["span_inbox"] = (spans_lag <= LAG_KEEPING_UP, f"{spans_lag:,} span messages not yet consumed")
        verdicts["dead_letters"] = (worst <= LAG_KEEPING_UP, f"consumers at most {worst:,} messages behind")
    if "settling_spans" not in health:
        verdicts["agent_events"] = (False, "ClickHouse could not be read")
    else:
        oldest, stranded = health.get("oldest_settling_s", 0.0), health.get("stranded_spans", 0.0)
        limit = attribution_delay_s + margin_s
        ok = oldest <= limit and stranded == 0
        verdicts["agent_events"] = (
            ok,
            f"oldest span waiting to be final: {oldest:.0f} s (limit {limit:.0f} s); {stranded:.0f} stranded",
        )
    return verdicts
