"""Kafka messages that left no row: a dead letter for each offset ClickHouse consumed but stored nowhere.

ClickHouse's Kafka engine (RawBLOB) reads a zero-byte message and yields no row, so no view sees it; its
offset is committed all the same. Every offset below a consumer group's committed offset was inserted
before the commit (the engine commits after the insert), so an offset found neither in ``span_inbox``
(accepted: both topics land there) nor in ``dead_letters`` (rejected) is a message that carried nothing.
A periodic check (the ``empty_messages_sensor``) turns each such offset into one dead letter.

The decisions (which ranges to look at, which offsets are missing, the cursor) are pure functions over
plain data; ``check`` gathers the inputs, applies them and writes the result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from metrics_platform import kafka_lag
from metrics_platform.settings import KafkaSettings

REASON = "empty Kafka message (0 bytes or no spans): nothing to store"
# Offsets examined per partition and check: a first check or a long pause catches up over several ticks.
MAX_OFFSETS_PER_CHECK = 100_000
# A cursor older than span_inbox's retention less this margin may point below what the inbox still
# holds: its range is no longer verified (an accepted message there may have expired, not been empty).
RETENTION_MARGIN_S = 3600
# The cheap first pass looks at rows stored since the previous check less this margin; what it finds
# missing is confirmed over the whole table before anything is written.
RECENT_MARGIN_S = 900

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class Cursor:
    """Where the previous check stopped: the next offset to examine per topic partition, and when."""

    at: float  # epoch seconds of the check that wrote it
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps({"at": self.at, "next": {f"{t}|{p}": o for (t, p), o in sorted(self.next_offsets.items())}})

    @staticmethod
    def decode(text: str | None) -> Cursor | None:
        """The cursor a sensor stored, or None for none (or one this code cannot read, treated as none)."""
        if not text:
            return None
        try:
            raw = json.loads(text)
            offsets = {(key.rsplit("|", 1)[0], int(key.rsplit("|", 1)[1])): int(o) for key, o in raw["next"].items()}
            return Cursor(at=float(raw["at"]), next_offsets=offsets)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None


def ranges_to_check(
    committed: Mapping[TopicPartition, int],
    cursor: Cursor | None,
    oldest_held: Mapping[TopicPartition, int],
    now: float,
    verifiable_s: float,
    max_offsets: int = MAX_OFFSETS_PER_CHECK,
) -> dict[TopicPartition, range]:
    """The offsets to examine per partition: from the cursor up to the committed offset (at most ``max_offsets``).

    ``committed``: the consumer group's committed offset per partition (-1: never committed).
    ``oldest_held``: per partition, the lowest offset whose rows are known to be still stored (see
    ``oldest_held_offsets``; needed only where the cursor is missing). Without a usable cursor (first check,
    a new partition, offsets that went back because the topic was recreated, or a cursor older than
    ``verifiable_s``) a partition starts there, or at its committed offset when nothing is held: anything
    below can no longer be verified and is never recorded. Partitions that did not move get no range.
    """
    fresh = cursor is not None and now - cursor.at <= verifiable_s
    ranges: dict[TopicPartition, range] = {}
    for tp, end in committed.items():
        if end < 0:
            continue
        start = cursor.next_offsets.get(tp) if fresh and cursor is not None else None
        if start is None or start > end:
            start = min(oldest_held.get(tp, end), end)
        if start < end:
            ranges[tp] = range(start, min(end, start + max_offsets))
    return ranges


def missing_offsets(window: range, present: Iterable[int]) -> list[int]:
    """Offsets of ``window`` that no stored row carries, ascending."""
    held = set(present)
    return [offset for offset in window if offset not in held]


def next_cursor(committed: Mapping[TopicPartition, int], ranges: Mapping[TopicPartition, range], now: float) -> Cursor:
    """The cursor after a check: the end of each examined range, else the committed offset."""
    offsets = {tp: (ranges[tp].stop if tp in ranges else end) for tp, end in committed.items() if end >= 0}
    return Cursor(at=now, next_offsets=offsets)


# --- gathering and acting ------------------------------------------------------------------------


def committed_offsets(settings: KafkaSettings, timeout_s: float = 10.0) -> dict[TopicPartition, int]:
    """The committed offset of ClickHouse's consumer group on every partition of the topic it reads."""
    found: dict[TopicPartition, int] = {}
    for group, topic in kafka_lag.clickhouse_groups(settings).items():
        for part in kafka_lag.group_lag(settings, group, topic, timeout_s):
            found[(part.topic, part.partition)] = part.committed
    return found


def oldest_held_offsets(
    reader: Client, partitions: Iterable[TopicPartition], verifiable_s: float
) -> dict[TopicPartition, int]:
    """The lowest offset per partition above which every consumed message still has its rows: the oldest
    in span_inbox, or in dead_letters stored within ``verifiable_s`` (a message consumed after that one was
    stored later, so its accepted rows, if any, have not expired from the inbox yet)."""
    wanted = set(partitions)
    if not wanted:
        return {}
    rows = reader.query(
        """
        SELECT t, p, min(o) FROM (
            SELECT source_topic AS t, source_partition AS p, source_offset AS o FROM span_inbox
            WHERE source_topic IN {topics:Array(String)}
            UNION ALL
            SELECT source_topic AS t, partition AS p, offset AS o FROM dead_letters
            WHERE source_topic IN {topics:Array(String)} AND error != {reason:String}
              AND received_at >= now64(3) - toIntervalSecond({window:UInt64})
        ) GROUP BY t, p
        """,
        parameters={"topics": sorted({t for t, _ in wanted}), "reason": REASON, "window": int(verifiable_s)},
    ).result_rows
    return {(t, int(p)): int(o) for t, p, o in rows if (t, int(p)) in wanted}


