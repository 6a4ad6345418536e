"""Enrichment: billing accounts and feature flags from files or URLs, and cost by billing account."""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import dagster as dg

from metrics_platform.cluster import merge_day_costs
from metrics_platform.defs.days import DaysConfig
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings
from metrics_platform.defs.schema import AGENT_EVENTS_SCHEMA, ENRICHMENT_SCHEMA
from metrics_platform.enrichment.billing import default_billing_accounts_source, load_billing_accounts, plan_summary
from metrics_platform.enrichment.cost import refresh_cost_by_account, top_accounts, unassigned_cost
from metrics_platform.enrichment.flags import (
    default_feature_flags_source,
    flag_targets_without_traffic,
    load_feature_flags,
)
from metrics_platform.enrichment.loads import LoadReport
from metrics_platform.enrichment.sources import DEFAULT_TIMEOUT_S, SourceError

GROUP = "enrichment"
BILLING = dg.AssetKey("billing_accounts")
FLAGS = dg.AssetKey("feature_flags")
COST = dg.AssetKey("cost_by_account_daily")
SCHEMA = ENRICHMENT_SCHEMA
MAX_REJECTS_SHOWN = 50
TOP_ACCOUNTS_SHOWN = 15


class SourceConfig(dg.Config):
    """Where to load reference data from, for one run."""

    source: str | None = None
    """File path (CSV, JSON, JSON Lines) or http(s) URL. Default: the dataset's
    METRICS_PLATFORM_*_SOURCE variable, else its sample (see the asset's description)."""
    timeout_seconds: float = DEFAULT_TIMEOUT_S
    """Limit for downloading a URL source, start to end."""
    allow_empty: bool = False
    """Replace the table even if the source has no valid row (otherwise the load fails and the
    current rows are kept, so a truncated export cannot wipe the mapping)."""


class CostShareConfig(DaysConfig):
    """The window to check, and how much cost may belong to users without a billing account."""

    max_unassigned_share: float = 0.10


@contextmanager
def _as_failure() -> Iterator[None]:
    # A source that cannot be used is an operator's data problem, not a bug: show the message
    # (which names the source and line) without a Python traceback.
    try:
        yield
    except SourceError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _run_id(context: dg.AssetExecutionContext) -> str:
    return context.run.run_id if context.run else uuid.uuid4().hex


def _rejects_md(report: LoadReport) -> dg.MetadataValue:
    if not report.rejects:
        return dg.MetadataValue.md("no rejects")
    lines = [f"| {r.location} | {r.reason.replace('|', '/')[:200]} |" for r in report.rejects[:MAX_REJECTS_SHOWN]]
    more = len(report.rejects) - MAX_REJECTS_SHOWN
    tail = f"\n\n…and {more} more" if more > 0 else ""
    return dg.MetadataValue.md("| where | reason |\n|---|---|\n" + "\n".join(lines) + tail)


def _load_on_every_server(
    context: dg.AssetExecutionContext,
    config: SourceConfig,
    clickhouse: ClickHouseResource,
    load: Callable[..., LoadReport],
    source: str,
    what: str,
) -> LoadReport:
    """Load ``source`` with ``load`` into every server: on a local cluster each shard keeps a full copy, which
    its own cost_by_account_daily joins its events to (readers see one copy through a view)."""
    report = None
    for label, ch in clickhouse.get_server_clients():
        with _as_failure():
            report = load(
                ch, source, timeout_s=config.timeout_seconds, run_id=_run_id(context), allow_empty=config.allow_empty
            )
        where = f" into {label}" if label else ""
        context.log.info(f"{report.source}: loaded {report.loaded:,} {what}{where}, rejected {len(report.rejects):,}")
    assert report is not None, "no ClickHouse server to load into"
    return report


