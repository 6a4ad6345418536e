"""Crash faults under load: kill -9 each component repeatedly, count what was lost or duplicated.

Starts its own stack (Kafka, embedded ClickHouse, the Collector; no Dagster, no Superset) on its
own port base and state directory (loopback only, wiped at every run), sends 2,500 spans/s through
the Collector over OTLP/HTTP and records every span id the Collector acknowledged with a 200. Then,
for each fault in turn (the Collector 3x, ClickHouse 3x, the Kafka broker 2x by default), it kills
the component's process with SIGKILL while the load runs, waits until supervisord has started it
again by itself and it answers its health check (no operator), sends load for a while, and kills
it again. After the last kill of a fault the load stops; once every accepted span is final and
the pipeline is drained (consumer lag 0, every inbox block finalized), it counts, per kill:

- accepted: span ids answered with 200; stored: distinct ones in agent_events; lost: accepted and
  not stored; stored, never acknowledged: a request in flight at the kill that the Collector had
  taken (not a loss, not a duplicate);
- duplicated in raw: agent_events rows beyond one per span id; copies delivered again into
  span_inbox (what the finalizer had to drop: the Kafka engine's at-least-once delivery at work);
- per rollup (every projection in metrics_platform.rollups.ROLLUPS): spans counted by the rollup,
  read from the projection, against the distinct spans in raw (duplicated / missing), and the rollup
  audit (metrics_platform.rollup_audit.audit) over the fault's buckets;
- down: kill -> the supervisor's new process answers its health check; recovery: kill -> every span
  accepted until the component was back is final (attributed, in agent_events). Recovery includes the
  attribution delay every span waits (30 s by default), printed with a baseline measured before the
  first kill.

Each kill has its own service name (and users), so every figure is per kill without guessing which
window a span belongs to. One table per fault, then a summary. Default run: about 6-7 minutes.

    .venv/bin/python bench/faults.py
    .venv/bin/python bench/faults.py --faults clickhouse --kills 2 --rate 2000
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from clickhouse_connect.driver.client import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from stacks import environment, fresh_state, stack_env  # a sibling module, not a package

from metrics_platform import clickhouse, kafka_clients, kafka_lag
from metrics_platform.rollup_audit import audit
from metrics_platform.rollups import ROLLUPS, Rollup
from metrics_platform.settings import Settings
from metrics_platform.stack import clickhouse_embedded, collector, kafka_broker, platform
from metrics_platform.stack.process import Daemon

ROOT = Path(__file__).resolve().parent.parent
TRACES_PER_REQUEST, SPANS_PER_TRACE = 20, 5
USERS_PER_SERVICE = 10
Report = Callable[[str], None]
T = TypeVar("T")


# --- the bench's own stack -----------------------------------------------------------------------


@contextlib.contextmanager
def bench_stack(name: str, base: int, report: Report, extra_env: Mapping[str, str] | None = None) -> Iterator[Settings]:
    """Kafka, embedded ClickHouse and the Collector on ports ``base``+ with state in
    ``.state/<name>-<base>``, from nothing; stopped on exit."""
    state = ROOT / ".state" / f"{name}-{base}"
    env = {**stack_env(base, state), **(extra_env or {})}
    with environment(env):
        settings = Settings.from_env()
        platform.down(settings, report=lambda _: None)  # leftovers of an interrupted run
        fresh_state(state)
        report(f"starting Kafka, ClickHouse and the Collector (ports {base}+, state {state})")
        try:
            platform.up(settings, report=lambda _: None, with_dagster=False, with_superset=False)
            yield settings
        finally:
            report("stopping the bench stack")
            platform.down(settings, report=lambda _: None)


# --- load: OTLP/HTTP requests, every acknowledged span id recorded ------------------------------


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def build_request(service: str) -> tuple[bytes, list[str]]:
    """One OTLP request: traces of a request span (route, user) with LLM-call children; its span ids."""
    now = time.time_ns()
    spans: list[Span] = []
    for t in range(TRACES_PER_REQUEST):
        trace_id, root_id = secrets.token_bytes(16), secrets.token_bytes(8)
        route = f"POST /v1/route{t % 4}"
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=root_id,
                name=route,
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now - 900_000_000,
                end_time_unix_nano=now,
                attributes=[_kv("http.route", route), _kv("user_id", f"{service}-user-{t % USERS_PER_SERVICE}")],
            )
        )
        for s in range(SPANS_PER_TRACE - 1):
            spans.append(
                Span(
                    trace_id=trace_id,
                    span_id=secrets.token_bytes(8),
                    parent_span_id=root_id,
                    name="chat gpt-4.1",
                    kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=now - 800_000_000 + s * 1_000_000,
                    end_time_unix_nano=now - 1_000_000,
                    attributes=[
                        _kv("gen_ai.operation.name", "chat"),
                        _kv("gen_ai.request.model", "gpt-4.1"),
                        _kv("gen_ai.provider.name", "openai"),
                        _kv("gen_ai.usage.input_tokens", 400 + s),
                        _kv("gen_ai.usage.output_tokens", 100),
                    ],
                )
            )
    resource = Resource(attributes=[_kv("service.name", service), _kv("deployment.environment", "faults")])
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    ).SerializeToString()
    return body, [s.span_id.hex() for s in spans]


@dataclass
class Accepted:
    """Span ids the Collector answered with 200, with the time of the answer, per service."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: list[tuple[float, str, list[str]]] = field(default_factory=list)
    refused_spans: int = 0

    def add(self, service: str, span_ids: list[str]) -> None:
        with self.lock:
            self.batches.append((time.time(), service, span_ids))

    def ids(self, service: str) -> set[str]:
        with self.lock:
            return {i for _, s, ids in self.batches if s == service for i in ids}

    def until(self, moment: float, services: set[str]) -> set[str]:
        with self.lock:
            return {i for t, s, ids in self.batches if s in services and t <= moment for i in ids}

    def times(self) -> dict[str, float]:
        with self.lock:
            return {i: t for t, _, ids in self.batches for i in ids}


