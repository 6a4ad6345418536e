"""Our ingest path against the peer path, same load, one run: throughput, CPU per span, delay to queryable.

Peer: what users run when they need no durable buffer, an OpenTelemetry Collector at our release
(v0.155.0) with the contrib ``clickhouseexporter`` writing straight into ClickHouse (its own tables,
async inserts, in-memory queue; ``bench/peer_otelcol``). Ours: our Collector (PII processors,
persistent queue) → Kafka → Kafka engine → SQL mapping → span_inbox → finalizer → agent_events.
Each path gets its own embedded ClickHouse, ports and state directory; both see the load of
``bench/e2e_throughput.py`` (OTLP/HTTP protobuf from sender processes, a probe trace every 0.5 s).

Order: ours, then the peer, then ours again. Per path its idle CPU (20 s, once); per run a fixed offered rate
(``--rate``), then as fast as the Collector accepts (saturation). After each load phase it waits
until every accepted span is stored (queryable: span_inbox / otel_traces) and, for ours, final
(agent_events), so a phase's CPU includes its own finalization and nothing of the next one.

CPU is user+sys of each path's processes (/proc): from the start of a phase until its spans are
final plus 3 s of merges, less the path's idle rate (measured once, on the fresh stack) over that
time, less the bench's own queries (ClickHouse's HTTP handler threads; neither path ingests over
HTTP). ``--profile`` splits it per process and, inside ClickHouse, by thread: the Kafka engine's
consumer (poll, mapping views, span_inbox insert), pool threads (the finalizer's refresh), merges.

    .venv/bin/python bench/compare_peer.py                 # starts both paths (ports 33000+ / 33500+)
    .venv/bin/python bench/compare_peer.py --profile       # plus where each path's CPU goes
    .venv/bin/python bench/compare_peer.py --first-span    # one span right after each of 3 fresh starts per path
    make bench-peer
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_throughput import PLATFORM_CHECKS, build_payload, percentile, run_senders, start_probe  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from stacks import environment, fresh_state, stack_env  # noqa: E402

from metrics_platform import clickhouse  # noqa: E402
from metrics_platform.settings import Settings  # noqa: E402
from metrics_platform.stack import clickhouse_embedded, collector, kafka_broker, platform  # noqa: E402
from metrics_platform.stack.process import Daemon, http_get, require_free_ports, wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEER_SOURCE = ROOT / "bench" / "peer_otelcol"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PEER_CHECKS = {"queryable": "SELECT DISTINCT TraceId FROM otel_traces WHERE TraceId IN {t:Array(String)}"}
BENCH_STAGE = "HTTP handler: the bench's probes and counts (excluded)"
# After the last span is final: background merges still belong to the load (3 s keeps a default run under 6 min).
TAIL_S = 3.0
# ClickHouse thread names (Linux comm) → the stage they work for. Measured on chdb-core 26.9: the Kafka
# engine's consumer thread ("RuntimeData", one per Kafka table) polls, parses and runs every view of its
# chain down to the span_inbox insert; refreshes (the finalizer) and parallel parts of queries run on
# "ThreadPool" threads; HTTP and native handlers run what clients send (the peer's inserts).
THREAD_STAGES = (
    (re.compile(r"^(RuntimeData|BgMBSchPool|BgStrmSchPool|Kafka)"), "Kafka engine: poll, map, accept, insert inbox"),
    (
        re.compile(r"^(ThreadPool|QueryPipelineEx|QueryPullPipeEx|QueryPushPipeEx|ConcurrentJoin)"),
        "pool threads: finalizer refresh, parallel query work",
    ),
    (re.compile(r"^(MergeMutate|Merge)"), "merges"),
    (re.compile(r"^(AsyncInsert|AsyncInsQ)"), "async insert flush"),
    (re.compile(r"^TCPHandler"), "native protocol handler (inserts)"),
    (re.compile(r"^HTTPHandler"), BENCH_STAGE),
    (re.compile(r"^BgSchPool"), "background schedule pool (refresh scheduling, cleanup)"),
)


def cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process so far (its threads included, exited ones too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Per live thread: (name, user+sys CPU seconds)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            head, rest = task.joinpath("stat").read_text().rsplit(") ", 1)
            fields = rest.split()
            threads[int(task.name)] = (head.split(" (", 1)[1], (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return threads


def stage_of(thread_name: str) -> str:
    for pattern, stage in THREAD_STAGES:
        if pattern.match(thread_name):
            return stage
    return "other threads"


class ThreadSampler:
    """CPU of one process's threads by stage, sampled every 0.25 s until ``stop``.

    Pool threads change names with their work and come and go: each interval's CPU is charged to the
    thread's name at the end of the interval; what threads spent after their last sample and before
    exiting is the process total less the sum ("threads that exited").
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stages: dict[str, float] = {}
        self._last = thread_cpu(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        now = thread_cpu(self.pid)
        for tid, (name, cpu) in now.items():
            spent = cpu - self._last.get(tid, (name, 0.0))[1]
            if spent > 0:
                self.stages[stage_of(name)] = self.stages.get(stage_of(name), 0.0) + spent
        self._last = now

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self._sample()

    def stop(self, process_total: float) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            self._sample()
        stages = dict(self.stages)
        stages["threads that exited"] = max(process_total - sum(stages.values()), 0.0)
        return stages


@dataclass
class Snapshot:
    """CPU seconds of a path's processes at one moment."""

    at: float
    processes: dict[str, float]

    @staticmethod
    def take(pids: Mapping[str, int]) -> Snapshot:
        return Snapshot(time.time(), {name: cpu_seconds(pid) for name, pid in pids.items()})

    def total(self) -> float:
        return sum(self.processes.values())


@dataclass
class IngestPath:
    """One ingest path under test: where to send, what to count, which processes to charge."""

    name: str
    settings: Settings
    checks: Mapping[str, str]
    stored_sql: str
    final_sql: str | None
    daemons: dict[str, Daemon]
    clickhouse_daemon: str = "clickhouse"
    stop: Callable[[], None] = lambda: None
    # cores each process uses with nothing to do (measure_idle)
    idle_rates: dict[str, float] = field(default_factory=dict)

    @property
    def idle_cpu_rate(self) -> float:
        return sum(self.idle_rates.values())

    def pids(self) -> dict[str, int]:
        found = {name: daemon.pid() for name, daemon in self.daemons.items()}
        missing = [name for name, pid in found.items() if pid is None]
        if missing:
            raise RuntimeError(f"{self.name}: {', '.join(missing)} not running (logs in {self.settings.log_dir})")
        return {name: pid for name, pid in found.items() if pid is not None}

    def snapshot(self) -> Snapshot:
        return Snapshot.take(self.pids())


@dataclass
class Phase:
    """What one load phase measured."""

    label: str
    accepted: int
    duration_s: float
    stored: int = 0
    final: int | None = None
    stored_window_s: float = 0.0
    final_window_s: float = 0.0
    cpu_to_stored_s: float = 0.0
    cpu_s: float = 0.0
    per_process: dict[str, float] = field(default_factory=dict)
    clickhouse_stages: dict[str, float] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)

    @property
    def stored_rate(self) -> float:
        return self.stored / self.stored_window_s if self.stored_window_s else 0.0

    @property
    def final_rate(self) -> float:
        """Final spans (ours: in agent_events, what dashboards read) per second from the start of the load
        until the last was final, less the attribution delay every span waits: below the stored rate when
        the finalizer cannot keep up with the inbox."""
        return (self.final or 0) / self.final_window_s if self.final_window_s > 0 else 0.0

    def cpu_us_per_span(self) -> float:
        return self.cpu_s / self.stored * 1e6 if self.stored else float("nan")


