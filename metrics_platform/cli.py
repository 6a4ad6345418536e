"""``metrics-platform``: run the stack, apply the schema, send demo traffic."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from metrics_platform.settings import Settings

if TYPE_CHECKING:
    from metrics_platform.cluster import Topology


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def unreachable(exc: BaseException) -> str | None:
    """What to tell the user when ``exc`` means ClickHouse or Kafka cannot be reached; None otherwise."""
    from clickhouse_connect.driver.exceptions import OperationalError
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(exc, OperationalError):
        reason = "connection refused" if "Connection refused" in str(exc) else str(exc)[:300]
        return f"ClickHouse is not reachable ({reason}); is the platform up? See `metrics-platform status`."
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        if error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT):
            return f"Kafka is not reachable ({error.str()}); is the platform up? See `metrics-platform status`."
    return None


class _Main(click.Group):
    """The command group: a ClickHouse or Kafka that cannot be reached is a one-line error, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            message = unreachable(exc)
            if message is None:
                raise
            raise click.ClickException(message) from exc


@click.group(cls=_Main)
def main() -> None:
    """Self-hostable metrics pipeline for AI agents: OTLP -> Collector -> Kafka -> ClickHouse."""
    import logging

    from metrics_platform.kafka_clients import LIBRDKAFKA_LOG

    # Commands say themselves what failed (see _Main); librdkafka's retry lines and clickhouse-connect's
    # "Unexpected Http Driver Exception" warning would only bury it.
    LIBRDKAFKA_LOG.disabled = True
    logging.getLogger("clickhouse_connect").setLevel(logging.ERROR)


@main.command()
def install() -> None:
    """Fetch Kafka's jars and build the Collector (cached); start nothing."""
    from metrics_platform.stack import platform
    from metrics_platform.stack.process import StackError

    try:
        platform.install(_settings(), report=click.echo)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--superset/--no-superset", default=True, show_default=True, help="Start Superset and its dashboards.")
@click.option("--topology", default="", help="A local cluster instead, e.g. brokers=3,shards=2 (docs/runbook.md).")
def up(superset: bool, topology: str) -> None:
    """Install (cached) and start Kafka, ClickHouse, the Collector, Dagster and Superset; apply migrations."""
    from metrics_platform.cluster import Topology, TopologyError
    from metrics_platform.stack import dagster_services, network, platform
    from metrics_platform.stack.process import StackError

    settings = _settings()
    try:
        shape = Topology.parse(topology) if topology else None
        platform.up(settings, report=click.echo, with_superset=superset, topology=shape)
    except (StackError, TopologyError) as exc:
        raise click.ClickException(str(exc)) from exc
    if shape is not None and shape.clustered:
        from metrics_platform.stack import topology as local_cluster

        click.echo(
            f"\nThe local cluster ({shape}) is up: `metrics-platform status` lists its servers.\n"
            f"  readers query database {local_cluster.read_database(settings)} at {settings.clickhouse.url}\n"
            f"  Dagster UI           {dagster_services.ui_url(settings)}\n"
            + (_superset_line(settings) + "\n" if superset else "")
            + "  stop with            metrics-platform down"
        )
        return
    c = settings.collector
    grpc = network.host_port(network.connect_host(c.listen_host), c.otlp_grpc_port)
    # Where senders find the bearer token, when the receivers require one.
    token = f"\n{'':23}with 'Authorization: Bearer <{network.otlp_token_file(settings)}>'" if c.auth else ""
    click.echo(
        "\nThe platform is up.\n"
        f"  send OTLP spans to   {c.otlp_http_endpoint} (HTTP) or {grpc} (gRPC){token}\n"
        f"  query ClickHouse at  {settings.clickhouse.url}  (tables agent_events, span_inbox, dead_letters)\n"
        f"  Kafka                {settings.kafka.bootstrap_servers}  (topics {settings.kafka.spans_topic}, "
        f"{settings.kafka.events_topic})\n"
        f"  Dagster UI           {dagster_services.ui_url(settings)}  (assets, backfills, checks, sensors)\n"
        + (_superset_line(settings) + "\n" if superset else "")
        + f"  logs                 {settings.log_dir}\n"
        "  stop with            metrics-platform down"
    )