def _load_result(report: LoadReport, extra: dict[str, dg.MetadataValue]) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "source": report.source,
            "records": dg.MetadataValue.int(report.records),
            "rows_loaded": dg.MetadataValue.int(report.loaded),
            "rows_rejected": dg.MetadataValue.int(len(report.rejects)),
            "rejects": _rejects_md(report),
            **extra,
        },
        # Reported with the load rather than re-read later, so it describes exactly this source.
        check_results=[
            dg.AssetCheckResult(
                check_name="source_rows_valid",
                passed=not report.rejects,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rows_rejected": len(report.rejects), "source": report.source},
            )
        ],
    )


@dg.asset(
    key=BILLING,
    group_name=GROUP,
    deps=[SCHEMA],
    pool="clickhouse",
    kinds={"clickhouse"},
    check_specs=[
        dg.AssetCheckSpec(
            "source_rows_valid", asset=BILLING, description="Every record of the source was a valid account row."
        )
    ],
)
def billing_accounts(
    context: dg.AssetExecutionContext,
    config: SourceConfig,
    platform: PlatformSettings,
    clickhouse: ClickHouseResource,
) -> dg.MaterializeResult:
    """Which billing account (and plan) each user belongs to, so cost can be reported per customer.

    Loaded from `config.source`, else METRICS_PLATFORM_BILLING_ACCOUNTS_SOURCE, else
    data/enrichment/billing_accounts.csv, else a generated demo sample mapping the demo's users
    (written to the state directory). Columns: user_id_hash (the Collector's keyed SHA-256),
    account_id, account_name, plan. Bad rows are rejected with their line and reason (see
    metadata and the `source_rows_valid` check); the table is replaced atomically.
    """
    settings = platform.get()
    source = config.source or default_billing_accounts_source(settings.state_dir, settings.pii_salt())
    report = _load_on_every_server(context, config, clickhouse, load_billing_accounts, source, "accounts")
    plans = plan_summary(clickhouse.get_reader())
    return _load_result(
        report,
        {
            "accounts": dg.MetadataValue.int(sum(accounts for accounts, _ in plans.values())),
            "plans": dg.MetadataValue.md(
                "| plan | accounts | users |\n|---|---|---|\n"
                + "\n".join(f"| {plan} | {accounts:,} | {users:,} |" for plan, (accounts, users) in plans.items())
            ),
        },
    )


