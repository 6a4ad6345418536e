"""Cluster benchmark: the same load on a local cluster of 1 shard and of 2 shards (3 brokers each).

For each shape it starts the local cluster (stack/topology.py) on its own ports and state directory,
sends e2e_throughput's load (request spans with LLM children) for --duration seconds, probes the delay
from emit to queryable (span_inbox) and to final (agent_events) through the read layer's Distributed
tables, and measures the resident memory of every server. Prints one table; stops each cluster after it.

    .venv/bin/python bench/cluster.py --duration 30 --senders 2 --port-base 35000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_throughput import PLATFORM_CHECKS, percentile, run_senders, start_probe  # noqa: E402
from stacks import stack_env  # noqa: E402

from metrics_platform import clickhouse  # noqa: E402
from metrics_platform.cluster import Topology  # noqa: E402
from metrics_platform.settings import Settings  # noqa: E402
from metrics_platform.stack import collector, topology  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def environment(base: int, shards: int) -> dict[str, str]:
    """Ports and state of one benchmark cluster (bench/stacks.py's layout from ``base``, brokers and shards
    2.. from ``base + 500``), away from `make up`'s and the tests'."""
    env = stack_env(base, ROOT / ".state" / f"bench-cluster-{base}-{shards}")
    env["METRICS_PLATFORM_CLUSTER_PORT_BASE"] = str(base + 500)
    return env


def rss_mib(pid: int | None) -> float:
    """Resident memory of a process and its children (the ClickHouse server is one process)."""
    if pid is None:
        return 0.0
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(entry.name) == pid or fields.get("PPid", "").strip() == str(pid):
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total / 1024


def memory(settings: Settings, shape: Topology) -> dict[str, float]:
    rows = {name: rss_mib(daemon.pid()) for name, daemon, _, _ in topology.status(settings, shape)}
    rows["otelcol"] = rss_mib(collector.daemon(settings).pid())
    return rows


def run_shape(shape: Topology, base: int, duration: float, senders: int, rate: float) -> dict[str, str]:
    os.environ.update(environment(base, shape.shards))
    base_settings = Settings.from_env()
    topology.down(base_settings, report=lambda _: None)
    started = time.monotonic()
    settings = topology.up(base_settings, shape, report=lambda _: None)
    up_s = time.monotonic() - started
    try:
        reader = topology.read_settings(settings).clickhouse
        ch = clickhouse.client(reader)
        run = uuid.uuid4().hex[:8]
        service, probe_service = f"bench-{run}", f"bench-probe-{run}"
        port = settings.collector.otlp_http_port
        idle_memory = memory(settings, shape)
        loaded, stop, delays = start_probe(port, reader, PLATFORM_CHECKS, probe_service)
        start = time.time()
        accepted = run_senders(port, service, duration, senders, rate)
        stop.set()
        loaded.join()
        loaded_memory = memory(settings, shape)
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 5 + settings.ingest.attribution_delay_s:
            count = int(
                ch.command("SELECT count() FROM agent_events WHERE service = {s:String}", parameters={"s": service})
            )
            if count != last:
                last, stable_since = count, time.monotonic()
            time.sleep(1)
        last_ingest = ch.command(
            "SELECT toUnixTimestamp64Milli(max(ingested_at)) FROM agent_events WHERE service = {s:String}",
            parameters={"s": service},
        )
        per_shard = ch.query(
            "SELECT tcpPort(), count() FROM agent_events WHERE service = {s:String} GROUP BY 1 ORDER BY 1 "
            "SETTINGS distributed_group_by_no_merge = 1",
            parameters={"s": service},
        ).result_rows
        window = max(int(last_ingest) / 1000 - start, 1e-9)

        def delay(what: str) -> str:
            values = delays[what]
            return f"{percentile(values, 50):.2f} / {percentile(values, 95):.2f} (n={len(values)})"

        return {
            "cluster up (s)": f"{up_s:.1f}",
            "spans accepted by the Collector": f"{accepted:,}",
            "offered rate (accepted spans/s)": f"{accepted / duration:,.0f}",
            "spans in agent_events (final)": f"{last:,}",
            "lost (accepted - stored)": f"{accepted - last:,}",
            "rows per shard": " / ".join(f"{n:,}" for _, n in per_shard),
            "sustained into ClickHouse (spans/s)": f"{last / window:,.0f}",
            "emit -> queryable under load p50 / p95 (s)": delay("queryable"),
            "emit -> final under load p50 / p95 (s)": delay("final"),
            "RSS idle, all servers (MiB)": f"{sum(idle_memory.values()):,.0f}",
            "RSS under load, all servers (MiB)": f"{sum(loaded_memory.values()):,.0f}",
            "RSS under load per server (MiB)": ", ".join(f"{k} {v:.0f}" for k, v in loaded_memory.items()),
        }
    finally:
        topology.down(base_settings, report=lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per shape")
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--rate", type=float, default=0.0, help="offered spans/s in total (0 = as fast as accepted)")
    parser.add_argument("--port-base", type=int, default=35000, help="ports from base (offsets of bench/stacks.py)")
    args = parser.parse_args()
    shapes = [Topology(brokers=3, shards=1), Topology(brokers=3, shards=2)]
    results = {str(s): run_shape(s, args.port_base, args.duration, args.senders, args.rate) for s in shapes}
    keys = list(next(iter(results.values())))
    width = max(len(k) for k in keys)
    print(f"\n| {'measure':<{width}} | " + " | ".join(results) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * (len(s) + 2) for s in results) + "|")
    for key in keys:
        print(f"| {key:<{width}} | " + " | ".join(r[key] for r in results.values()) + " |")
    print(
        f"\n{os.cpu_count()} cores, every component on this machine; "
        f"load: {args.senders} senders, {args.duration:.0f} s"
    )


if __name__ == "__main__":
    main()