def wait_settled(path: IngestPath, sql: str, service: str, target: int, quiet_s: float) -> tuple[int, float, Snapshot]:
    """Poll ``sql`` (a count for ``service``) until it reaches ``target`` or stops moving for ``quiet_s``.

    Returns the count, when it last changed, and the CPU snapshot taken then.
    """
    ch = clickhouse.client(path.settings.clickhouse)
    last, changed_at, snap = -1, time.time(), path.snapshot()
    try:
        while True:
            now_snap = path.snapshot()
            count = ch.query(sql, parameters={"s": service}).result_rows[0][0]
            if count != last:
                last, changed_at, snap = count, now_snap.at, now_snap
            if count >= target or time.time() - changed_at > quiet_s:
                return last, changed_at, snap
            time.sleep(0.5)
    finally:
        ch.close()


def measure_idle(path: IngestPath, settle_s: float = 10.0, seconds: float = 10.0) -> None:
    """The path's CPU with nothing to do (cores per process), on a fresh stack before any load.

    Nothing is sent, not even the probe: a trickle of spans is work (ours pays a fixed cost per Kafka
    engine block however small), and later an "idle" stack still merges and finalizes what it was
    sent, which is the load's own cost. The settle time lets a just-started JVM finish compiling.
    """
    time.sleep(settle_s)
    before = path.snapshot()
    time.sleep(seconds)
    after = path.snapshot()
    path.idle_rates = {
        name: (after.processes[name] - before.processes[name]) / (after.at - before.at) for name in after.processes
    }


