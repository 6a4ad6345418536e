"""Bad input straight to Kafka: every bad message must end in dead_letters, every good one in agent_events.

Starts its own stack (Kafka, embedded ClickHouse, the Collector; no Dagster, no Superset) on its own
port base and state directory (loopback only, wiped at every run), then produces to both topics,
bypassing the Collector as a misbehaving producer would: ``--bad`` bad messages of every kind below
(both paths where the kind exists on both: OTLP JSON to the spans topic, flat JSON to the events
topic), interleaved with ``--good`` good ones. It then prints, per kind and topic: sent, in
dead_letters at the message's (partition, offset), with the expected reason, stored in agent_events
(must be 0), and coverage; then good messages stored, and the time until both consumer groups have
lag 0 after the last message was produced.

Zero-byte messages are produced too. ClickHouse's Kafka engine reads an empty message (it is counted
in system.kafka_consumers.num_messages_read, which the bench prints next to the messages in Kafka) but
yields no row for it, so no materialized view sees it: its offset is consumed and committed with no row
in span_inbox or dead_letters. The bench then runs the check of the empty_messages_sensor once (a first
check: no cursor), which writes one dead letter per such offset (metrics_platform/empty_messages.py), and
reports how many zero-byte messages have one with that reason.

Oversized messages (above the topic's max.message.bytes) are refused by the broker at produce time
(MSG_SIZE_TOO_LARGE): counted as refused, never in Kafka, so never in ClickHouse.

    .venv/bin/python bench/fuzz.py                 # 12,000 bad, 2,000 good, ~40 s on a fresh stack
    .venv/bin/python bench/fuzz.py --bad 600 --good 200
"""

from __future__ import annotations

import argparse
import math
import os
import random
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from metrics_platform import clickhouse, empty_messages, kafka_clients, kafka_lag
from metrics_platform.settings import Settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import bench_stack  # noqa: E402  (a sibling script, not a package)

Payload = bytes


# --- good and bad messages -----------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _attr(key: str, value: object) -> dict:
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)).endswith("Value"):
        return {"key": key, "value": value}  # already an OTLP AnyValue
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def otlp(service: object, attrs: dict[str, object] | None = None, start_ns: int | None = None,
         end_ns: int | None = None) -> tuple[dict, str]:  # fmt: skip
    """One OTLP JSON message with one LLM span; its span id. ``service`` may be an AnyValue dict."""
    start = time.time_ns() - 5_000_000_000 if start_ns is None else start_ns
    end = start + 250_000_000 if end_ns is None else end_ns
    span_id = secrets.token_hex(8)
    span_attrs = {"gen_ai.request.model": "gpt-4.1", "gen_ai.usage.input_tokens": 40,
                  "gen_ai.usage.output_tokens": 10, **(attrs or {})}  # fmt: skip
    message = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", service)]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": secrets.token_hex(16),
                                "spanId": span_id,
                                "name": "chat gpt-4.1",
                                "kind": 3,
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": str(end),
                                "attributes": [_attr(k, v) for k, v in span_attrs.items()],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    return message, span_id


def flat(service: object, **fields: object) -> tuple[dict, str]:
    """One flat-contract event; its span id. Keyword arguments override fields."""
    event: dict[str, object] = {
        "ts": _iso(datetime.now(UTC) - timedelta(seconds=5)),
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "service": service,
        "env": "fuzz",
        "model": "gpt-4.1",
        "provider": "openai",
        "status": "ok",
        "latency_ms": 250,
        "tokens_prompt": 40,
        "tokens_completion": 10,
        "cost_usd": 0.001,
    }
    event.update(fields)
    return event, str(event["span_id"])


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


@dataclass(frozen=True)
class Kind:
    """One kind of bad message on one path: how to make one, and the reason dead_letters must give."""

    name: str
    topic: str  # "spans" | "events"
    make: Callable[[str], Payload]
    reason: str  # a prefix of dead_letters.error, or a substring after "~"

    def matches(self, error: str) -> bool:
        return self.reason[1:] in error if self.reason.startswith("~") else error.startswith(self.reason)


def _o(service: object, **kw: object) -> Payload:
    return orjson.dumps(otlp(service, **kw)[0])


