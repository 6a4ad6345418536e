"""End-to-end benchmark: OTLP/HTTP → Collector → Kafka → ClickHouse, on whatever stack runs.

Senders in separate processes POST pre-built OTLP protobuf batches to the Collector as fast as
it accepts them (or at --rate). Each trace is shaped like an instrumented application's: a request
span with the route and the user, and LLM call children with tokens but no cost, so ClickHouse
attributes and prices every call. Meanwhile a probe sends one such trace every 0.5 s and times
how long until it is queryable (span_inbox) and final (attributed and priced in agent_events).
Prints one table. Run `make up` first (or point the METRICS_PLATFORM_* variables at another stack).

    .venv/bin/python bench/e2e_throughput.py --duration 30 --senders 2
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import secrets
import statistics
import threading
import time
import uuid
from collections.abc import Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from metrics_platform import clickhouse
from metrics_platform.settings import ClickHouseSettings, Settings


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(double_value=value))


def build_payload(service: str, traces: int, spans_per_trace: int, end_ns: int | None = None) -> bytes:
    """One ExportTraceServiceRequest of ``traces`` traces: a request span and LLM call children."""
    now = end_ns or time.time_ns()
    spans = []
    for t in range(traces):
        trace_id, root_id = secrets.token_bytes(16), secrets.token_bytes(8)
        route = f"POST /v1/route{t % 8}"
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=root_id,
                name=route,
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now - 1_000_000_000,
                end_time_unix_nano=now,
                attributes=[_kv("http.route", route), _kv("user_id", f"u-{t % 500}")],
            )
        )
        for s in range(spans_per_trace - 1):
            model, provider = (("gpt-4.1", "openai"), ("claude-sonnet-4-5", "anthropic"))[(t + s) % 2]
            spans.append(
                Span(
                    trace_id=trace_id,
                    span_id=secrets.token_bytes(8),
                    parent_span_id=root_id,
                    name=f"chat {model}",
                    kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=now - 800_000_000 - s * 1_000_000,
                    end_time_unix_nano=now - 1_000_000,
                    attributes=[
                        _kv("gen_ai.operation.name", "chat"),
                        _kv("gen_ai.request.model", model),
                        _kv("gen_ai.provider.name", provider),
                        _kv("gen_ai.usage.input_tokens", 500 + s),
                        _kv("gen_ai.usage.output_tokens", 120),
                    ],
                )
            )
    resource_attrs = [
        _kv("service.name", service),
        _kv("deployment.environment", "bench"),
        _kv("agent", "bench"),
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": resource_attrs},
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    return request.SerializeToString()


class FreshIds:
    """A pre-built request whose trace and span ids are replaced with new random ones for every send.

    Building protobuf in Python for every request would make the senders the bottleneck; resending
    the same ids would measure de-duplication instead of ingest. The ids sit at fixed offsets of
    the serialized request, so each send overwrites them in a copy.
    """

    def __init__(self, service: str, traces: int, spans_per_trace: int) -> None:
        self.body = build_payload(service, traces, spans_per_trace)
        request = ExportTraceServiceRequest.FromString(self.body)
        spans = request.resource_spans[0].scope_spans[0].spans
        # every occurrence of every id (a trace id repeats per span, a root span id as a parent id)
        self.groups: list[tuple[int, list[int]]] = []
        for value in {*(s.trace_id for s in spans), *(s.span_id for s in spans)}:
            offsets, start = [], 0
            while (found := self.body.find(value, start)) != -1:
                offsets.append(found)
                start = found + 1
            self.groups.append((len(value), offsets))

    def next(self) -> bytes:
        fresh = bytearray(self.body)
        for size, offsets in self.groups:
            value = os.urandom(size)
            for offset in offsets:
                fresh[offset : offset + size] = value
        return bytes(fresh)


def sender(port: int, service: str, duration_s: float, rate: float, sent: mp.Value) -> None:
    """POST requests with fresh ids for ``duration_s`` seconds; counts spans the Collector accepted."""
    traces, per_trace = 100, 5
    template = FreshIds(service, traces, per_trace)
    spans_per_post = traces * per_trace
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-protobuf"}
    start = time.monotonic()
    posted = 0
    while (elapsed := time.monotonic() - start) < duration_s:
        if rate and posted * spans_per_post > rate * elapsed:
            time.sleep(0.005)
            continue
        conn.request("POST", "/v1/traces", body=template.next(), headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            posted += 1
            with sent.get_lock():
                sent.value += spans_per_post
        else:  # refused by the memory limiter: back off as an SDK would
            time.sleep(0.1)


# What the probe waits for on the platform: queryable (in span_inbox) and final (attributed in agent_events).
PLATFORM_CHECKS = {
    "queryable": "SELECT DISTINCT trace_id FROM span_inbox WHERE trace_id IN {t:Array(String)}",
    "final": "SELECT DISTINCT trace_id FROM agent_events WHERE trace_id IN {t:Array(String)} "
    "AND kind = 'llm' AND user_id_hash != ''",
}


def probe(
    otlp_http_port: int,
    ch_settings: ClickHouseSettings,
    checks: Mapping[str, str],
    service: str,
    stop: threading.Event,
    delays: dict[str, list[float]],
) -> None:
    """Send one trace every 0.5 s; record seconds from its end until each of ``checks`` finds it.

    Each check is a query with a ``{t:Array(String)}`` parameter (hex trace ids) returning the trace
    ids it finds. "queryable" is looked for every 50 ms while a probe is younger than 2 s (delays of
    a tenth of a second must show), else every 0.5 s like the others: a lookup by trace id scans the
    table, and the probe must not become the load it measures. Probes are followed concurrently, so
    a long attribution delay does not thin out the samples; after ``stop`` the ones still pending are
    followed for up to two minutes.
    """
    ch = clickhouse.client(ch_settings)
    conn = http.client.HTTPConnection("127.0.0.1", otlp_http_port, timeout=30)
    pending: dict[str, dict[str, int]] = {what: {} for what in checks}
    looked = dict.fromkeys(checks, 0.0)
    for what in checks:
        delays.setdefault(what, [])
    next_send, deadline = time.monotonic(), None
    while any(pending.values()) or not stop.is_set():
        if not stop.is_set():
            if time.monotonic() >= next_send:
                next_send += 0.5
                emitted = time.time_ns()
                body = build_payload(service, 1, 2, end_ns=emitted)
                first = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0]
                conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
                conn.getresponse().read()
                for waiting in pending.values():
                    waiting[first.trace_id.hex()] = emitted
        elif deadline is None:
            deadline = time.monotonic() + 120
        elif time.monotonic() > deadline:
            break
        for what, sql in checks.items():
            young = what == "queryable" and time.time_ns() - min(pending[what].values(), default=0) < 2e9
            if pending[what] and time.monotonic() - looked[what] >= (0.05 if young else 0.5):
                looked[what] = time.monotonic()
                found = ch.query(sql, parameters={"t": list(pending[what])}).result_rows
                now = time.time_ns()
                for (trace,) in found:
                    delays[what].append((now - pending[what].pop(trace)) / 1e9)
        time.sleep(0.05)
    ch.close()


def start_probe(
    otlp_http_port: int, ch_settings: ClickHouseSettings, checks: Mapping[str, str], service: str
) -> tuple[threading.Thread, threading.Event, dict[str, list[float]]]:
    """``probe`` in a thread: (thread, the event that stops it, the delays it fills)."""
    stop, delays = threading.Event(), {}
    thread = threading.Thread(target=probe, args=(otlp_http_port, ch_settings, checks, service, stop, delays))
    thread.start()
    return thread, stop, delays


def run_senders(otlp_http_port: int, service: str, duration_s: float, senders: int, rate: float) -> int:
    """Run ``senders`` sender processes for ``duration_s`` (``rate`` spans/s in total, 0 = as fast as
    accepted); returns the spans the Collector accepted."""
    sent = mp.Value("q", 0)
    per_sender_rate = rate / senders if rate else 0.0
    procs = [
        mp.Process(target=sender, args=(otlp_http_port, service, duration_s, per_sender_rate, sent))
        for _ in range(senders)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return sent.value


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--rate", type=float, default=0.0, help="offered spans/s in total (0 = as fast as accepted)")
    args = parser.parse_args()
    settings = Settings.from_env()
    ch = clickhouse.client(settings.clickhouse)
    run = uuid.uuid4().hex[:8]
    service, probe_service = f"bench-{run}", f"bench-probe-{run}"

    port = settings.collector.otlp_http_port
    idle, stop, idle_delays = start_probe(port, settings.clickhouse, PLATFORM_CHECKS, probe_service)
    time.sleep(5)
    stop.set()
    idle.join()

    loaded, stop, load_delays = start_probe(port, settings.clickhouse, PLATFORM_CHECKS, probe_service)
    start = time.time()
    accepted = run_senders(port, service, args.duration, args.senders, args.rate)
    stop.set()
    loaded.join()

    # Wait until final rows settle, then measure the window from ClickHouse's own clock.
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 5 + settings.ingest.attribution_delay_s:
        count = ch.query("SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service})
        count = count.result_rows[0][0]
        if count != last:
            last, stable_since = count, time.monotonic()
        time.sleep(1)
    last_ingest, first_final, last_final, attributed = ch.query(
        "SELECT toUnixTimestamp64Milli(max(ingested_at)), toUnixTimestamp64Milli(min(finalized_at)), "
        "toUnixTimestamp64Milli(max(finalized_at)), "
        "countIf(kind != 'llm' OR (user_id_hash != '' AND cost_source = 'computed')) "
        "FROM agent_events WHERE service = {s:String}",
        parameters={"s": service},
    ).result_rows[0]
    window = max((last_ingest / 1000) - start, 1e-9)
    # The finalizer starts an attribution delay after the first span; from then on its rate.
    final_window = max((last_final - first_final) / 1000, 1e-9)

    def delays(found: dict[str, list[float]], what: str) -> str:
        values = found[what]
        return f"{percentile(values, 50):.2f} / {percentile(values, 95):.2f} (n={len(values)})"

    rows = [
        ("senders / duration", f"{args.senders} / {args.duration:.0f} s"),
        ("spans accepted by the Collector", f"{accepted:,}"),
        ("offered rate (accepted spans/s)", f"{accepted / args.duration:,.0f}"),
        ("spans in agent_events (final)", f"{last:,}"),
        ("lost (accepted − stored)", f"{accepted - last:,}"),
        ("attributed and priced", f"{attributed:,} of {last:,}"),
        ("sustained into ClickHouse (spans/s)", f"{last / window:,.0f}"),
        (
            "finalized, attributed (spans/s, first to last final row)",
            # Small runs are finalized in one batch: no window to divide by.
            f"{last / final_window:,.0f}" if last_final > first_final else "– (one finalizer batch)",
        ),
        ("emit → queryable (span_inbox), idle p50 / p95 (s)", delays(idle_delays, "queryable")),
        ("emit → final (agent_events), idle p50 / p95 (s)", delays(idle_delays, "final")),
        ("emit → queryable, under load p50 / p95 (s)", delays(load_delays, "queryable")),
        ("emit → final, under load p50 / p95 (s)", delays(load_delays, "final")),
        ("attribution delay (METRICS_PLATFORM_ATTRIBUTION_DELAY_SECONDS)", f"{settings.ingest.attribution_delay_s} s"),
        ("machine", f"{os.cpu_count()} cores, all components on it"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