class Load:
    """Sender threads posting OTLP/HTTP protobuf at a fixed rate in total, to the current service."""

    def __init__(self, port: int, rate: float, threads: int = 2) -> None:
        self.port = port
        self.interval = TRACES_PER_REQUEST * SPANS_PER_TRACE * threads / rate  # seconds between requests per thread
        self.service = ""
        self.accepted = Accepted()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self, service: str) -> None:
        self.service = service
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(min(next_at - now, 0.05))
                continue
            # A sender that fell behind (the Collector was down) does not burst to catch up.
            next_at = max(next_at + self.interval, now - self.interval)
            service = self.service
            body, span_ids = build_request(service)
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:  # refused or cut off by the kill: not acknowledged
                ok, connection = False, None
            if ok:
                self.accepted.add(service, span_ids)
            else:
                with self.accepted.lock:
                    self.accepted.refused_spans += len(span_ids)
                time.sleep(0.1)  # back off as an SDK would


# --- faults --------------------------------------------------------------------------------------


def _kafka_answers(settings: Settings) -> bool:
    try:
        return bool(kafka_clients.admin(settings.kafka).list_topics(timeout=2).brokers)
    except Exception:  # confluent-kafka raises KafkaException while the broker starts
        return False


@dataclass(frozen=True)
class Fault:
    name: str
    label: str
    daemon: Callable[[Settings], Daemon]
    healthy: Callable[[Settings], bool]


FAULTS = {
    "collector": Fault("collector", "Collector kill -9", collector.daemon, collector.healthy),
    "clickhouse": Fault("clickhouse", "ClickHouse kill -9", clickhouse_embedded.daemon, clickhouse_embedded.healthy),
    "kafka": Fault("kafka", "Kafka broker kill -9", kafka_broker.daemon, _kafka_answers),
}
DEFAULT_KILLS = {"collector": 3, "clickhouse": 3, "kafka": 2}