def _f(service: object, **kw: object) -> Payload:
    return orjson.dumps(flat(service, **kw)[0])


def kinds(now: datetime) -> list[Kind]:
    """Every kind of bad input of issue 8, on both paths where it exists on both."""
    old, far = now - timedelta(days=100), now + timedelta(days=2)
    kinds: list[Kind] = []
    # Timestamps outside the window: older than retention, 1970, 1 ns, in 2099/3000, years 1900/0001.
    for label, moment in (("100 days ago", old), ("1970", datetime(1970, 1, 2, tzinfo=UTC)),
                          ("in 2 days", far), ("2099", datetime(2099, 1, 1, tzinfo=UTC))):  # fmt: skip
        kinds.append(Kind(f"timestamp {label}", "spans", lambda s, m=moment: _o(s, start_ns=_ns(m)), "~span start "))
        kinds.append(Kind(f"timestamp {label}", "events", lambda s, m=moment: _f(s, ts=_iso(m)), "~ts "))
    kinds += [
        Kind("timestamp 1 ns", "spans", lambda s: _o(s, start_ns=1, end_ns=2), "~is older than the retention"),
        Kind("timestamp 0", "spans", lambda s: _o(s, start_ns=0, end_ns=1), "span has no startTimeUnixNano"),
        Kind("timestamp 3000", "events", lambda s: _f(s, ts="3000-01-01T00:00:00Z"), "~ts "),
        Kind("timestamp 1900", "events", lambda s: _f(s, ts="1900-01-01T00:00:00Z"), "~ts "),
        Kind("timestamp 0001", "events", lambda s: _f(s, ts="0001-01-01T00:00:00Z"), "~ts "),
        Kind("timestamp epoch ms 0", "events", lambda s: _f(s, ts=0), "~ts "),
        # Numbers out of range, not finite.
        Kind(
            "tokens 4294967296",
            "spans",
            lambda s: _o(s, attrs={"gen_ai.usage.input_tokens": 4294967296}),
            "token count tokens_prompt",
        ),
        Kind("tokens 4294967296", "events", lambda s: _f(s, tokens_prompt=4294967296), "tokens_prompt must be"),
        Kind(
            "tokens 1e300",
            "spans",
            lambda s: _o(s, attrs={"gen_ai.usage.output_tokens": 1e300}),
            "token count tokens_completion",
        ),
        Kind("tokens 1e300", "events", lambda s: _f(s, tokens_completion=1e300), "tokens_completion must be"),
        Kind("tokens 2.5", "events", lambda s: _f(s, tokens_reasoning=2.5), "tokens_reasoning must be"),
        Kind(
            "tokens NaN",
            "spans",
            lambda s: _o(s, attrs={"gen_ai.usage.input_tokens": {"doubleValue": "NaN"}}),
            "token count tokens_prompt",
        ),
        Kind(
            "cost Infinity",
            "spans",
            lambda s: _o(s, attrs={"gen_ai.usage.cost": {"doubleValue": "Infinity"}}),
            "cost is not a number",
        ),
        Kind("cost 1e300", "events", lambda s: _f(s, cost_usd=1e300), "cost_usd must be below"),
        Kind("cost 1e9", "spans", lambda s: _o(s, attrs={"gen_ai.usage.cost": 1e9}), "cost is not a number"),
        Kind("latency 1e12", "events", lambda s: _f(s, latency_ms=1e12), "latency_ms must be at most"),
        Kind(
            "latency > 2^32 ms",
            "spans",
            lambda s: _o(
                s,
                start_ns=time.time_ns() - 5_000_000_000,
                end_ns=time.time_ns() - 5_000_000_000 + 4_300_000_000 * 1_000_000,
            ),
            "span lasts longer",
        ),
        # Negative tokens / cost / latency, both paths.
        Kind(
            "negative tokens",
            "spans",
            lambda s: _o(s, attrs={"gen_ai.usage.input_tokens": -5}),
            "token count tokens_prompt",
        ),
        Kind("negative tokens", "events", lambda s: _f(s, tokens_cache_read=-1), "tokens_cache_read must be"),
        Kind("negative cost", "spans", lambda s: _o(s, attrs={"gen_ai.usage.cost": -1.0}), "cost is not a number"),
        Kind("negative cost", "events", lambda s: _f(s, cost_usd=-0.5), "cost_usd must be a finite"),
        Kind(
            "negative latency",
            "spans",
            lambda s: _o(s, start_ns=time.time_ns() - 5_000_000_000, end_ns=time.time_ns() - 6_000_000_000),
            "span endTimeUnixNano is before",
        ),
        Kind("negative latency", "events", lambda s: _f(s, latency_ms=-5), "latency_ms must be a finite"),
        # Wrong JSON types.
        Kind("service as number", "spans", lambda s: _o({"intValue": "42"}), "attribute service.name must be"),
        Kind("service as number", "events", lambda s: _f(42), "service must be a string"),
        Kind(
            "service as array",
            "spans",
            lambda s: _o({"arrayValue": {"values": [{"stringValue": s}]}}),
            "attribute service.name must be",
        ),
        Kind("service as array", "events", lambda s: _f([s, s]), "service must be a string"),
        Kind(
            "model as object",
            "spans",
            lambda s: _o(s, attrs={"gen_ai.request.model": {"kvlistValue": {"values": []}}}),
            "attribute gen_ai.request.model must be",
        ),
        Kind("env as object", "events", lambda s: _f(s, env={"name": "prod"}), "env must be a string"),
        Kind(
            "tokens as text",
            "spans",
            lambda s: _o(s, attrs={"gen_ai.usage.input_tokens": "many"}),
            "token count tokens_prompt",
        ),
        Kind("tokens as text", "events", lambda s: _f(s, tokens_prompt="many"), "tokens_prompt must be"),
        Kind("attrs as array", "events", lambda s: _f(s, attrs=["a", "b"]), "attrs must be a JSON object"),
        # Raw PII keys nested in attrs (on the OTLP path a top-level identity key is the Collector's to hash;
        # straight to Kafka the mapping drops it, so only nested ones are bad messages there).
        Kind(
            "PII nested in attrs",
            "events",
            lambda s: _f(s, attrs={"request": {"user": {"email": "jane@example.com"}}}),
            "raw user identifiers",
        ),
        Kind("PII key in attrs", "events", lambda s: _f(s, attrs={"enduser.id": "u-1"}), "raw user identifiers"),
        Kind("PII key top level", "events", lambda s: _f(s, user_email="jane@example.com"), "raw user identifiers"),
        Kind(
            "PII nested in attrs",
            "spans",
            lambda s: _o(s, attrs={"request": {"kvlistValue": {"values": [_attr("user.email", "jane@example.com")]}}}),
            "raw user identifiers",
        ),  # fmt: skip
    ]
    # Framing: invalid UTF-8, not JSON, not a JSON object / no spans: both topics.
    for topic in ("spans", "events"):
        kinds += [
            Kind(
                "invalid UTF-8",
                topic,
                lambda s: b'{"service": "\xff\xfe' + s.encode() + b'"}',
                "payload is not valid UTF-8",
            ),
            Kind(
                "not JSON",
                topic,
                lambda s: b"{broken " + s.encode(),
                "payload is not valid JSON" if topic == "spans" else "payload is not a JSON object",
            ),
            Kind(
                "JSON not an object",
                topic,
                lambda s: orjson.dumps([s]),
                "no spans in payload" if topic == "spans" else "payload is not a JSON object",
            ),
        ]
    return kinds


