"""Dashboard query latency at scale, on a private embedded ClickHouse filled with synthetic events.

Starts its own embedded ClickHouse (own port and state directory, no Kafka needed), applies the
migrations, inserts --rows spans spread over 30 days into agent_events with INSERT ... SELECT (the
rollup projections are built with them, as from the finalizer), then answers every saved dashboard question
--runs times and prints p50/p95 latency. The private state is removed afterwards unless --keep.

    .venv/bin/python bench/dashboard_queries.py --rows 30000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

# A private instance: never the user's data, never their ports. Kafka engine tables point at a
# closed port and simply stay idle.
_STATE = Path(tempfile.mkdtemp(prefix="mp-bench-"))
os.environ.update(
    METRICS_PLATFORM_STATE_DIR=str(_STATE),
    METRICS_PLATFORM_CLICKHOUSE_HTTP_PORT=os.environ.get("BENCH_CLICKHOUSE_HTTP_PORT", "38123"),
    METRICS_PLATFORM_CLICKHOUSE_TCP_PORT=os.environ.get("BENCH_CLICKHOUSE_TCP_PORT", "39000"),
    METRICS_PLATFORM_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
)
for name in ("CLICKHOUSE_URL", "CLICKHOUSE_HOST"):
    os.environ.pop(name, None)

from metrics_platform import clickhouse, dashboards, migrations  # noqa: E402
from metrics_platform.settings import Settings  # noqa: E402
from metrics_platform.stack import clickhouse_embedded  # noqa: E402

# 5 services with 8 routes each, 3 envs, 20 agents, 8 models over 4 providers, 50k users, 3 % errors,
# latency log-normal around 400 ms (performance.md's shape), as the finalizer writes spans: traces of four
# spans (one in eight a request, then LLM calls, tool calls and agent steps) whose spans share the trace's
# service, env, route, agent and user (attribution gives them their request's), a route belonging to one
# service. ingested_at follows ts (live traffic), so the table has one partition per day as in production.
_FILL = """
INSERT INTO agent_events
    (ts, trace_id, span_id, parent_span_id, name, kind, is_request, span_kind, service, env, agent, operation,
     model, provider, route, tool, user_id_hash, status, error_type, latency_ms, tokens_prompt, tokens_completion,
     tokens_cache_read, cost_usd, cost_computed_usd, cost_source, attrs, ingested_at, inbox_block)
WITH intDiv(number, 4) AS trace_n, cityHash64(trace_n, 7) % 40 AS route_n
SELECT
    now64(3) - toIntervalMillisecond(1000 + cityHash64(trace_n, 1) % (30 * 86400000) - number % 4 * 100) AS ts,
    lower(hex(reinterpretAsFixedString(cityHash64(trace_n, 1))))
        || lower(hex(reinterpretAsFixedString(cityHash64(trace_n, 3)))) AS trace_id,
    lower(hex(reinterpretAsFixedString(cityHash64(number, 2)))) AS span_id,
    if(number % 4 = 0, '', lower(hex(reinterpretAsFixedString(cityHash64(number - number % 4, 2))))) AS parent_span_id,
    kind AS name,
    ['request', 'llm', 'llm', 'tool', 'llm', 'agent', 'tool', 'llm'][1 + number % 8] AS kind,
    kind = 'request' AS is_request,
    if(kind = 'request', 'server', if(kind = 'llm', 'client', 'internal')) AS span_kind,
    concat('svc-', toString(route_n % 5)) AS service,
    ['prod', 'staging', 'dev'][1 + cityHash64(trace_n, 4) % 3] AS env,
    concat('agent-', toString(route_n % 20)) AS agent,
    multiIf(kind = 'llm', 'chat', kind = 'tool', 'execute_tool', kind = 'agent', 'invoke_agent', '') AS operation,
    if(kind = 'llm', concat('model-', toString(rand(6) % 8)), '') AS model,
    if(kind = 'llm', ['openai', 'anthropic', 'google', 'groq'][1 + (rand(6) % 8) % 4], '') AS provider,
    concat('POST /v1/route-', toString(route_n)) AS route,
    if(kind = 'tool', concat('tool-', toString(rand(12) % 10)), '') AS tool,
    lower(hex(SHA256(concat('salt', toString(cityHash64(trace_n, 8) % 50000))))) AS user_id_hash,
    if(rand(9) % 100 < 3, 'error', 'ok') AS status,
    if(status = 'error', 'Timeout', '') AS error_type,
    toUInt32(least(exp(6 + randNormal(0, 1)), 600000)) AS latency_ms,
    toUInt32(if(kind = 'llm', rand(10) % 4000, 0)) AS tokens_prompt,
    toUInt32(if(kind = 'llm', rand(11) % 800, 0)) AS tokens_completion,
    toUInt32(tokens_prompt * (rand(13) % 50) / 100) AS tokens_cache_read,
    toDecimal64((tokens_prompt * 2 + tokens_completion * 8) / 1e6, 10) AS cost_usd,
    cost_usd AS cost_computed_usd,
    if(kind = 'llm', 'computed', '') AS cost_source,
    '{}' AS attrs,
    ts AS ingested_at,
    0 AS inbox_block