def _superset_line(settings: Settings) -> str:
    return (
        f"  dashboards           {settings.superset.url}  (Superset: user {settings.superset.admin_user}, "
        f"password in {settings.state_dir / 'secrets' / 'superset_admin_password'})"
    )


@main.command()
def down() -> None:
    """Stop every component that ``up`` started."""
    from metrics_platform.stack import platform

    platform.down(_settings(), report=click.echo)


@main.command()
def status() -> None:
    """Say which components run and whether they answer their health checks."""
    from metrics_platform.stack import platform

    rows = platform.status(_settings())
    for row in rows:
        click.echo(f"{row.name:<15} {'up  ' if row.running else 'DOWN'}  {row.detail}")
    sys.exit(0 if all(r.running for r in rows) else 3)


@main.command()
@click.option("--status", "show_status", is_flag=True, help="List migrations and whether each is applied.")
def migrate(show_status: bool) -> None:
    """Apply pending schema migrations from sql/ (safe to re-run); on a cluster, on every server that needs them."""
    from metrics_platform.stack import topology

    settings = _settings()
    for label, server in topology.migration_servers(settings):
        if label:
            click.echo(f"{label}:")
        _migrate_one(server, show_status)
    if not show_status:
        topology.ensure_read_layers(settings)  # Distributed tables over tables the migrations added


def _migrate_one(settings: Settings, show_status: bool) -> None:
    from tqdm import tqdm

    from metrics_platform import clickhouse, migrations

    ch = clickhouse.client(settings.clickhouse)
    try:
        if show_status:
            for row in migrations.status(ch):
                mark = "applied" if row.applied else "pending"
                click.echo(f"{row.migration.version:04d} {row.migration.name:<28} {mark}")
            return
        pending = [s for s in migrations.status(ch) if not s.applied]
        with tqdm(total=len(pending), unit="migration", disable=not pending) as bar:

            def progress(migration: migrations.Migration, index: int, total: int) -> None:
                bar.set_postfix_str(f"{migration.path.name} {index}/{total}")
                if index == total:
                    bar.update(1)

            applied = migrations.migrate(ch, settings, on_statement=progress)
    except migrations.MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"applied {len(applied)} migration(s)" if applied else "schema up to date")


@main.command()
@click.option(
    "--rate",
    default=50.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Agent requests (traces) per second.",
)
@click.option(
    "--duration",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to send for.",
)
@click.option("--seed", type=int, default=None, help="Make the traffic reproducible.")
@click.option("--endpoint", default=None, help="OTLP/HTTP endpoint (default: the local Collector).")
def demo(rate: float, duration: float, seed: int | None, endpoint: str | None) -> None:
    """Send realistic synthetic agent traffic through the OpenTelemetry SDK."""
    from metrics_platform.demo import run_demo
    from metrics_platform.stack.network import otlp_headers

    settings = _settings()
    url = endpoint or settings.collector.otlp_http_endpoint
    # The receivers' token and CA (METRICS_PLATFORM_OTLP_AUTH, _OTLP_TLS_CA), also for another endpoint.
    headers, ca = otlp_headers(settings), settings.collector.tls_ca or None
    problem = _otlp_problem(url, headers, ca)
    if problem:
        raise click.ClickException(f"nothing sent: the OTLP endpoint {url} {problem}")
    stats = run_demo(url, rate, duration, seed=seed, headers=headers, certificate_file=ca)
    click.echo(str(stats))


def _otlp_problem(endpoint: str, headers: dict[str, str] | None = None, ca_file: str | None = None) -> str | None:
    """Why an OTLP/HTTP endpoint would not take spans (an empty export must get 200), or None."""
    import ssl
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{endpoint.rstrip('/')}/v1/traces",
        data=b"",
        headers={"Content-Type": "application/x-protobuf", **(headers or {})},
    )
    context = ssl.create_default_context(cafile=ca_file) if endpoint.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        return f"answered HTTP {exc.code} to an empty export"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"is not reachable ({reason})"
    return None