def run_phase(path: IngestPath, label: str, duration_s: float, senders: int, rate: float) -> Phase:
    """Load one path for ``duration_s``, wait until its spans are stored (and final), measure.

    CPU counts from the start of the load until the spans are final plus ``TAIL_S`` (merges), less
    the path's idle rate over that time and less the bench's own queries (probes, counts: the HTTP
    handler threads of ClickHouse; neither path's ingest uses HTTP).
    """
    run = uuid.uuid4().hex[:8]
    service, probe_service = f"bench-{run}", f"bench-probe-{run}"
    port = path.settings.collector.otlp_http_port
    before = path.snapshot()
    sampler = ThreadSampler(path.pids()[path.clickhouse_daemon])
    prober, stop, delays = start_probe(port, path.settings.clickhouse, path.checks, probe_service)
    accepted = run_senders(port, service, duration_s, senders, rate)
    stop.set()
    phase = Phase(label, accepted, duration_s, delays=delays)
    phase.stored, stored_at, at_stored = wait_settled(path, path.stored_sql, service, accepted, quiet_s=20)
    phase.stored_window_s = stored_at - before.at
    phase.cpu_to_stored_s = at_stored.total() - before.total()
    done_at = stored_at
    if path.final_sql is not None:
        ingest = path.settings.ingest
        quiet = ingest.attribution_delay_s + 2 * ingest.finalizer_interval_s + 10
        phase.final, done_at, _ = wait_settled(path, path.final_sql, service, phase.stored, quiet_s=quiet)
        phase.final_window_s = done_at - before.at - ingest.attribution_delay_s
    time.sleep(max(0.0, done_at + TAIL_S - time.time()))
    after = path.snapshot()
    prober.join()
    window = after.at - before.at
    ch = path.clickhouse_daemon
    phase.clickhouse_stages = sampler.stop(after.processes[ch] - before.processes[ch])
    phase.clickhouse_stages["idle rate × window (subtracted)"] = -path.idle_rates.get(ch, 0.0) * window
    bench_queries = phase.clickhouse_stages.get(BENCH_STAGE, 0.0)
    phase.per_process = {
        name: after.processes[name] - before.processes[name] - path.idle_rates.get(name, 0.0) * window
        for name in after.processes
    }
    phase.per_process[ch] -= bench_queries
    phase.cpu_s = sum(phase.per_process.values())
    return phase


# --- the two paths ---------------------------------------------------------------------------------


def ours_path(settings: Settings, stop: Callable[[], None] = lambda: None) -> IngestPath:
    """Our platform as a path under test: queryable in span_inbox, final in agent_events."""
    return IngestPath(
        name="ours",
        settings=settings,
        checks=PLATFORM_CHECKS,
        stored_sql="SELECT count() FROM span_inbox WHERE service = {s:String}",
        final_sql="SELECT count() FROM agent_events WHERE service = {s:String}",
        daemons={
            "otelcol": collector.daemon(settings),
            "kafka": kafka_broker.daemon(settings),
            "clickhouse": clickhouse_embedded.daemon(settings),
        },
        stop=stop,
    )


def start_ours(base: int, report: Callable[[str], None]) -> IngestPath:
    """Our platform (Kafka, ClickHouse, Collector; no Dagster, no Superset) on its own port base, from nothing."""
    state = ROOT / ".state" / f"bench-ours-{base}"
    env = stack_env(base, state)
    with environment(env):
        settings = Settings.from_env()
        platform.down(settings, report=lambda _: None)
        fresh_state(state)
        report(f"ours: starting Kafka, ClickHouse and the Collector (ports {base}+, state {state})")
        platform.up(settings, report=lambda _: None, with_dagster=False)

    def stop() -> None:
        with environment(env):
            platform.down(settings, report=lambda _: None)

    return ours_path(settings, stop)


def peer_healthy(settings: Settings) -> bool:
    try:
        status, _ = http_get(f"http://127.0.0.1:{settings.collector.health_port}/", timeout_s=1.0)
    except OSError:
        return False
    return status == 200