@dataclass
class Kill:
    service: str
    killed_at: float = 0.0
    back_at: float = 0.0
    pid: int = 0


def kill_and_wait(settings: Settings, fault: Fault, timeout_s: float = 120.0) -> tuple[float, float, int]:
    """SIGKILL the component; wait for the supervisor's new process to answer. (killed at, back at, old pid)."""
    daemon = fault.daemon(settings)
    pid = daemon.pid()
    if pid is None:
        raise RuntimeError(f"{fault.name} is not running; log {daemon.log_file}:\n{daemon.log_tail()}")
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.pid() not in (None, pid) and fault.healthy(settings):
            return killed_at, time.time(), pid
        time.sleep(0.2)
    raise RuntimeError(
        f"{fault.name} did not come back within {timeout_s:.0f}s; log {daemon.log_file}:\n{daemon.log_tail()}"
    )


# --- measuring -----------------------------------------------------------------------------------


def on_clickhouse(settings: Settings, action: Callable[[Client], T], what: str, timeout_s: float = 180.0) -> T:
    """``action`` with a fresh client, retried while ClickHouse does not answer (it may be restarting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = clickhouse.client(settings.clickhouse)
            try:
                return action(client)
            finally:
                client.close()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: ClickHouse did not answer within {timeout_s:.0f} s: {exc}") from exc
            time.sleep(1.0)


def finalized(ch, services: list[str]) -> dict[str, datetime]:
    """span id -> when it was first finalized, for every span of ``services`` in agent_events."""
    rows = ch.query(
        "SELECT span_id, min(finalized_at) FROM agent_events WHERE service IN {s:Array(String)} GROUP BY span_id",
        parameters={"s": services},
    ).result_rows
    return {span_id: at for span_id, at in rows}


def drained(settings: Settings, ch) -> bool:
    """Nothing left to ingest: both consumer groups caught up and every inbox block finalized (or
    skipped as copies)."""
    for group, topic in kafka_lag.clickhouse_groups(settings.kafka).items():
        if kafka_lag.total_lag(settings.kafka, group, topic) != 0:
            return False
    pending = ch.command(
        "SELECT (SELECT max(_block_number) FROM span_inbox) > (SELECT done_block FROM finalizer_cursor)"
    )
    return not int(pending)


def rollup_spans(ch, rollup: Rollup, service: str, start: datetime, end: datetime) -> int:
    """Spans of ``service`` counted by ``rollup``, read from the projection itself."""
    params: dict[str, object] = {"start": start, "end": end, "s": service}
    if "service" in rollup.keys:
        where = "service = {s:String}"
    else:  # the per-user rollup has no service: the service's users (hashed by the Collector)
        hashes = [
            r[0]
            for r in ch.query(
                "SELECT DISTINCT user_id_hash FROM agent_events WHERE service = {s:String}", parameters={"s": service}
            ).result_rows
        ]
        where, params["h"] = "user_id_hash IN {h:Array(String)}", hashes
    rows = ch.query(
        rollup.query(where), parameters=params, settings={"force_optimize_projection_name": rollup.name}
    ).result_rows
    spans_at = len(rollup.group_columns)  # every rollup's first sum is spans = count()
    return sum(int(row[spans_at]) for row in rows)


@dataclass
class KillResult:
    accepted: int
    stored: int
    lost: int
    unacknowledged_stored: int
    duplicated_raw: int
    inbox_copies: int
    rollups: dict[str, tuple[int, int]]  # name -> (duplicated, missing) against distinct raw spans
    down_s: float
    recovery_s: float | None


def measure_kill(ch, kill: Kill, accepted: Accepted, final_at: dict[str, datetime], all_services: set[str],
                 start: datetime, end: datetime) -> KillResult:  # fmt: skip
    ids = accepted.ids(kill.service)
    stored_ids = {
        r[0]
        for r in ch.query(
            "SELECT DISTINCT span_id FROM agent_events WHERE service = {s:String}", parameters={"s": kill.service}
        ).result_rows
    }
    rows, unique = ch.query(
        "SELECT count(), uniqExact(span_id) FROM agent_events WHERE service = {s:String}",
        parameters={"s": kill.service},
    ).result_rows[0]
    inbox_rows, inbox_unique = ch.query(
        "SELECT count(), uniqExact(span_id) FROM span_inbox WHERE service = {s:String}",
        parameters={"s": kill.service},
    ).result_rows[0]
    rollups = {}
    for rollup in ROLLUPS.values():
        diff = rollup_spans(ch, rollup, kill.service, start, end) - unique
        rollups[rollup.name] = (max(diff, 0), max(-diff, 0))
    # Recovery: every span accepted (by any service of this fault) until the component was back, final.
    due = accepted.until(kill.back_at, all_services)
    recovery = None
    if due and due <= final_at.keys():
        recovery = max(final_at[i].replace(tzinfo=UTC).timestamp() for i in due) - kill.killed_at
    return KillResult(
        accepted=len(ids),
        stored=len(ids & stored_ids),
        lost=len(ids - stored_ids),
        unacknowledged_stored=len(stored_ids - ids),
        duplicated_raw=int(rows) - int(unique),
        inbox_copies=int(inbox_rows) - int(inbox_unique),
        rollups=rollups,
        down_s=kill.back_at - kill.killed_at,
        recovery_s=recovery,
    )


@dataclass
class FaultResult:
    fault: Fault
    kills: list[KillResult]
    audit_mismatches: dict[str, int]
    audit_groups: dict[str, int]
    missing_projection_parts: int
    wall_s: float


def run_fault(settings: Settings, fault: Fault, kills: int, rate: float, warmup_s: float, spacing_s: float,
              run: str, report: Report) -> FaultResult:  # fmt: skip
    """Load, ``kills`` SIGKILLs spaced out, load stops, wait until final and drained, measure."""

    def query(action: Callable[[Client], T]) -> T:
        return on_clickhouse(settings, action, f"measuring {fault.name}")

    began = time.time()
    plan = [Kill(f"faults-{run}-{fault.name}-{n + 1}") for n in range(kills)]
    load = Load(settings.collector.otlp_http_port, rate)
    load.start(plan[0].service)
    time.sleep(warmup_s)
    for n, kill in enumerate(plan):
        kill.killed_at, kill.back_at, kill.pid = kill_and_wait(settings, fault)
        report(f"  kill {n + 1}/{kills}: pid {kill.pid} killed, back after {kill.back_at - kill.killed_at:.1f} s")
        # Half the spacing on this kill's service, half on the next one's: each kill sits inside its window.
        time.sleep(spacing_s / 2)
        if n + 1 < kills:
            load.service = plan[n + 1].service
        time.sleep(spacing_s / 2)
    load.stop()
    stopped = time.time()
    services = [k.service for k in plan]
    everything = {i for s in services for i in load.accepted.ids(s)}
    report(f"  load stopped: {len(everything):,} spans accepted; waiting until every one is final")
    deadline = time.monotonic() + 300
    final_at: dict[str, datetime] = {}
    while time.monotonic() < deadline:
        final_at = query(lambda ch: finalized(ch, services))
        if everything <= final_at.keys():
            break
        time.sleep(2.0)
    else:
        report(f"  {len(everything - final_at.keys()):,} accepted spans still not final after 300 s; measuring anyway")
    # Copies delivered late would be finalized after the originals: measure once nothing is left in flight.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not query(lambda ch: drained(settings, ch)):
        time.sleep(1.0)
    final_at = query(lambda ch: finalized(ch, services))
    window_start = datetime.fromtimestamp(began, UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    window_end = datetime.fromtimestamp(stopped, UTC).replace(tzinfo=None) + timedelta(days=1)
    results = query(
        lambda ch: [measure_kill(ch, k, load.accepted, final_at, set(services), window_start, window_end) for k in plan]
    )
    audits = query(lambda ch: {name: audit(ch, *_audit_window(r, began, stopped), r) for name, r in ROLLUPS.items()})
    return FaultResult(
        fault=fault,
        kills=results,
        audit_mismatches={n: len(a.mismatches) for n, a in audits.items()},
        audit_groups={n: a.groups for n, a in audits.items()},
        missing_projection_parts=sum(a.parts_without_projection for a in audits.values()),
        wall_s=time.time() - began,
    )


def _audit_window(rollup: Rollup, began: float, stopped: float) -> tuple[datetime, datetime]:
    """The fault's time range widened to whole buckets of ``rollup``."""
    start = datetime.fromtimestamp(began - 60, UTC).replace(tzinfo=None, second=0, microsecond=0)
    end = datetime.fromtimestamp(stopped + 120, UTC).replace(tzinfo=None, second=0, microsecond=0)
    if rollup.bucket_column == "ts_hour":
        start = start.replace(minute=0)
    elif rollup.bucket_column == "day":
        start = start.replace(hour=0, minute=0)
    return start, end + (timedelta(days=1) if rollup.bucket_column == "day" else timedelta(hours=1))