@main.command("sample-history")
@click.option("--days", default=7, show_default=True, help="How many days, ending yesterday (UTC).")
@click.option("--events-per-day", default=20_000, show_default=True)
@click.option("--out", "out_dir", type=click.Path(), default=None, help="Default: METRICS_PLATFORM_HISTORY_DIR.")
def sample_history(days: int, events_per_day: int, out_dir: str | None) -> None:
    """Write sample YYYY-MM-DD.jsonl.gz history files to try replays (a few lines are broken on purpose)."""
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from tqdm import tqdm

    from metrics_platform.history_sample import write_day

    settings = _settings()
    directory = Path(out_dir) if out_dir else settings.history_dir
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    for offset in tqdm(range(days, 0, -1), unit="day"):
        write_day(directory, yesterday - timedelta(days=offset - 1), events_per_day, settings.pii_salt())
    click.echo(f"wrote {days} day(s) of history to {directory}")


def _window(start: str, end: str):
    from metrics_platform.rollup_audit import parse_utc

    try:
        window = parse_utc(start), parse_utc(end)
    except ValueError as exc:
        raise click.UsageError(f"--start/--end must be ISO times (UTC), e.g. 2026-11-27T08:00: {exc}") from exc
    if window[1] <= window[0]:
        raise click.UsageError(f"--end {end} is not after --start {start}: the window is empty")
    return window


@main.command()
@click.argument("days", nargs=-1, required=True)
@click.option("--history-dir", type=click.Path(exists=True, file_okay=False), default=None)
def replay(days: tuple[str, ...], history_dir: str | None) -> None:
    """Replay history days (YYYY-MM-DD ...) into Kafka without double-counting (as the Dagster asset)."""
    from datetime import date
    from pathlib import Path

    from tqdm import tqdm

    from metrics_platform import clickhouse
    from metrics_platform import replay as replays

    try:
        chosen = [date.fromisoformat(text) for text in days]
    except ValueError as exc:
        raise click.UsageError(f"days must be YYYY-MM-DD: {exc}") from exc
    settings = _settings()
    directory = Path(history_dir) if history_dir else settings.history_dir
    missing = [str(day) for day in chosen if not replays.history_files(directory, day)]
    if missing:
        raise click.ClickException(
            f"nothing replayed: no history file for {', '.join(missing)} in {directory} "
            "(expected YYYY-MM-DD.jsonl or .jsonl.gz; `metrics-platform sample-history` writes some)"
        )
    ch = clickhouse.client(settings.clickhouse)
    for day in chosen:
        with tqdm(unit="event", desc=str(day)) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            report = replays.replay_day(day, directory, settings, ch, run_id="cli", progress=progress)
        click.echo(
            f"{day}: {report.lines:,} lines, {report.valid:,} valid, {report.rejected:,} rejected, "
            f"{report.already_stored:,} already stored, {report.produced:,} produced"
        )
        for reject in report.rejects[:5]:
            click.echo(f"  {reject.file}:{reject.line}: {reject.reason}")