@dg.asset(
    key=FLAGS,
    group_name=GROUP,
    deps=[SCHEMA],
    pool="clickhouse",
    kinds={"clickhouse"},
    check_specs=[
        dg.AssetCheckSpec(
            "source_rows_valid", asset=FLAGS, description="Every record of the source was a valid flag row."
        )
    ],
)
def feature_flags(
    context: dg.AssetExecutionContext, config: SourceConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    """Feature flags per agent or route (flag -> enabled, variant), so metrics can be split by experiment arm.

    Loaded from `config.source`, else METRICS_PLATFORM_FEATURE_FLAGS_SOURCE, else
    data/enrichment/feature_flags.json. Rows: scope (agent|route), target, flag, enabled,
    variant; JSON may also nest them as {"agents": {name: {flag: value}}, "routes": {...}}.
    Metadata lists flag targets without traffic in the last 7 days (usually typos).
    """
    source = config.source or default_feature_flags_source()
    report = _load_on_every_server(context, config, clickhouse, load_feature_flags, source, "flags")
    idle = flag_targets_without_traffic(clickhouse.get_reader())
    return _load_result(
        report,
        {"targets_without_traffic_7d": dg.MetadataValue.json([f"{scope}:{target}" for scope, target in idle])},
    )


@dg.asset(
    key=COST,
    group_name=GROUP,
    deps=[BILLING, AGENT_EVENTS_SCHEMA],
    pool="clickhouse",
    kinds={"clickhouse"},
)
def cost_by_account_daily(
    context: dg.AssetExecutionContext, config: DaysConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    """Cost, calls, tokens and errors per billing account and day: the "cost by customer" answer.

    Recomputes the configured days (default: the last 3, today included) from raw events and
    the current billing accounts; each day is swapped in whole, so re-running is safe and a
    reloaded account mapping re-attributes those days. Steps without a user (tool calls) count
    for the user of their trace; users without an account are under 'unassigned'.

    On a local cluster each shard recomputes its own events (a trace lives on one shard), and readers sum the
    shards' rows; `users` then counts a user once per shard that holds some of their traces.
    """
    days = config.day_list()
    per_server = [refresh_cost_by_account(ch, days) for _, ch in clickhouse.get_server_clients()]
    totals = [merge_day_costs(same_day) for same_day in zip(*per_server, strict=True)]
    top = top_accounts(clickhouse.get_reader(), days[0], days[-1], TOP_ACCOUNTS_SHOWN)
    cost = sum((t.cost_usd for t in totals), start=Decimal(0))
    unassigned = sum((t.unassigned_cost_usd for t in totals), start=Decimal(0))
    context.log.info(f"recomputed {len(days)} day(s) {days[0]}..{days[-1]}: ${cost:.2f}, ${unassigned:.2f} unassigned")
    day_lines = [
        f"| {t.day} | {t.accounts} | {t.calls:,} | {t.cost_usd:.4f} | {t.unassigned_share:.1%} |" for t in totals
    ]
    account_lines = [
        f"| {a.account_id} | {a.account_name.replace('|', '/')} | {a.plan} | {a.calls:,} | {a.errors:,} | "
        f"{a.tokens:,} | {a.cost_usd:.4f} |"
        for a in top
    ]
    return dg.MaterializeResult(
        metadata={
            "start": str(days[0]),
            "end": str(days[-1]),
            "rows_written": dg.MetadataValue.int(sum(t.accounts for t in totals)),
            "calls": dg.MetadataValue.int(sum(t.calls for t in totals)),
            "cost_usd": dg.MetadataValue.float(float(cost)),
            "unassigned_cost_usd": dg.MetadataValue.float(float(unassigned)),
            "days": dg.MetadataValue.md(
                "| day | accounts | calls | cost USD | unassigned |\n|---|---|---|---|---|\n" + "\n".join(day_lines)
            ),
            "top_accounts": dg.MetadataValue.md(
                "| account | name | plan | calls | errors | tokens | cost USD |\n|---|---|---|---|---|---|---|\n"
                + "\n".join(account_lines)
                if account_lines
                else "no events in the window"
            ),
        }
    )


@dg.asset_check(asset=COST, blocking=False)
def cost_attributed_to_accounts(config: CostShareConfig, clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """Most cost belongs to a known billing account: warns when the 'unassigned' share is too high.

    A rising unassigned share means the billing export is stale (new customers missing) or user
    ids are no longer hashed the way the accounts were (a changed PII salt). Threshold:
    `max_unassigned_share` (default 10 %) of the cost over the window (default the last 3 days).
    """
    days = config.day_list()
    total, unassigned = unassigned_cost(clickhouse.get_reader(), days[0], days[-1])
    share = float(unassigned / total) if total else 0.0
    return dg.AssetCheckResult(
        passed=share <= config.max_unassigned_share,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "start": str(days[0]),
            "end": str(days[-1]),
            "cost_usd": float(total),
            "unassigned_cost_usd": float(unassigned),
            "unassigned_share": dg.MetadataValue.float(share),
            "max_unassigned_share": config.max_unassigned_share,
        },
    )


enrichment_job = dg.define_asset_job(
    "refresh_enrichment",
    selection=dg.AssetSelection.assets(BILLING, FLAGS, COST),
    description="Reload billing accounts and feature flags, then recompute cost by account for the last 3 days.",
)
enrichment_schedule = dg.ScheduleDefinition(
    name="enrichment_schedule",
    job=enrichment_job,
    cron_schedule="41 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[billing_accounts, feature_flags, cost_by_account_daily],
    asset_checks=[cost_attributed_to_accounts],
    jobs=[enrichment_job],
    schedules=[enrichment_schedule],
)