def start_peer(base: int, report: Callable[[str], None]) -> IngestPath:
    """The peer Collector (built from bench/peer_otelcol, cached) and its own embedded ClickHouse."""
    state = ROOT / ".state" / f"bench-peer-{base}"
    env = stack_env(base, state)
    with environment(env):
        settings = Settings.from_env()
        peer = Daemon("peer-otelcol", settings.run_dir, settings.log_dir)
        peer.stop()
        clickhouse_embedded.stop(settings)
        fresh_state(state)
        report("peer: building its Collector (cached after the first run, ~1 min cold)")
        binary = collector.build(settings, PEER_SOURCE)
        report(f"peer: starting ClickHouse and the Collector (ports {base}+, state {state})")
        clickhouse_embedded.start(settings)
        c, ch = settings.collector, settings.clickhouse
        require_free_ports("the peer Collector", {"OTLP gRPC": c.otlp_grpc_port, "OTLP HTTP": c.otlp_http_port})
        peer_env = {
            **os.environ,
            "PEER_HEALTH_PORT": str(c.health_port),
            "PEER_OTLP_GRPC_PORT": str(c.otlp_grpc_port),
            "PEER_OTLP_HTTP_PORT": str(c.otlp_http_port),
            "PEER_CLICKHOUSE_TCP_PORT": str(ch.tcp_port),
            "PEER_CLICKHOUSE_DATABASE": ch.database,
            "PEER_CLICKHOUSE_USER": ch.user,
            "PEER_CLICKHOUSE_PASSWORD": ch.password,
        }
        peer.start([str(binary), "--config", str(PEER_SOURCE / "config.yaml")], env=peer_env)
        wait_until(lambda: peer_healthy(settings), 60, f"the peer Collector on :{c.health_port}", peer)
        # The exporter creates its tables at start; the probe and counts need them.
        client = clickhouse.client(ch)
        wait_until(lambda: client.command("EXISTS TABLE otel_traces") == 1, 30, "the peer's otel_traces table", peer)
        client.close()

    def stop() -> None:
        with environment(env):
            peer.stop()
            clickhouse_embedded.stop(settings)

    return IngestPath(
        name="peer",
        settings=settings,
        checks=PEER_CHECKS,
        stored_sql="SELECT count() FROM otel_traces WHERE ServiceName = {s:String}",
        final_sql=None,
        daemons={"otelcol": peer, "clickhouse": clickhouse_embedded.daemon(settings)},
        stop=stop,
    )


# --- the table -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run of a path: its idle rate and its two phases."""

    label: str
    path: IngestPath
    idle_rates: dict[str, float]
    fixed: Phase
    saturation: Phase


def p95(phase: Phase, what: str = "queryable") -> float:
    return percentile(phase.delays.get(what, []), 95)


def delays_text(phase: Phase, what: str) -> str:
    values = phase.delays.get(what, [])
    if not values:
        return "–"
    return f"{percentile(values, 50):.2f} / {percentile(values, 95):.2f}"


def times_as_good(ours: float, peer: float, higher_is_better: bool) -> str:
    """How many times as good as the peer ours is (≥ 1.0: at least as good); "–" without both."""
    if not ours or not peer or ours != ours or peer != peer:
        return "–"
    return f"{(ours / peer if higher_is_better else peer / ours):.2f}"


