"""Replaying historical JSON Lines into Kafka, one daily partition at a time."""

import contextlib
import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from metrics_platform import replay
from metrics_platform.defs.resources import ClickHouseResource, PlatformSettings
from metrics_platform.settings import Settings

REJECT_SAMPLES = 20


class ReplayConfig(dg.Config):
    """Overrides for one replay run."""

    history_dir: str | None = None
    """Directory of YYYY-MM-DD.jsonl[.gz] files; default METRICS_PLATFORM_HISTORY_DIR."""


_HISTORY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl(\.gz)?")


def first_history_day(history_dir: Path) -> date | None:
    """The earliest day with a ``YYYY-MM-DD.jsonl[.gz]`` file in ``history_dir`` (None: no file)."""
    days = []
    for path in history_dir.glob("*.jsonl*") if history_dir.is_dir() else []:
        match = _HISTORY_FILE.fullmatch(path.name)
        if match:
            with contextlib.suppress(ValueError):  # 2026-13-45.jsonl is not a day
                days.append(date.fromisoformat(match.group(1)))
    return min(days, default=None)


def partitions_start(settings: Settings) -> str:
    """METRICS_PLATFORM_HISTORY_START_DATE if set, else the first day with history, else today (UTC).

    Why a computed start rather than dynamic partitions: a daily definition keeps Dagster's calendar,
    day ranges and single-run backfills over contiguous days, which dynamic partitions (ordered by
    when they were added) do not; the start is found again whenever the code location loads, so older
    files dropped into the history directory appear after a reload. Days between files show as
    missing, which they are.
    """
    if settings.history_start_date:
        return settings.history_start_date
    first = first_history_day(settings.history_dir)
    return (first or datetime.now(UTC).date()).isoformat()


daily = dg.DailyPartitionsDefinition(start_date=partitions_start(Settings.from_env()), end_offset=1)


@dg.asset(
    group_name="replay",
    partitions_def=daily,
    # A range of days runs in one process: the consumer-lag wait and the producer are paid once.
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, jitter=dg.Jitter.PLUS_MINUS),
    pool="kafka",
    kinds={"kafka", "clickhouse"},
    deps=[dg.AssetKey("kafka_topics")],
)
def historical_replay(
    context: dg.AssetExecutionContext,
    config: ReplayConfig,
    platform: PlatformSettings,
    clickhouse: ClickHouseResource,
) -> dg.MaterializeResult:
    """Replays a day's history files (YYYY-MM-DD.jsonl / .jsonl.gz) into the events topic.

    Each line is checked against the flat event contract; rejects are kept in `dead_letters`
    (source `replay:<file>`, offset = line number) with their reason. Events already stored for
    that day (same trace_id + span_id) are skipped, after waiting for ClickHouse to consume the
    topic, so replaying a day twice or a partly ingested day never double-counts raw events or
    rollups. Every replay is recorded in `replay_audit`. Safe to re-run.
    """
    settings = platform.get()
    history_dir = Path(config.history_dir).resolve() if config.history_dir else settings.history_dir
    ch = clickhouse.get_client()
    run_id = context.run.run_id if context.run else uuid.uuid4().hex
    totals = {"lines": 0, "valid": 0, "rejected": 0, "already_stored": 0, "produced": 0}
    per_day: list[str] = []
    samples: list[replay.Reject] = []
    for key in context.partition_keys:
        day = date.fromisoformat(key)

        def progress(done: int, total: int, day: date = day) -> None:
            context.log.info(f"{day}: produced {done:,}/{total:,}")

        report = replay.replay_day(day, history_dir, settings, ch, run_id=run_id, progress=progress)
        if not report.files:
            context.log.warning(f"{day}: no {day}.jsonl or {day}.jsonl.gz in {history_dir}; nothing to replay")
        for name in totals:
            totals[name] += getattr(report, name)
        samples.extend(report.rejects[: REJECT_SAMPLES - len(samples)])
        per_day.append(
            f"| {day} | {', '.join(report.files) or '—'} | {report.lines:,} | {report.valid:,} | "
            f"{report.rejected:,} | {report.already_stored:,} | {report.produced:,} |"
        )
        context.log.info(
            f"{day}: {report.lines:,} lines, {report.valid:,} valid, {report.rejected:,} rejected, "
            f"{report.already_stored:,} already stored, {report.produced:,} produced"
        )
    table = "| day | files | lines | valid | rejected | already stored | produced |\n|---|---|---|---|---|---|---|\n"
    reject_table = "| file | line | reason |\n|---|---|---|\n" + "\n".join(
        f"| {r.file} | {r.line} | {r.reason.replace('|', '/')[:200]} |" for r in samples
    )
    return dg.MaterializeResult(
        metadata={
            **{name: dg.MetadataValue.int(value) for name, value in totals.items()},
            "history_dir": str(history_dir),
            "days": dg.MetadataValue.md(table + "\n".join(per_day)),
            "reject_samples": dg.MetadataValue.md(reject_table if samples else "no rejects"),
        }
    )


defs = dg.Definitions(assets=[historical_replay])