FROM numbers({offset:UInt64}, {count:UInt64})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000_000)
    parser.add_argument("--runs", type=int, default=20, help="answers per question")
    parser.add_argument("--keep", action="store_true", help=f"keep the private state ({_STATE})")
    args = parser.parse_args()
    # A terminated bench must still stop its private server (the finally below), not orphan it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = Settings.from_env()
    clickhouse_embedded.start(settings)
    try:
        ch = clickhouse.client(settings.clickhouse, send_receive_timeout=3600)
        migrations.migrate(ch, settings)
        chunk = 2_000_000
        started = time.perf_counter()
        with tqdm(total=args.rows, unit="row", unit_scale=True, desc="insert") as bar:
            for offset in range(0, args.rows, chunk):
                count = min(chunk, args.rows - offset)
                ch.command(_FILL, parameters={"offset": offset, "count": count})
                bar.update(count)
        insert_s = time.perf_counter() - started
        # The steady state after background merges; a freshly inserted table has many small parts.
        ch.command("OPTIMIZE TABLE agent_events FINAL")
        # Cost by user over 30 days reads a table refreshed every 5 minutes (sql/0014): refresh it now.
        ch.command("SYSTEM REFRESH VIEW refresh_user_cost_30d")
        ch.command("SYSTEM WAIT VIEW refresh_user_cost_30d")
        sizes = dict(
            ch.query(
                "SELECT name, sum(rows) FROM system.projection_parts WHERE active AND database = currentDatabase() "
                "AND table = 'agent_events' GROUP BY name"
            ).result_rows
        )
        print(
            f"\ninserted {args.rows:,} events in {insert_s:.0f} s ({args.rows / insert_s:,.0f} rows/s, "
            "every rollup projection included)"
        )
        print("rollup rows: " + ", ".join(f"{name} {rows:,}" for name, rows in sorted(sizes.items())))
        print("\n| question | p50 ms | p95 ms | rows returned |\n|---|---|---|---|")
        for name in dashboards.available():
            dashboards.run(ch, name)  # warm-up
            timings = [dashboards.run(ch, name).elapsed_ms for _ in range(args.runs)]
            answer = dashboards.run(ch, name)
            p95 = statistics.quantiles(timings, n=20, method="inclusive")[-1]
            print(f"| {name} | {statistics.median(timings):.0f} | {p95:.0f} | {len(answer.rows)} |")
    finally:
        clickhouse_embedded.stop(settings)
        if not args.keep:
            shutil.rmtree(_STATE, ignore_errors=True)


if __name__ == "__main__":
    main()