# --- output --------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def fault_table(result: FaultResult) -> str:
    kills = result.kills
    total = lambda pick: f"{sum(pick(k) for k in kills):,}"  # noqa: E731
    rows: list[list[str]] = []

    def row(name: str, pick: Callable[[KillResult], int]) -> None:
        rows.append([name, *(f"{pick(k):,}" for k in kills), total(pick)])

    row("accepted (HTTP 200)", lambda k: k.accepted)
    row("stored in agent_events (distinct span ids)", lambda k: k.stored)
    row("lost (accepted, not stored)", lambda k: k.lost)
    row("duplicated in raw (rows beyond one per span)", lambda k: k.duplicated_raw)
    for name in ROLLUPS:
        rows.append(
            [
                f"{name}: duplicated / missing",
                *(f"{k.rollups[name][0]:,} / {k.rollups[name][1]:,}" for k in kills),
                f"{sum(k.rollups[name][0] for k in kills):,} / {sum(k.rollups[name][1] for k in kills):,}",
            ]
        )
    row("stored, never acknowledged (in flight at the kill)", lambda k: k.unacknowledged_stored)
    row("copies in span_inbox (sent again; dropped by the finalizer)", lambda k: k.inbox_copies)
    rows.append(["down (kill → back and healthy, s)", *(_seconds(k.down_s) for k in kills),
                 _seconds(max(k.down_s for k in kills))])  # fmt: skip
    recoveries = [k.recovery_s for k in kills]
    worst = None if None in recoveries else max(r for r in recoveries if r is not None)
    rows.append(["recovery (kill → all accepted until back final, s)", *map(_seconds, recoveries), _seconds(worst)])
    header = ["measure", *(f"kill {n + 1}" for n in range(len(kills))), "all"]
    audit_line = ", ".join(f"{n} {result.audit_mismatches[n]}/{result.audit_groups[n]}" for n in ROLLUPS)
    return (
        f"### {result.fault.label}, {len(kills)}x under load ({result.wall_s:.0f} s)\n\n"
        f"{table(header, rows)}\n\n"
        f"Rollup audit over the fault's buckets (mismatched / compared groups): {audit_line}; "
        f"parts without a projection: {result.missing_projection_parts}\n"
    )