def table(runs: list[Run], rate: float) -> str:
    """One markdown table: a column per run, and ours/peer from the best of our runs against the peer's.

    Our runs differ by warm-up and noise, not by design, so the best of them is compared; each run's
    column is printed too.
    """
    ours = [r for r in runs if r.path.name == "ours"]
    peer = next((r for r in runs if r.path.name == "peer"), None)

    def ratio(value: Callable[[Run], float], higher_is_better: bool) -> str:
        if not ours or peer is None:
            return ""
        best = (max if higher_is_better else min)(value(r) for r in ours)
        return times_as_good(best, value(peer), higher_is_better)

    def us(seconds: float, spans: int) -> str:
        return f"{seconds / spans * 1e6:.1f}" if spans else "–"

    def phase_rows(
        title: str, phase: Callable[[Run], Phase], sustained: bool
    ) -> list[tuple[str, Callable[[Run], str], str]]:
        """The rows of one load phase (fixed rate or saturation): the same measures for both, and the sustained
        rate when the load was as fast as accepted."""
        return [
            (title, lambda r: f"{phase(r).accepted:,} / {phase(r).stored:,}", ""),
            *(
                [("… sustained stored spans/s", lambda r: f"{phase(r).stored_rate:,.0f}",
                  ratio(lambda r: phase(r).stored_rate, True)),
                 # ours only: span_inbox is queryable, agent_events is what dashboards and rollups read, and a
                 # finalizer slower than the inbox would show only here
                 ("… sustained final spans/s (agent_events, less the attribution delay)",
                  lambda r: f"{phase(r).final_rate:,.0f}" if phase(r).final is not None else "–", "")]
                if sustained
                else []
            ),
            ("… emit → queryable p50 / p95 (s)", lambda r: delays_text(phase(r), "queryable"),
             ratio(lambda r: p95(phase(r)), False)),
            ("… emit → final p50 / p95 (s)", lambda r: delays_text(phase(r), "final"), ""),
            ("… CPU per stored span (µs)", lambda r: f"{phase(r).cpu_us_per_span():.1f}",
             ratio(lambda r: phase(r).cpu_us_per_span(), False)),
        ]  # fmt: skip

    rows: list[tuple[str, Callable[[Run], str], str]] = [
        ("idle CPU of the path's processes (cores)", lambda r: f"{sum(r.idle_rates.values()):.3f}", ""),
        *phase_rows(
            f"{rate:,.0f} spans/s offered, {runs[0].fixed.duration_s:.0f} s: accepted / stored",
            lambda r: r.fixed,
            sustained=False,
        ),
        *phase_rows(
            f"as fast as accepted, {runs[0].saturation.duration_s:.0f} s: accepted / stored",
            lambda r: r.saturation,
            sustained=True,
        ),
        (
            "… of which until stored (µs, no idle correction)",
            lambda r: us(r.saturation.cpu_to_stored_s, r.saturation.stored),
            "",
        ),
    ]
    out = ["| measure | " + " | ".join(r.label for r in runs) + " | ours/peer (×, ≥ 1: ours as good or better) |"]
    out.append("|---|" + "---|" * len(runs) + "---|")
    for label, cell, extra in rows:
        out.append(f"| {label} | " + " | ".join(cell(r) for r in runs) + f" | {extra} |")
    return "\n".join(out)


def profile_table(runs: list[Run]) -> str:
    """µs of CPU per stored span in the saturation phase: per process, and the ClickHouse server by stage."""
    out = ["| where the CPU goes, saturation phase (µs per stored span) | " + " | ".join(r.label for r in runs) + " |"]
    out.append("|---|" + "---|" * len(runs))

    def cells(values: Callable[[Phase], dict[str, float]], key: str) -> str:
        found = [(values(r.saturation).get(key), r.saturation.stored) for r in runs]
        return " | ".join("–" if v is None else f"{v / max(spans, 1) * 1e6:.1f}" for v, spans in found)

    processes = list(dict.fromkeys(name for r in runs for name in r.saturation.per_process))
    for name in processes:
        out.append(
            f"| process: {name}{' (bench queries excluded)' if name == 'clickhouse' else ''} | "
            + cells(lambda ph: ph.per_process, name)
            + " |"
        )
    stages = sorted(
        {name for r in runs for name in r.saturation.clickhouse_stages},
        key=lambda name: -max(r.saturation.clickhouse_stages.get(name, 0.0) for r in runs),
    )
    for stage in stages:
        out.append(f"| ClickHouse: {stage} | " + cells(lambda ph: ph.clickhouse_stages, stage) + " |")
    return "\n".join(out)


# --- the first span after a start --------------------------------------------------------------------


def first_span_delay(path: IngestPath, timeout_s: float = 60.0) -> float:
    """Seconds from sending one span (the moment the path is up) until the path's "queryable" check finds it."""
    body = build_payload(f"first-span-{uuid.uuid4().hex[:8]}", 1, 1)
    trace = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    ch = clickhouse.client(path.settings.clickhouse)
    conn = http.client.HTTPConnection("127.0.0.1", path.settings.collector.otlp_http_port, timeout=30)
    try:
        sent = time.monotonic()
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path.name}: the Collector answered {response.status} to the first span")
        while not ch.query(path.checks["queryable"], parameters={"t": [trace]}).result_rows:
            if time.monotonic() - sent > timeout_s:
                raise RuntimeError(f"{path.name}: the first span was not queryable after {timeout_s:.0f} s")
            time.sleep(0.02)
        return time.monotonic() - sent
    finally:
        conn.close()
        ch.close()