@main.command()
@click.option("--start", required=True, help="Window start, ISO time (UTC).")
@click.option("--end", required=True, help="Window end, ISO time (UTC).")
@click.option("--rollup", "names", multiple=True, help="Rollup(s) to check (default: all).")
@click.option("--repair", is_flag=True, help="Materialize the rollups for the window's parts that lack them first.")
def audit(start: str, end: str, names: tuple[str, ...], repair: bool) -> None:
    """Compare rollups (projections) with raw events for a window; exit 1 on mismatch. On a local cluster every
    shard is repaired and audited against its own rows (a projection lives in one server's parts)."""
    from metrics_platform import clickhouse, rollup_audit
    from metrics_platform.cluster import merge_audits
    from metrics_platform.rollups import ROLLUPS
    from metrics_platform.stack import topology

    window = _window(start, end)
    unknown = set(names) - set(ROLLUPS)
    if unknown:
        raise click.UsageError(f"unknown rollup(s) {sorted(unknown)}; known: {', '.join(ROLLUPS)}")
    servers = [(label, clickhouse.client(s.clickhouse)) for label, s in topology.servers(_settings())]
    passed = True
    for name in names or tuple(ROLLUPS):
        rollup = ROLLUPS[name]
        for label, ch in servers if repair else ():
            parts = rollup_audit.repair(ch, *window, rollup)
            click.echo(f"{name}: materialized for {parts:,} part(s){f' on {label}' if label else ''}")
        result = merge_audits(*window, [(label, rollup_audit.audit(ch, *window, rollup)) for label, ch in servers])
        passed = passed and result.passed
        click.echo(
            f"{name}: {result.groups:,} groups, {result.raw_spans:,} raw spans, {len(result.mismatches)} mismatch(es), "
            f"{result.parts_without_projection} part(s) without it"
        )
        for m in result.mismatches[:20]:
            click.echo(f"  {m.key} {m.field}: rollup {m.rollup} vs raw {m.raw}")
    sys.exit(0 if passed else 1)


@main.group()
def prices() -> None:
    """The model price table: load it, list unpriced models, reprice past days."""


@prices.command("load")
def prices_load() -> None:
    """Load genai-prices plus the overrides file into ClickHouse (what the Dagster asset model_prices does)."""
    from metrics_platform import clickhouse
    from metrics_platform.prices.load import load_prices
    from metrics_platform.prices.overrides import OverridesError
    from metrics_platform.stack import topology

    settings = _settings()
    # Every server prices its own ingest: a local cluster's shards each get the table.
    for label, server in topology.servers(settings):
        try:
            result = load_prices(clickhouse.client(server.clickhouse), settings.price_overrides)
        except OverridesError as exc:
            raise click.ClickException(f"price overrides not loaded; the prices in force stay:\n{exc}") from exc
        click.echo(
            f"{f'{label}: ' if label else ''}{result.entries:,} price entries for {result.models:,} models, "
            f"{result.aliases:,} model names, {result.overrides} override(s) from {settings.price_overrides}"
        )
    for provider, model in result.seen_unpriced:
        click.echo(f"  seen without a price: {provider or '(no provider)'} {model}")


@prices.command("unpriced")
@click.option("--hours", default=24, show_default=True, help="How far back to look.")
def prices_unpriced(hours: int) -> None:
    """LLM calls whose model has no price in force, by model; exit 1 if there are any."""
    from metrics_platform import clickhouse
    from metrics_platform.cluster import merge_unpriced
    from metrics_platform.prices.load import unpriced_models
    from metrics_platform.stack import topology

    # Per server, summed: the price functions look up each server's own dictionaries.
    servers = topology.servers(_settings())
    found = merge_unpriced([unpriced_models(clickhouse.client(s.clickhouse), hours) for _, s in servers])
    for u in found:
        click.echo(f"{u.provider or '(none)':<16} {u.model or '(none)':<32} {u.response_model or '':<32} {u.calls:>8,}")
    if not found:
        click.echo(f"every LLM call of the last {hours} h has a price")
    sys.exit(1 if found else 0)


@prices.command("recompute")
@click.option("--start", required=True, help="First day, YYYY-MM-DD (UTC).")
@click.option("--end", required=True, help="Last day, YYYY-MM-DD (UTC), inclusive.")
def prices_recompute(start: str, end: str) -> None:
    """Reprice the LLM calls of [start, end] with the prices loaded now (reported cost is kept); on a local
    cluster, each shard reprices its own events."""
    import uuid
    from datetime import date

    from metrics_platform import clickhouse
    from metrics_platform.prices.recompute import recompute_cost
    from metrics_platform.stack import topology

    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise click.UsageError(f"--start/--end must be YYYY-MM-DD: {exc}") from exc
    if last < first:
        raise click.UsageError(f"--end {last} is before --start {first}")
    for label, server in topology.servers(_settings()):
        days = recompute_cost(clickhouse.client(server.clickhouse), first, last, f"cli-{uuid.uuid4().hex[:12]}")
        where = f"{label}: " if label else ""
        for d in days:
            click.echo(
                f"{where}{d.day}: {d.after.llm_calls:,} LLM calls, cost {d.before.cost_usd:.6f} -> "
                f"{d.after.cost_usd:.6f} USD (reported {d.after.reported_usd:.6f}), "
                f"unpriced {d.before.unpriced:,} -> {d.after.unpriced:,}"
            )
        if not days:
            click.echo(f"{where}no LLM calls between {first} and {last}")