def _held(reader: Client, ranges: Mapping[TopicPartition, range], since: float | None) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every row in span_inbox or dead_letters within ``ranges``; with ``since``,
    only rows stored after that time (a cheap pass: the tables are not ordered by offset)."""
    if not ranges:
        return set()
    conditions, parameters = [], {}
    for i, ((topic, partition), window) in enumerate(sorted(ranges.items())):
        conditions.append(
            f"(t = {{t{i}:String}} AND p = {{p{i}:UInt32}} AND o >= {{lo{i}:UInt64}} AND o < {{hi{i}:UInt64}})"
        )
        parameters |= {f"t{i}": topic, f"p{i}": partition, f"lo{i}": window.start, f"hi{i}": window.stop}
    where = " OR ".join(conditions)
    recent_inbox = recent_dead = ""
    if since is not None:
        parameters["since"] = int(since)
        recent_inbox = "AND ingested_at >= toDateTime({since:UInt64})"
        recent_dead = "AND received_at >= toDateTime({since:UInt64})"
    topics = sorted({t for t, _ in ranges})
    parameters["topics"] = topics
    sql = f"""
        SELECT DISTINCT t, p, o FROM (
            SELECT source_topic AS t, source_partition AS p, source_offset AS o FROM span_inbox
            WHERE source_topic IN {{topics:Array(String)}} {recent_inbox}
            UNION ALL
            SELECT source_topic AS t, partition AS p, offset AS o FROM dead_letters
            WHERE source_topic IN {{topics:Array(String)}} {recent_dead}
        ) WHERE {where}
    """
    return {(t, int(p), int(o)) for t, p, o in reader.query(sql, parameters=parameters).result_rows}


def find_missing(
    reader: Client, ranges: Mapping[TopicPartition, range], since: float | None
) -> dict[TopicPartition, list[int]]:
    """Offsets of ``ranges`` with no row in span_inbox or dead_letters: a pass over recent rows, then the
    candidates it leaves confirmed over the whole of both tables."""

    def missing(held: set[tuple[str, int, int]], windows: Mapping[TopicPartition, range]) -> dict:
        found = {}
        for (topic, partition), window in windows.items():
            gaps = missing_offsets(window, (o for t, p, o in held if t == topic and p == partition))
            if gaps:
                found[(topic, partition)] = gaps
        return found

    candidates = missing(_held(reader, ranges, since), ranges)
    if since is None or not candidates:
        return candidates
    narrowed = {tp: range(gaps[0], gaps[-1] + 1) for tp, gaps in candidates.items()}
    confirmed = missing(_held(reader, narrowed, None), narrowed)
    return {tp: sorted(set(gaps) & set(candidates[tp])) for tp, gaps in confirmed.items()}


def record(writer: Client, missing: Mapping[TopicPartition, list[int]]) -> int:
    """One dead letter per offset, with an empty payload; returns how many were written.

    The broker timestamp is left at its default, 1970 (unknown): the dead-letter ledger (sql/0010) skips a
    redelivered message only when it is not newer than the newest stored one, and these rows must not move
    that mark.
    """
    rows = [[topic, partition, offset, REASON, ""] for (topic, partition), offsets in missing.items()
            for offset in offsets]  # fmt: skip
    if rows:
        writer.insert("dead_letters", rows, column_names=["source_topic", "partition", "offset", "error", "payload"])
    return len(rows)


@dataclass(frozen=True)
class CheckResult:
    recorded: dict[TopicPartition, list[int]]
    examined: int  # offsets looked at
    cursor: Cursor

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.recorded.values())


def check(
    kafka: KafkaSettings,
    reader: Client,
    writer: Client,
    cursor: Cursor | None,
    inbox_retention_hours: int,
    now: float | None = None,
) -> CheckResult:
    """Record the offsets consumed since ``cursor`` that left no row; returns them and the next cursor.

    Idempotent: an offset already in dead_letters counts as held, so running the same range twice (a lost
    cursor) writes nothing more. ``reader`` sees every shard's rows (clickhouse.reader on a cluster).
    """
    now = time.time() if now is None else now
    committed = committed_offsets(kafka)
    verifiable_s = inbox_retention_hours * 3600 - RETENTION_MARGIN_S
    usable = cursor is not None and now - cursor.at <= verifiable_s
    need_floor = [tp for tp in committed if not usable or cursor is None or tp not in cursor.next_offsets
                  or cursor.next_offsets[tp] > committed[tp]]  # fmt: skip
    oldest = oldest_held_offsets(reader, need_floor, verifiable_s)
    ranges = ranges_to_check(committed, cursor, oldest, now, verifiable_s)
    since = cursor.at - RECENT_MARGIN_S if usable and cursor is not None else None
    missing = find_missing(reader, ranges, since)
    record(writer, missing)
    examined = sum(len(r) for r in ranges.values())
    return CheckResult(recorded=missing, examined=examined, cursor=next_cursor(committed, ranges, now))