def first_span_table(args: argparse.Namespace, report: Callable[[str], None]) -> str:
    """Each path started ``args.starts`` times from nothing; one span sent the moment its start returns."""
    starts: dict[str, Callable[[], IngestPath]] = {
        "ours": lambda: start_ours(args.ours_base, report),
        "peer": lambda: start_peer(args.peer_base, report),
    }
    delays: dict[str, list[float]] = {}
    for name, start in starts.items():
        for attempt in range(1, args.starts + 1):
            path = start()
            try:
                delays.setdefault(name, []).append(first_span_delay(path))
            finally:
                path.stop()
            report(f"{name}, start {attempt}: first span queryable after {delays[name][-1]:.3f} s")
    ours, peer = delays["ours"], delays["peer"]
    return "\n".join(
        [
            f"| first span after a fresh start → queryable ({args.starts} starts) | ours | peer "
            "| ours/peer (×, ≥ 1: ours as good or better) |",
            "|---|---|---|---|",
            f"| p50 (s) | {percentile(ours, 50):.2f} | {percentile(peer, 50):.2f} | "
            f"{times_as_good(percentile(ours, 50), percentile(peer, 50), False)} |",
            f"| max (s) | {max(ours):.2f} | {max(peer):.2f} | {times_as_good(max(ours), max(peer), False)} |",
            f"| each (s) | {', '.join(f'{d:.2f}' for d in ours)} | {', '.join(f'{d:.2f}' for d in peer)} | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10_000, help="offered spans/s of the fixed-rate phase")
    parser.add_argument("--fixed-duration", type=float, default=10.0, help="seconds at the fixed rate")
    parser.add_argument("--saturation-duration", type=float, default=20.0, help="seconds as fast as accepted")
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--ours-base", type=int, default=33000, help="port base of our stack")
    parser.add_argument("--peer-base", type=int, default=33500, help="port base of the peer")
    parser.add_argument(
        "--running", action="store_true", help="use the running platform of METRICS_PLATFORM_* instead of starting one"
    )
    parser.add_argument("--once", action="store_true", help="ours once, then the peer (no second run of ours)")
    parser.add_argument("--profile", action="store_true", help="also print where each path's CPU goes")
    parser.add_argument(
        "--first-span",
        action="store_true",
        help="instead: start each path --starts times from nothing and time one span sent the moment it is up",
    )
    parser.add_argument("--starts", type=int, default=3, help="fresh starts per path for --first-span")
    args = parser.parse_args()

    def report(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    started = time.monotonic()
    load = os.getloadavg()
    report(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    if args.first_span:
        result = first_span_table(args, report)
        load = os.getloadavg()
        print(f"\n{result}\n\n{os.cpu_count()} cores; load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return
    collector.build(Settings.from_env(), PEER_SOURCE)  # a cold build must not sit between the runs
    ours = ours_path(Settings.from_env()) if args.running else start_ours(args.ours_base, report)
    peer: IngestPath | None = None
    runs: list[Run] = []

    def measure(path: IngestPath, label: str) -> None:
        if not path.idle_rates:
            report(f"{label}: idle CPU, 20 s")
            measure_idle(path)
        idle_rates = dict(path.idle_rates)
        report(f"{label}: {args.rate:,.0f} spans/s for {args.fixed_duration:.0f} s, then until stored and final")
        fixed = run_phase(path, "fixed", args.fixed_duration, args.senders, args.rate)
        report(f"{label}: as fast as accepted for {args.saturation_duration:.0f} s, then until stored and final")
        saturation = run_phase(path, "saturation", args.saturation_duration, args.senders, 0.0)
        runs.append(Run(label, path, idle_rates, fixed, saturation))

    try:
        measure(ours, "ours")
        peer = start_peer(args.peer_base, report)
        measure(peer, "peer")
        peer.stop()
        peer = None
        if not args.once:
            measure(ours, "ours again")
    finally:
        if peer is not None:
            peer.stop()
        if not args.running:
            report("stopping our stack")
            ours.stop()
    load = os.getloadavg()
    print()
    print(table(runs, args.rate))
    if args.profile:
        print()
        print(profile_table(runs))
    print()
    print(
        f"{os.cpu_count()} cores; load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{args.senders} senders on the same machine; total {time.monotonic() - started:.0f} s. "
        f"Attribution delay {ours.settings.ingest.attribution_delay_s} s."
    )


if __name__ == "__main__":
    main()