@main.command()
def lag() -> None:
    """Consumer lag of ClickHouse's Kafka consumer groups, per partition (on a local cluster, with the broker
    leading it and the shard consuming it, and totals per broker and per shard)."""
    from metrics_platform import kafka_lag
    from metrics_platform.stack import topology

    settings = _settings()
    shape = topology.active(settings)
    if shape is not None:
        _cluster_lag(topology.cluster_settings(settings, shape), shape)
        return
    for group, topic in kafka_lag.clickhouse_groups(settings.kafka).items():
        for p in kafka_lag.group_lag(settings.kafka, group, topic):
            click.echo(
                f"{group:<28} {topic}[{p.partition}] "
                f"committed {p.committed:>10} end {p.high_watermark:>10} lag {p.lag:>8}"
            )


def _cluster_lag(settings: Settings, shape: Topology) -> None:
    from metrics_platform.cluster import lag_totals
    from metrics_platform.stack import topology

    rows = topology.consumer_lag(settings, shape)
    for r in rows:
        click.echo(
            f"{r.group:<28} {r.topic}[{r.partition}] lag {r.lag:>8}  leader broker {r.leader_broker}  "
            f"consumer {r.consumer or '(none: rebalancing)'}"
        )
    per_broker, per_consumer = lag_totals(rows)
    click.echo("lag per leading broker: " + ", ".join(f"broker {b}: {n:,}" for b, n in sorted(per_broker.items())))
    click.echo(
        "lag per consumer:       " + ", ".join(f"{c or '(none)'}: {n:,}" for c, n in sorted(per_consumer.items()))
    )


@main.command()
@click.argument("names", nargs=-1)
@click.option("--rows", default=10, show_default=True, help="Rows to show per question.")
def dashboard(names: tuple[str, ...], rows: int) -> None:
    """Answer the saved dashboard questions in sql/dashboards (all, or the NAMES given)."""
    from metrics_platform import clickhouse, dashboards

    ch = clickhouse.reader(_settings())
    for name in names or tuple(dashboards.available()):
        try:
            answer = dashboards.run(ch, name)
        except KeyError as exc:
            raise click.UsageError(str(exc)) from exc
        click.echo(f"\n{answer.title}  [{answer.name}, {answer.elapsed_ms:.0f} ms]")
        click.echo("  " + " | ".join(answer.columns))
        for row in answer.rows[:rows]:
            click.echo("  " + " | ".join(str(value) for value in row))


