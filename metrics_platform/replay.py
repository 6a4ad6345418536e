"""Replaying history files into the events topic, without double-counting.

History for a day is ``YYYY-MM-DD.jsonl`` and/or ``YYYY-MM-DD.jsonl.gz``: one flat-contract
event per line (schemas/agent_event.schema.json).

Idempotence: before producing, the replay waits until ClickHouse has consumed the events topic
(so earlier replays are visible), then skips every event whose (trace_id, span_id) is already
stored for that day. Replaying a day twice, or a day that was partly ingested, therefore adds
exactly the missing events, and the per-minute rollup (fed by agent_events inserts) counts each
event once. Within the files, a repeated span is rejected. Each replay is recorded in
``replay_audit``; every rejected line goes to ``dead_letters`` (source ``replay:<file>``, offset =
line number) with its reason.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
from clickhouse_connect.driver.client import Client

from metrics_platform import contract, kafka_clients, kafka_lag
from metrics_platform.settings import Settings


@dataclass(frozen=True)
class Reject:
    file: str
    line: int
    reason: str
    raw: str


@dataclass
class ReplayReport:
    """What one day's replay read, skipped, rejected and produced."""

    day: date
    files: list[str] = field(default_factory=list)
    lines: int = 0
    valid: int = 0
    already_stored: int = 0
    produced: int = 0
    rejects: list[Reject] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.rejects)


def history_files(history_dir: Path, day: date) -> list[Path]:
    """The day's files that exist, plain before gzip."""
    names = (f"{day.isoformat()}.jsonl", f"{day.isoformat()}.jsonl.gz")
    return [history_dir / name for name in names if (history_dir / name).is_file()]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line.rstrip(b"\r\n")


def _check(raw: bytes, start: datetime, end: datetime, accepted: tuple[datetime, datetime]) -> tuple[dict | None, str]:
    """The record and "" when the line is a valid event of [start, end), else None and why."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    reason = contract.validate(record, accepted)
    if reason is not None:
        return None, reason
    if not start <= contract.event_time(record) < end:
        return None, f"ts {record['ts']} is outside {start.date().isoformat()} (UTC), the day this file holds"
    return record, ""


def read_day(
    files: list[Path], day: date, report: ReplayReport, accepted: tuple[datetime, datetime]
) -> dict[tuple[str, str], dict]:
    """Valid events of ``day`` keyed by (trace_id, span_id); rejects are added to ``report``.

    ``accepted`` is the window of times ClickHouse stores (contract.accepted_window).
    """
    events: dict[tuple[str, str], dict] = {}
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    for path in files:
        report.files.append(path.name)
        try:
            for number, raw in _lines(path):
                if not raw.strip():
                    continue
                report.lines += 1
                record, reason = _check(raw, start, end, accepted)
                if record is not None:
                    key = (record["trace_id"].lower(), record["span_id"].lower())
                    if key not in events:
                        events[key] = record
                        continue
                    reason = f"span {key[1]} of trace {key[0]} appears twice in the history"
                report.rejects.append(Reject(path.name, number, reason, raw.decode(errors="replace")))
        except (OSError, EOFError) as exc:  # a truncated gzip, a vanished file
            raise RuntimeError(f"reading history file {path} failed after line {report.lines}: {exc}") from exc
    report.valid = len(events)
    return events


def stored_keys(ch: Client, day: date) -> set[tuple[str, str]]:
    """(trace_id, span_id) of every event already stored for ``day``, final or still settling in the inbox."""
    result = ch.query(
        "SELECT trace_id, span_id FROM agent_events WHERE toDate(ts) = {d:Date} "
        "UNION DISTINCT SELECT trace_id, span_id FROM span_inbox WHERE toDate(ts) = {d:Date}",
        parameters={"d": day},
    )
    return {(t, s) for t, s in result.result_rows}


def wait_for_consumer(settings: Settings, timeout_s: float) -> None:
    """Block until ClickHouse has consumed everything on the events topic (bounded)."""
    group = f"{settings.kafka.consumer_group_prefix}_agent_events"
    deadline = time.monotonic() + timeout_s
    while (lag := kafka_lag.total_lag(settings.kafka, group, settings.kafka.events_topic)) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"ClickHouse consumer group {group} still lags {lag} message(s) on {settings.kafka.events_topic} "
                f"after {timeout_s:.0f}s: replaying now could double-count; is ClickHouse ingesting?"
            )
        time.sleep(1)
    # Consumed is not yet flushed: the Kafka engine commits after writing, so one flush interval more.
    time.sleep(settings.kafka_flush_interval_ms / 1000 + 0.5)


def replay_day(
    day: date,
    history_dir: Path,
    settings: Settings,
    ch: Client,
    run_id: str = "",
    progress: Callable[[int, int], None] | None = None,
    lag_timeout_s: float = 300.0,
) -> ReplayReport:
    """Replay one day's history into the events topic; see the module docstring."""
    report = ReplayReport(day)
    files = history_files(history_dir, day)
    if not files:
        return report
    accepted = contract.accepted_window(settings.retention_days, settings.ingest.max_future_s)
    events = read_day(files, day, report, accepted)
    _keep_rejects(ch, report.rejects)
    wait_for_consumer(settings, lag_timeout_s)
    already = stored_keys(ch, day)
    pending = [record for key, record in events.items() if key not in already]
    report.already_stored = len(events) - len(pending)
    report.produced = _produce(settings, pending, progress)
    ch.insert(
        "replay_audit",
        [
            [
                day,
                run_id,
                report.files,
                report.lines,
                report.valid,
                report.rejected,
                report.already_stored,
                report.produced,
            ]
        ],
        ["day", "run_id", "files", "lines", "valid", "rejected", "already_stored", "produced"],
    )
    return report


def _keep_rejects(ch: Client, rejects: list[Reject]) -> None:
    """Store rejects as dead letters, once: a re-run does not repeat lines already kept."""
    if not rejects:
        return
    sources = sorted({f"replay:{r.file}" for r in rejects})
    kept = set(
        ch.query(
            "SELECT source_topic, offset FROM dead_letters WHERE source_topic IN {s:Array(String)}",
            parameters={"s": sources},
        ).result_rows
    )
    new = [r for r in rejects if (f"replay:{r.file}", r.line) not in kept]
    if new:
        ch.insert(
            "dead_letters_incoming",
            [[f"replay:{r.file}", 0, r.line, r.reason, r.raw] for r in new],
            ["source_topic", "partition", "offset", "error", "payload"],
        )


def _produce(settings: Settings, records: list[dict], progress: Callable[[int, int], None] | None) -> int:
    producer = kafka_clients.producer(settings.kafka)
    topic = settings.kafka.events_topic
    failures: list[str] = []
    delivered = 0

    def on_delivery(err, msg) -> None:
        nonlocal delivered
        if err is not None:
            failures.append(f"partition {msg.partition()}: {err}")
        else:
            delivered += 1

    for index, record in enumerate(records, start=1):
        while True:
            try:
                producer.produce(topic, orjson.dumps(record), key=record["trace_id"], on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let it drain
                producer.poll(0.5)
        if index % 10_000 == 0:
            producer.poll(0)
            if progress:
                progress(index, len(records))
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(
            f"replay to {topic}: {remaining} message(s) not delivered, {len(failures)} failed "
            f"(first: {failures[:3]}); re-running the replay is safe"
        )
    if progress:
        progress(len(records), len(records))
    return delivered
