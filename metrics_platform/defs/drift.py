"""Model drift: daily output length and refusal rate per model, checked against the model's last week."""

from datetime import UTC, date, timedelta

import dagster as dg

from metrics_platform import drift
from metrics_platform.defs.days import DaysConfig
from metrics_platform.defs.resources import ClickHouseResource
from metrics_platform.defs.schema import DRIFT_SCHEMA

GROUP = "model_drift"
DRIFT = dg.AssetKey("model_drift_daily")
SCHEMA = DRIFT_SCHEMA
CHECK_NAME = "model_drift_within_threshold"


class DriftDaysConfig(DaysConfig):
    """Whole UTC days to recompute, [start, end]. Default: today and the 7 days before it."""

    days: int = 8
    """Default window length: the day the check looks at plus its 7-day baseline."""


class DriftCheckConfig(dg.Config):
    """Which day to check and what counts as drift."""

    day: str | None = None
    """Day to compare with its baseline, YYYY-MM-DD; default the latest day in model_drift_daily."""
    length_threshold: float = 0.25
    """Relative change of output-token p50 or mean that counts as drift (0.25 = 25 %)."""
    refusal_threshold_pp: float = 2.0
    """Change of the refusal rate, in percentage points, that counts as drift."""
    min_calls: int = 50
    """LLM calls a day needs to be checked, or to count towards the baseline."""
    baseline_days: int = 7
    min_baseline_days: int = 3

    def thresholds(self) -> drift.Thresholds:
        return drift.Thresholds(
            length_relative=self.length_threshold,
            refusal_pp=self.refusal_threshold_pp,
            min_calls=self.min_calls,
            baseline_days=self.baseline_days,
            min_baseline_days=self.min_baseline_days,
        )


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else format(value, pattern)


@dg.asset(key=DRIFT, group_name=GROUP, deps=[SCHEMA], pool="clickhouse", kinds={"clickhouse"})
def model_drift_daily(
    context: dg.AssetExecutionContext, config: DriftDaysConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    """Per model and day: output length (tokens_completion p50, p95, mean) and refusal rate.

    Shows when a provider changes a model behind the same name: answers getting longer or shorter,
    refusals (refusal attribute, content_filter finish reason, ContentFilter errors) becoming more
    or less frequent. Recomputes the configured days (default: today and the 7 before, the
    `model_drift_within_threshold` check's baseline) from raw events (on a cluster, every shard's through
    the read database); each day is swapped in whole, so re-running is safe.
    """
    days = config.day_list()
    stats = drift.refresh_model_drift(clickhouse.get_client(), days, clickhouse.read_database())
    last = [s for s in stats if s.day == days[-1]]
    context.log.info(f"recomputed {len(days)} day(s) {days[0]}..{days[-1]}: {len(stats)} model-days")
    lines = [
        f"| {s.model} | {s.llm_calls:,} | {s.p50:.0f} | {s.p95:.0f} | {s.mean:.0f} | {s.refusal_rate:.2%} |"
        for s in sorted(last, key=lambda s: -s.llm_calls)
    ]
    return dg.MaterializeResult(
        metadata={
            "start": str(days[0]),
            "end": str(days[-1]),
            "rows_written": dg.MetadataValue.int(len(stats)),
            "models": dg.MetadataValue.int(len({s.model for s in stats})),
            "last_day": dg.MetadataValue.md(
                f"{days[-1]}\n\n| model | LLM calls | p50 tokens | p95 tokens | mean tokens | refusal rate |\n"
                "|---|---|---|---|---|---|\n" + "\n".join(lines)
                if lines
                else f"no LLM calls on {days[-1]}"
            ),
        }
    )


@dg.asset_check(asset=DRIFT, name=CHECK_NAME, blocking=False)
def model_drift_within_threshold(config: DriftCheckConfig, clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """Each model's latest day is in line with its trailing 7 days; warns naming the models that moved.

    Compares output-token p50 and mean (relative change, default 25 %) and refusal rate (absolute,
    default 2 percentage points) with the model's previous 7 days. Days with fewer than
    `min_calls` LLM calls are not judged and do not count towards a baseline; models skipped for
    that are listed too.
    """
    report = drift.evaluate(
        clickhouse.get_client(), config.thresholds(), date.fromisoformat(config.day) if config.day else None
    )
    rows = [
        f"| {m.model} | {m.llm_calls:,} | {m.p50:.0f} | {_fmt(m.baseline_p50, '.0f')} | {m.mean:.0f} | "
        f"{_fmt(m.baseline_mean, '.0f')} | {m.refusal_rate:.2%} | {_fmt(m.baseline_refusal_rate, '.2%')} | "
        f"{'; '.join(m.reasons) or m.skipped or 'ok'} |"
        for m in sorted(report.models, key=lambda m: (not m.drifted, m.skipped is not None, m.model))
    ]
    return dg.AssetCheckResult(
        passed=not report.drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "day": str(report.day) if report.day else "no data",
            "models_compared": len(report.compared),
            "drifting_models": dg.MetadataValue.json([m.model for m in report.drifted]),
            "skipped_models": dg.MetadataValue.json({m.model: m.skipped for m in report.skipped}),
            "details": dg.MetadataValue.md(
                "| model | calls | p50 | baseline p50 | mean | baseline mean | refusals | baseline | verdict |\n"
                "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
                if rows
                else "no models on the day"
            ),
        },
    )


drift_job = dg.define_asset_job(
    "model_drift",
    selection=dg.AssetSelection.assets(DRIFT),
    description="Recompute model drift stats for yesterday and its baseline week, then check yesterday.",
)


@dg.schedule(job=drift_job, cron_schedule="15 1 * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
def daily_model_drift(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every night, once yesterday is complete: recompute it and its 7-day baseline, then check it."""
    yesterday = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(
        run_key=yesterday,
        run_config={
            "ops": {
                "model_drift_daily": {"config": {"end": yesterday, "days": 8}},
                f"model_drift_daily_{CHECK_NAME}": {"config": {"day": yesterday}},
            }
        },
    )


defs = dg.Definitions(
    assets=[model_drift_daily],
    asset_checks=[model_drift_within_threshold],
    jobs=[drift_job],
    schedules=[daily_model_drift],
)