def summary_table(results: list[FaultResult]) -> str:
    rows = []
    for r in results:
        dup_rollups = sum(d for k in r.kills for d, _ in k.rollups.values())
        missing_rollups = sum(m for k in r.kills for _, m in k.rollups.values())
        recoveries = [k.recovery_s for k in r.kills]
        rows.append(
            [
                f"{r.fault.label}, {len(r.kills)}x",
                f"{sum(k.accepted for k in r.kills):,}",
                f"{sum(k.stored for k in r.kills):,}",
                f"{sum(k.lost for k in r.kills):,}",
                f"{sum(k.duplicated_raw for k in r.kills):,}",
                f"{dup_rollups:,} / {missing_rollups:,}",
                f"{sum(r.audit_mismatches.values()):,}",
                "never" if None in recoveries else f"{max(x for x in recoveries if x is not None):.1f}",
            ]
        )
    header = ["fault", "accepted", "stored", "lost", "duplicated in raw", "rollups dup / missing",
              "audit mismatches", "worst recovery (s)"]  # fmt: skip
    return table(header, rows)


def baseline(ch, settings: Settings, run: str, rate: float, seconds: float) -> tuple[float, float, int]:
    """accept → final p50 and max (s) of spans sent before any fault, and how many."""
    load = Load(settings.collector.otlp_http_port, rate)
    service = f"faults-{run}-baseline"
    load.start(service)
    time.sleep(seconds)
    load.stop()
    accepted = load.accepted.times()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        final_at = finalized(ch, [service])
        if accepted.keys() <= final_at.keys():
            break
        time.sleep(1.0)
    delays = [final_at[i].replace(tzinfo=UTC).timestamp() - t for i, t in accepted.items() if i in final_at]
    if not delays:
        raise RuntimeError(f"none of the {len(accepted):,} baseline spans became final within 120 s")
    return statistics.median(delays), max(delays), len(accepted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", type=int, default=34000, help="port base of the bench stack (state .state/bench-faults-<base>)"
    )
    parser.add_argument(
        "--faults", nargs="+", choices=list(FAULTS), default=list(FAULTS), help="components to kill, in order"
    )
    parser.add_argument(
        "--kills", type=int, default=0, help="kills per fault (default: Collector 3, ClickHouse 3, Kafka 2)"
    )
    parser.add_argument("--rate", type=float, default=2500.0, help="offered spans/s through the Collector")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of load before the first kill of a fault")
    parser.add_argument(
        "--spacing", type=float, default=14.0, help="seconds of load between a component's return and the next kill"
    )
    parser.add_argument(
        "--attribution-delay",
        type=int,
        default=0,
        help="METRICS_PLATFORM_ATTRIBUTION_DELAY_SECONDS of the bench stack (0: the platform's default)",
    )
    args = parser.parse_args()

    def report(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    extra = (
        {"METRICS_PLATFORM_ATTRIBUTION_DELAY_SECONDS": str(args.attribution_delay)} if args.attribution_delay else {}
    )
    run = uuid.uuid4().hex[:6]
    load_avg = os.getloadavg()
    report(f"load average before: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f} on {os.cpu_count()} cores")
    started = time.monotonic()
    with bench_stack("bench-faults", args.base, report, extra) as settings:
        ch = clickhouse.client(settings.clickhouse)
        report(f"baseline: {args.rate:,.0f} spans/s for 10 s, no fault")
        p50, worst, n = baseline(ch, settings, run, args.rate, 10.0)
        ch.close()
        results = []
        for name in args.faults:
            fault = FAULTS[name]
            kills = args.kills or DEFAULT_KILLS[name]
            report(f"{fault.label}: {kills}x under {args.rate:,.0f} spans/s")
            result = run_fault(settings, fault, kills, args.rate, args.warmup, args.spacing, run, report)
            results.append(result)
            print(fault_table(result), flush=True)
        delay = settings.ingest.attribution_delay_s
        restarts = {name: FAULTS[name].daemon(settings).restarts() for name in args.faults}
    print(
        f"### Summary ({time.monotonic() - started:.0f} s in all)\n\n{summary_table(results)}\n\n"
        f"Every span waits the attribution delay ({delay} s) before it is final; without faults, accept → final "
        f"p50 {p50:.1f} s, max {worst:.1f} s ({n:,} spans at {args.rate:,.0f}/s). Restarts by the supervisor: "
        + ", ".join(f"{k} {v}" for k, v in restarts.items())
        + f". Machine: {os.cpu_count()} cores, load average before {load_avg[0]:.2f}.",
        flush=True,
    )


if __name__ == "__main__":
    main()
