"""What Kafka in the path costs: our Collector as configured, and the same binary with only OTLP in, Kafka out.

Starts our stack (Kafka, ClickHouse, the Collector; ``compare_peer.start_ours``), then a second process of the same
Collector binary with a minimal config: the otlp receiver, no processors, an in-memory queue with the same batching,
and the kafka exporter writing ``otlp_proto`` records (one per batch) to a topic of its own that nothing consumes.
Each Collector gets the load of ``bench/e2e_throughput.py`` as fast as it accepts, one after the other; the table
shows accepted spans/s and the CPU per accepted span of the Collector and of the broker. The floor tells how much of
our Collector's cost is the platform's choices (PII policy, fsynced queue, OTLP JSON per trace) and how much is
taking OTLP in and handing it to Kafka at all.

    .venv/bin/python bench/collector_floor.py                  # ports 33000+, 20 s per Collector
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_peer import cpu_seconds, start_ours  # noqa: E402
from confluent_kafka.admin import NewTopic  # noqa: E402
from e2e_throughput import run_senders  # noqa: E402

from metrics_platform import kafka_clients, kafka_lag  # noqa: E402
from metrics_platform.stack import collector  # noqa: E402
from metrics_platform.stack.process import port_in_use, require_free_ports, wait_until  # noqa: E402

FLOOR_TOPIC = "collector_floor_spans"
# Below the broker's default record limit, as our Collector's batches are below its.
FLOOR_BATCH_BYTES = 800_000


def floor_config(port: int, brokers: str) -> dict:
    """The minimal Collector: OTLP/HTTP in, Kafka out, nothing between (JSON is valid YAML for the Collector)."""
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {
            "kafka": {
                "brokers": brokers.split(","),
                "client_id": "collector-floor",
                "traces": {"topic": FLOOR_TOPIC, "encoding": "otlp_proto"},
                "producer": {"compression": "lz4"},
                "sending_queue": {
                    "enabled": True,
                    "num_consumers": 10,
                    "batch": {
                        "sizer": "bytes",
                        "flush_timeout": "50ms",
                        "min_size": FLOOR_BATCH_BYTES // 2,
                        "max_size": FLOOR_BATCH_BYTES,
                    },
                },
            }
        },
        "service": {
            "telemetry": {"logs": {"level": "warn"}, "metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["kafka"]}},
        },
    }


def load(port: int, pids: dict[str, int], seconds: float, senders: int) -> dict[str, float]:
    """Saturating load on one Collector; accepted spans/s and µs of CPU per accepted span per process."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    accepted = run_senders(port, "collector-floor", seconds, senders, 0.0)
    time.sleep(2.0)  # the last batches leave for Kafka
    if accepted == 0:
        raise RuntimeError(f"the Collector on port {port} accepted nothing")
    row = {"spans/s": accepted / seconds}
    for name, pid in pids.items():
        row[name] = (cpu_seconds(pid) - before[name]) / accepted * 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=33000, help="port base of the stack")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of load per Collector")
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    args = parser.parse_args()

    def report(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    path = start_ours(args.base, report)
    settings = path.settings
    floor_port = args.base + 600
    process = None
    try:
        require_free_ports("the floor Collector", {"OTLP/HTTP": floor_port})
        admin = kafka_clients.admin(settings.kafka)
        admin.create_topics([NewTopic(FLOOR_TOPIC, settings.kafka.partitions, 1)])[FLOOR_TOPIC].result(30)
        config = settings.state_dir / "collector-floor.json"
        config.write_text(json.dumps(floor_config(floor_port, settings.kafka.bootstrap_servers), indent=2))
        log = settings.log_dir / "collector-floor.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(collector.build(settings)), "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(lambda: port_in_use(floor_port), 30, f"the floor Collector on port {floor_port}")

        pids = path.pids()
        report(f"ours: as fast as accepted for {args.seconds:.0f} s")
        ours_pids = {"otelcol": pids["otelcol"], "kafka": pids["kafka"]}
        ours = load(settings.collector.otlp_http_port, ours_pids, args.seconds, args.senders)
        report(f"floor: as fast as accepted for {args.seconds:.0f} s")
        floor = load(floor_port, {"otelcol": process.pid, "kafka": pids["kafka"]}, args.seconds, args.senders)
        # A group that never committed counts every record of the topic as unread: the records delivered.
        records = kafka_lag.total_lag(settings.kafka, "collector-floor-count", FLOOR_TOPIC)
        if records == 0 or "Dropping data" in log.read_text():
            raise RuntimeError(f"the floor Collector did not deliver to Kafka: see {log}")
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        path.stop()

    print()
    print("| Collector | accepted spans/s | Collector µs CPU per span | broker µs CPU per span | together |")
    print("|---|---|---|---|---|")
    for label, row in (
        ("ours: PII policy, fsynced queue, OTLP JSON record per trace", ours),
        (f"floor: no processors, memory queue, otlp_proto record per batch ({records:,} records)", floor),
    ):
        print(
            f"| {label} | {row['spans/s']:,.0f} | {row['otelcol']:.1f} | {row['kafka']:.1f} | "
            f"{row['otelcol'] + row['kafka']:.1f} |"
        )
    print(f"\n{args.senders} senders on the same machine; {args.seconds:.0f} s each.")


if __name__ == "__main__":
    main()