@main.command()
def summary() -> None:
    """What has landed in ClickHouse so far, and where to look next."""
    import time

    from metrics_platform import clickhouse

    settings = _settings()
    ch = clickhouse.reader(settings)
    # Spans just sent may still be in the Collector's batch or Kafka: wait until the count settles.
    last, deadline = -1, time.monotonic() + 20
    while time.monotonic() < deadline:
        count = ch.query("SELECT count() FROM agent_events").result_rows[0][0]
        if count == last and count > 0:
            break
        last = count
        time.sleep(2)
    spans, traces, requests, failed, llm_calls, cost = ch.query(
        "SELECT count(), uniqExact(trace_id), countIf(is_request), countIf(is_request AND status != 'ok'), "
        "countIf(kind = 'llm'), sum(cost_usd) FROM agent_events"
    ).result_rows[0]
    waiting = ch.query("SELECT count() FROM span_inbox WHERE ingested_at > (SELECT max(ingested_at) FROM agent_events)")
    dead = ch.query("SELECT count() FROM dead_letters").result_rows[0][0]
    click.echo(
        f"agent_events: {spans:,} spans in {traces:,} traces: {requests:,} requests ({failed:,} failed), "
        f"{llm_calls:,} LLM calls, ${cost:.4f} of LLM cost; {waiting.result_rows[0][0]:,} spans still settling"
    )
    click.echo(f"dead_letters: {dead:,}")
    click.echo("\nRoutes by p95 request latency over the last hour (rollup p_route_minute):")
    rows = ch.query(
        "SELECT route, countIf(is_request) AS n, "
        "round(quantilesTDigestIf(0.5, 0.95)(latency_ms, is_request)[2]) AS p95, "
        "round(countIf(is_request AND status != 'ok') / n * 100, 2) AS error_pct FROM agent_events "
        "WHERE toStartOfMinute(ts) > now() - INTERVAL 1 HOUR GROUP BY route HAVING n > 0 ORDER BY p95 DESC LIMIT 5"
    ).result_rows
    for route, calls, p95, error_pct in rows:
        click.echo(f"  {route or '(none)':<32} {calls:>8,} requests  p95 {p95:>8,.0f} ms  errors {error_pct:>5}%")
    password_file = settings.state_dir / "secrets" / "clickhouse_reader_password"  # written by settings
    click.echo(
        "\nQuery it yourself as the read-only account:\n"
        f'  curl -u {settings.clickhouse.reader_user}:"$(cat {password_file})" '
        f"'{settings.clickhouse.url}/?database={clickhouse.read_database(settings)}' "
        "--data-binary 'SELECT kind, count() FROM agent_events GROUP BY kind'"
    )
    from metrics_platform.bi.spec import load_all
    from metrics_platform.stack import superset

    if superset.healthy(settings):
        click.echo("\nDashboards:\n" + _superset_line(settings).replace("dashboards ", "Superset   "))
        for board in load_all():
            click.echo(f"  {board.title:<19}  {settings.superset.url}/superset/dashboard/{board.slug}/")


@main.group()
def dashboards() -> None:
    """Superset dashboards defined in deploy/superset/dashboards/*.yaml."""


@dashboards.command("provision")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
def dashboards_provision(files: tuple[str, ...]) -> None:
    """Create or update the dashboards (all files, or the FILES given) in the running Superset."""
    from pathlib import Path

    from metrics_platform.bi import provision, spec
    from metrics_platform.bi.client import SupersetError

    settings = _settings()
    try:
        chosen = [spec.load(Path(f)) for f in files] if files else None
        provision.provision(settings, chosen, report=click.echo)
    except (spec.SpecError, SupersetError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@dashboards.command("portal")
@click.option("--port", type=int, default=None, help="Default: METRICS_PLATFORM_SUPERSET_PORTAL_PORT (8089).")
def dashboards_portal(port: int | None) -> None:
    """Serve the demo customer portal: http://127.0.0.1:PORT/?account_id=ID embeds that account's usage."""
    from metrics_platform.bi import portal

    settings = _settings()
    server = portal.server(settings, port)
    click.echo(f"customer portal on http://127.0.0.1:{server.server_address[1]}/?account_id=<billing account id>")
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        server.serve_forever()


@dashboards.command("screenshot")
@click.argument("slugs", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="docs/screenshots", show_default=True)
def dashboards_screenshot(slugs: tuple[str, ...], out_dir: str) -> None:
    """Render dashboards in headless Chromium and save superset-<slug>.png (default: every file's)."""
    from pathlib import Path

    from metrics_platform.bi import render, spec

    settings = _settings()
    chosen = slugs or tuple(d.slug for d in spec.load_all())
    pages = [(f"/superset/dashboard/{slug}/", Path(out_dir) / f"superset-{slug}.png") for slug in chosen]
    try:
        for page in render.render(settings, pages):
            state = "timed out" if page.timed_out else "drawn"
            click.echo(f"{page.file}: {page.charts} charts {state}, errors: {page.errors or 'none'}")
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    main()
