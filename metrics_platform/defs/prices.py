"""Model prices: the price table (dataset + overrides), its unpriced-models check, cost recompute."""

import uuid
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from metrics_platform.cluster import merge_unpriced
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings
from metrics_platform.defs.schema import AGENT_EVENTS_SCHEMA, PRICES_SCHEMA
from metrics_platform.prices import load, recompute
from metrics_platform.prices.entries import DATASET_SOURCE
from metrics_platform.settings import Settings

MAX_ROWS_SHOWN = 25


@dg.asset(
    group_name="prices",
    deps=[PRICES_SCHEMA, AGENT_EVENTS_SCHEMA],
    pool="clickhouse",
    kinds={"clickhouse", "python"},
)
def model_prices(context: dg.AssetExecutionContext, platform: PlatformSettings, clickhouse: ClickHouseResource):
    """The price table every LLM span is priced with: genai-prices plus the repository's overrides.

    Loads the genai-prices dataset (input, output, cache-read, cache-write and reasoning prices per
    provider and model, with the dates prices changed) and `data/prices/overrides.yaml`
    (METRICS_PLATFORM_PRICE_OVERRIDES) into `model_prices`, and every name the dataset spells out,
    plus every model name seen in agent_events that genai-prices resolves, into
    `model_price_aliases`; both dictionaries are reloaded, so new spans are priced with it at once.
    An invalid overrides file fails the run (every problem with its line) and leaves the prices in
    force untouched. Past days keep their cost until `cost_recompute` runs for them. On a local cluster
    every shard gets the table (each prices its own ingest); the metadata is the last shard's.
    """
    settings = platform.get()
    for label, ch in clickhouse.get_server_clients():
        result = load.load_prices(ch, settings.price_overrides)
        context.log.info(
            f"{label or 'ClickHouse'}: loaded {result.entries:,} price entries for {result.models:,} models, "
            f"{result.aliases:,} names, {result.overrides} override(s)"
        )
    unpriced = "\n".join(f"| {p or '—'} | {m} |" for p, m in result.seen_unpriced[:MAX_ROWS_SHOWN])
    return dg.MaterializeResult(
        metadata={
            "source": DATASET_SOURCE,
            "overrides_file": str(settings.price_overrides),
            "entries": result.entries,
            "models": result.models,
            "aliases": result.aliases,
            "overrides": result.overrides,
            "seen_names_resolved": result.seen_resolved,
            "seen_names_unpriced": dg.MetadataValue.md(
                f"| provider | model |\n|---|---|\n{unpriced}" if unpriced else "none"
            ),
        }
    )


@dg.asset_check(asset=model_prices, name="models_without_price", blocking=False)
def models_without_price(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """WARN when LLM calls of the last day used a model without a price in force: their cost is $0.

    Lists each model (as the spans name it) with its call count. Fix by adding it to
    data/prices/overrides.yaml (or waiting for a genai-prices release), materializing
    `model_prices`, then `cost_recompute` for the affected days.
    """
    # Per server: the price functions look up each server's own dictionaries (not in the read database).
    unpriced = merge_unpriced([load.unpriced_models(ch, hours=24) for _, ch in clickhouse.get_server_clients()])
    rows = "\n".join(
        f"| {u.provider or '—'} | {u.model or '—'} | {u.response_model or '—'} | {u.calls:,} |"
        for u in unpriced[:MAX_ROWS_SHOWN]
    )
    return dg.AssetCheckResult(
        passed=not unpriced,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "unpriced_models": len(unpriced),
            "unpriced_calls": sum(u.calls for u in unpriced),
            "models": dg.MetadataValue.md(
                f"| provider | model | response model | calls (24 h) |\n|---|---|---|---|\n{rows}" if rows else "none"
            ),
        },
    )


_settings = Settings.from_env()
# Days that can still hold events: the retention window, up to today.
retained_days = dg.DailyPartitionsDefinition(
    start_date=(datetime.now(UTC).date() - timedelta(days=_settings.retention_days)).isoformat(), end_offset=1
)


@dg.asset(
    group_name="prices",
    partitions_def=retained_days,
    # A range of days is one mutation per run: each part of agent_events is rewritten once.
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[model_prices],
    pool="clickhouse",
    kinds={"clickhouse"},
)
def cost_recompute(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource) -> dg.MaterializeResult:
    """Reprices the LLM calls of the selected days with the prices loaded now.

    Computed cost (`cost_computed_usd`, and `cost_usd` where the span reported none) is recomputed
    in raw events; the rollups are projections of the same parts, so they change with them.
    Reported cost is never touched. Idempotent; one `cost_recompute_audit` row per day with the
    totals before and after. Run it after a price change or an override for the days it affects. On a local
    cluster every shard reprices its own events (one row per shard and day).
    """
    first, last = (date.fromisoformat(k) for k in (context.partition_key_range.start, context.partition_key_range.end))
    run_id = context.run.run_id if context.run else uuid.uuid4().hex
    days = [d for _, ch in clickhouse.get_server_clients() for d in recompute.recompute_cost(ch, first, last, run_id)]
    lines = "\n".join(
        f"| {d.day} | {d.after.llm_calls:,} | {d.before.cost_usd:.6f} | {d.after.cost_usd:.6f} | "
        f"{d.after.reported_usd:.6f} | {d.before.unpriced:,} | {d.after.unpriced:,} |"
        for d in days
    )
    for d in days:
        context.log.info(f"{d.day}: cost {d.before.cost_usd} -> {d.after.cost_usd} ({d.after.llm_calls:,} LLM calls)")
    return dg.MaterializeResult(
        metadata={
            "days": len(days),
            "llm_calls": sum(d.after.llm_calls for d in days),
            "cost_before_usd": float(sum(d.before.cost_usd for d in days)),
            "cost_after_usd": float(sum(d.after.cost_usd for d in days)),
            "per_day": dg.MetadataValue.md(
                "| day | LLM calls | cost before | cost after | reported | unpriced before | unpriced after |\n"
                "|---|---|---|---|---|---|---|\n" + lines
                if lines
                else "no LLM calls on these days"
            ),
        }
    )


refresh_prices_job = dg.define_asset_job(
    "refresh_prices",
    selection=dg.AssetSelection.assets(model_prices),
    description="Reload the price table (dataset + overrides) and check for models without a price.",
)
daily_price_refresh = dg.ScheduleDefinition(
    name="daily_price_refresh",
    job=refresh_prices_job,
    cron_schedule="17 4 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[model_prices, cost_recompute],
    asset_checks=[models_without_price],
    jobs=[refresh_prices_job],
    schedules=[daily_price_refresh],
)