# --- producing -----------------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str  # "" for a good message
    topic: str
    partition: int = -1
    offset: int = -1
    error: str = ""


def produce_all(settings: Settings, messages: list[tuple[str, str, Payload]]) -> list[Sent]:
    """Produce (kind, topic, payload) in order; (partition, offset) or the producer's error per message."""
    producer = kafka_clients.producer(settings.kafka, **{"message.max.bytes": 64 * 1024 * 1024})
    sent = [Sent(kind, topic) for kind, topic, _ in messages]

    def callback(record: Sent) -> Callable[[object, object], None]:
        def done(err, msg) -> None:
            if err is not None:
                record.error = str(err.name() if hasattr(err, "name") else err)
            else:
                record.partition, record.offset = msg.partition(), msg.offset()

        return done

    for record, (_, topic, payload) in zip(sent, messages, strict=True):
        name = settings.kafka.spans_topic if topic == "spans" else settings.kafka.events_topic
        while True:
            try:
                producer.produce(name, payload, on_delivery=callback(record))
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("messages not delivered to Kafka within 60 s")
    return sent


def wait_lag_zero(settings: Settings, timeout_s: float) -> float | None:
    """Seconds until both ClickHouse consumer groups have lag 0 (None: not within ``timeout_s``)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        try:
            groups = kafka_lag.clickhouse_groups(settings.kafka)
            if all(kafka_lag.total_lag(settings.kafka, g, t) == 0 for g, t in groups.items()):
                return time.monotonic() - began
        except Exception:  # a group not yet known to the broker
            pass
        time.sleep(0.25)
    return None


# --- output --------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=35000, help="port base of the bench stack")
    parser.add_argument("--bad", type=int, default=12000, help="bad messages (spread over every kind)")
    parser.add_argument("--good", type=int, default=2000, help="good messages (half per topic)")
    parser.add_argument("--empty", type=int, default=50, help="zero-byte messages per topic")
    parser.add_argument("--oversized", type=int, default=2, help="messages above max.message.bytes per topic")
    args = parser.parse_args()

    def report(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    run = uuid.uuid4().hex[:6]
    good_service = f"fuzz-{run}-good"
    all_kinds = kinds(datetime.now(UTC))
    per_kind = math.ceil(args.bad / len(all_kinds))
    rng = random.Random(8)
    load = os.getloadavg()
    report(f"load average before: {load[0]:.2f} on {os.cpu_count()} cores; {len(all_kinds)} kinds x {per_kind}")
    extra = {"METRICS_PLATFORM_ATTRIBUTION_DELAY_SECONDS": "2", "METRICS_PLATFORM_FINALIZER_INTERVAL_SECONDS": "1"}
    with bench_stack("bench-fuzz", args.base, report, extra) as settings:
        messages: list[tuple[str, str, Payload]] = []
        good_ids: set[str] = set()
        for n in range(args.good):
            builder = otlp if n % 2 else flat
            body, sid = builder(good_service)
            good_ids.add(sid)
            messages.append(("", "spans" if n % 2 else "events", orjson.dumps(body)))
        for kind in all_kinds:
            # Each bad message has its own service, so one stored as if valid is found by name.
            messages += [
                (f"{kind.name}|{kind.topic}", kind.topic, kind.make(f"fuzz-{run}-bad")) for _ in range(per_kind)
            ]
        for topic in ("spans", "events"):
            messages += [("zero-byte", topic, b"")] * args.empty
            big = settings.kafka.max_message_bytes + 1024
            messages += [("oversized", topic, b'{"x": "' + b"a" * big + b'"}')] * args.oversized
        rng.shuffle(messages)
        report(f"producing {len(messages):,} messages straight to Kafka")
        began = time.monotonic()
        sent = produce_all(settings, messages)
        produced_s = time.monotonic() - began
        lag_s = wait_lag_zero(settings, 30.0)
        report(f"produced in {produced_s:.1f} s; lag 0 after {lag_s if lag_s is None else round(lag_s, 1)} s")
        ch = clickhouse.client(settings.clickhouse)
        topic_names = {"spans": settings.kafka.spans_topic, "events": settings.kafka.events_topic}
        # Good messages: final after the attribution delay.
        deadline = time.monotonic() + 120
        stored: set[str] = set()
        while time.monotonic() < deadline:
            stored = {r[0] for r in ch.query("SELECT span_id FROM agent_events WHERE service = {s:String}",
                                             parameters={"s": good_service}).result_rows}  # fmt: skip
            if stored >= good_ids:
                break
            time.sleep(1.0)
        time.sleep(3)  # the last dead letters are in the same insert blocks; give the views a moment
        # What the empty_messages_sensor does at its next tick (its first here: no cursor yet).
        began = time.monotonic()
        empty_check = empty_messages.check(settings.kafka, ch, ch, None, settings.ingest.inbox_retention_hours)
        report(
            f"empty-message check: {empty_check.count} dead letters written, {empty_check.examined:,} offsets "
            f"examined in {time.monotonic() - began:.2f} s"
        )
        letters: dict[tuple[str, int, int], list[str]] = {}
        for topic, partition, offset, error in ch.query(
            "SELECT source_topic, partition, offset, error FROM dead_letters"
        ).result_rows:
            letters.setdefault((topic, partition, offset), []).append(error)
        bad_stored = int(ch.command("SELECT count() FROM agent_events WHERE service LIKE {s:String}",
                                    parameters={"s": f"%fuzz-{run}-bad%"}))  # fmt: skip
        inbox = {
            (t, p, o)
            for t, p, o in ch.query("SELECT source_topic, source_partition, source_offset FROM span_inbox").result_rows
        }
        rows: list[list[str]] = []
        total_sent = total_covered = 0
        for kind in all_kinds:
            records = [s for s in sent if s.kind == f"{kind.name}|{kind.topic}"]
            found = [letters.get((topic_names[kind.topic], s.partition, s.offset), []) for s in records]
            right = sum(1 for errors in found if any(kind.matches(e) for e in errors))
            anywhere = sum(1 for errors in found if errors)
            total_sent += len(records)
            total_covered += right
            sample = next((e[0] for e in found if e and not any(kind.matches(x) for x in e)), "")
            rows.append([kind.name, kind.topic, f"{len(records):,}", f"{anywhere:,}", f"{right:,}",
                         f"{100 * right / max(len(records), 1):.1f} %", sample[:60]])  # fmt: skip
        print(f"### Fuzz: {total_sent:,} bad messages of {len(all_kinds)} kinds among {args.good:,} good ones\n")
        print(table(["kind", "path", "sent", "in dead_letters", "with the expected reason", "coverage",
                     "other reason seen"], rows))  # fmt: skip
        print()
        for label in ("zero-byte", "oversized"):
            for topic in ("spans", "events"):
                records = [s for s in sent if s.kind == label and s.topic == topic]
                refused = sum(1 for s in records if s.error)
                in_kafka = [s for s in records if not s.error]
                key = topic_names[topic]
                dead = sum(1 for s in in_kafka if (key, s.partition, s.offset) in letters)
                as_empty = sum(
                    1 for s in in_kafka if empty_messages.REASON in letters.get((key, s.partition, s.offset), [])
                )
                stored_here = sum(1 for s in in_kafka if (key, s.partition, s.offset) in inbox)
                errors = sorted({s.error for s in records if s.error})
                print(
                    f"- {label} on the {topic} topic: {len(records)} sent, {refused} refused by Kafka {errors or ''}, "
                    f"{len(in_kafka)} in Kafka, {dead} in dead_letters ({as_empty} as empty messages), "
                    f"{stored_here} in span_inbox"
                )
        print(
            f"\nCoverage: {total_covered:,} / {total_sent:,} bad messages in dead_letters with the expected reason "
            f"({100 * total_covered / max(total_sent, 1):.2f} %); bad messages stored in agent_events: {bad_stored}.\n"
            f"Good messages stored: {len(stored & good_ids):,} / {len(good_ids):,}. "
            f"Produced {len(messages):,} messages in {produced_s:.1f} s; both consumer groups at lag 0 "
            f"{'after ' + format(lag_s, '.1f') + ' s' if lag_s is not None else 'NOT within 30 s'} after the last "
            f"message was acknowledged. Load average before: {load[0]:.2f} on {os.cpu_count()} cores."
        )
        # The Kafka engine's own counter, against the messages that reached Kafka: does it count empty ones?
        read = dict(
            ch.query("SELECT table, sum(num_messages_read) FROM system.kafka_consumers GROUP BY table").result_rows
        )
        for table_name, topic in (("kafka_otel_spans", "spans"), ("kafka_agent_events", "events")):
            in_kafka = [s for s in sent if s.topic == topic and not s.error]
            empty = sum(1 for s in in_kafka if s.kind == "zero-byte")
            print(
                f"- {table_name}: system.kafka_consumers.num_messages_read {int(read.get(table_name, 0)):,}; "
                f"messages in Kafka {len(in_kafka):,}, of which zero-byte {empty}"
            )
        ch.close()


if __name__ == "__main__":
    main()
