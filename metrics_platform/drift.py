"""Model drift: is a model answering differently than it did last week?

Providers change models behind a stable name (new snapshots, new safety filters). The first
visible symptoms are answers getting longer or shorter and refusals becoming more or less
frequent. ``refresh_model_drift`` stores, per model and day, the output-length distribution and
the refusal rate in ``model_drift_daily``; ``evaluate`` compares a day with the model's trailing
days and names the models that moved beyond the thresholds.

What counts, on ``agent_events``:

* an LLM call: a span of kind ``llm`` that produced output (tokens_completion > 0), declares a
  generation operation (chat, text_completion, generate_content), or is a refusal — embeddings
  are not;
* a refusal: attribute ``refusal`` true (bool or string), ``gen_ai.response.finish_reasons``
  containing ``content_filter`` (an array in flat events; the OTLP path stores the OTLP array's
  JSON text, ``{"values":[{"stringValue":"content_filter"}]}``), or error_type ``ContentFilter``;
* output length: tokens_completion of calls that produced output (p50, p95 by t-digest; mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from clickhouse_connect.driver.client import Client

from metrics_platform.table_swap import replace_day_partitions

GENERATION_OPERATIONS = ("chat", "text_completion", "generate_content")

# attrs is a JSON column: a path's value is Dynamic, and toString gives 'true' for both the bool
# and the string the OTLP path writes, and the text of an array (or of the OTLP array JSON), so a
# substring test covers every encoding of finish_reasons seen on both ingest paths.
REFUSAL_SQL = """(
    lower(toString(attrs.refusal)) IN ('true', '1')
    OR position(toString(attrs.gen_ai.response.finish_reasons), 'content_filter') > 0
    OR error_type = 'ContentFilter'
)"""

_DRIFT_SQL = f"""
INSERT INTO {{staging:Identifier}}
    (day, model, llm_calls, answered_calls, refusals, refusal_rate,
     tokens_completion_p50, tokens_completion_p95, tokens_completion_mean, tokens_completion_sum)
WITH quantilesTDigestIf(0.5, 0.95)(tokens_completion, tokens_completion > 0) AS q
SELECT
    {{day:Date}} AS day,
    model,
    count() AS llm_calls,
    countIf(tokens_completion > 0) AS answered_calls,
    countIf(refused) AS refusals,
    refusals / llm_calls AS refusal_rate,
    -- a day with no answered call has no length distribution: 0, and answered_calls says why
    ifNotFinite(q[1], 0) AS tokens_completion_p50,
    ifNotFinite(q[2], 0) AS tokens_completion_p95,
    ifNotFinite(avgIf(tokens_completion, tokens_completion > 0), 0) AS tokens_completion_mean,
    sumIf(tokens_completion, tokens_completion > 0) AS tokens_completion_sum
FROM
(
    SELECT model, operation, tokens_completion, {REFUSAL_SQL} AS refused
    FROM {{source:Identifier}}.agent_events
    WHERE toDate(ts) = {{day:Date}} AND kind = 'llm' AND model != ''
)
WHERE tokens_completion > 0 OR operation IN {{ops:Array(String)}} OR refused
GROUP BY model
"""


@dataclass(frozen=True)
class DayStats:
    """One model on one day, as stored in ``model_drift_daily``."""

    day: date
    model: str
    llm_calls: int
    answered_calls: int
    refusals: int
    refusal_rate: float
    p50: float
    p95: float
    mean: float
    tokens_sum: int


def refresh_model_drift(ch: Client, days: Sequence[date], source_database: str = "") -> list[DayStats]:
    """Recompute ``model_drift_daily`` for ``days`` from raw events; returns the rows written.

    ``source_database`` holds the ``agent_events`` to read (default: ``ch``'s own database); on a cluster,
    the read database of Distributed tables, since length quantiles cannot be merged from per-shard rows.
    Idempotent: each day's partition is replaced atomically (a day without LLM calls is emptied).
    """
    source = source_database or ch.command("SELECT currentDatabase()")

    def fill(staging: str, day: date) -> None:
        ch.command(
            _DRIFT_SQL,
            parameters={"staging": staging, "day": day, "ops": list(GENERATION_OPERATIONS), "source": source},
        )

    replace_day_partitions(ch, "model_drift_daily", days, fill)
    return daily_stats(ch, min(days), max(days)) if days else []


def daily_stats(ch: Client, start: date, end: date) -> list[DayStats]:
    """Rows of ``model_drift_daily`` for days in [start, end], by day and model."""
    rows = ch.query(
        """
        SELECT day, model, llm_calls, answered_calls, refusals, refusal_rate,
               tokens_completion_p50, tokens_completion_p95, tokens_completion_mean, tokens_completion_sum
        FROM model_drift_daily
        WHERE day >= {start:Date} AND day <= {end:Date}
        ORDER BY day, model
        """,
        parameters={"start": start, "end": end},
    ).result_rows
    return [
        DayStats(d, str(m), int(c), int(a), int(r), float(rr), float(p50), float(p95), float(mean), int(s))
        for d, m, c, a, r, rr, p50, p95, mean, s in rows
    ]


def latest_day(ch: Client, not_after: date | None = None) -> date | None:
    """The most recent day in ``model_drift_daily`` (on or before ``not_after``), if any."""
    value = ch.query(
        "SELECT max(day), count() FROM model_drift_daily WHERE day <= {d:Date}",
        parameters={"d": not_after or date(2999, 12, 31)},
    ).result_rows[0]
    return value[0] if value[1] else None


@dataclass(frozen=True)
class Thresholds:
    """When a model has drifted; see ``evaluate``."""

    length_relative: float = 0.25  # |p50 or mean - baseline| / baseline
    refusal_pp: float = 2.0  # |refusal rate - baseline| in percentage points
    min_calls: int = 50  # LLM calls a day needs to be compared or to count towards a baseline
    baseline_days: int = 7
    min_baseline_days: int = 3


@dataclass(frozen=True)
class ModelDrift:
    """One model's day against its trailing baseline; ``reasons`` is empty when within thresholds."""

    model: str
    llm_calls: int
    answered_calls: int
    p50: float
    mean: float
    refusal_rate: float
    baseline_days: int
    baseline_p50: float | None = None
    baseline_mean: float | None = None
    baseline_refusal_rate: float | None = None
    reasons: tuple[str, ...] = ()
    skipped: str | None = None  # why the model was not compared (too few calls)

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)


@dataclass
class DriftReport:
    """Every model active on ``day``, compared with its previous ``thresholds.baseline_days`` days."""

    day: date | None
    thresholds: Thresholds
    models: list[ModelDrift] = field(default_factory=list)

    @property
    def drifted(self) -> list[ModelDrift]:
        return [m for m in self.models if m.drifted]

    @property
    def skipped(self) -> list[ModelDrift]:
        return [m for m in self.models if m.skipped]

    @property
    def compared(self) -> list[ModelDrift]:
        return [m for m in self.models if not m.skipped]


def _relative(current: float, baseline: float) -> float:
    if baseline > 0:
        return abs(current - baseline) / baseline
    return math.inf if current > 0 else 0.0


def compare(today: DayStats, history: Sequence[DayStats], thresholds: Thresholds) -> ModelDrift:
    """Compare one model's day with its previous days (``history``: that model, earlier days only).

    The baseline uses only history days with at least ``min_calls`` LLM calls: the mean of their
    daily p50s, and pooled mean length and refusal rate (totals over totals, so a busy day weighs
    more). Length is compared when the day has ``min_calls`` answered calls; a model with fewer
    LLM calls on the day, or fewer than ``min_baseline_days`` baseline days, is skipped.
    """
    base = ModelDrift(
        model=today.model,
        llm_calls=today.llm_calls,
        answered_calls=today.answered_calls,
        p50=today.p50,
        mean=today.mean,
        refusal_rate=today.refusal_rate,
        baseline_days=0,
    )
    if today.llm_calls < thresholds.min_calls:
        return replace(base, skipped=f"{today.llm_calls} LLM calls on the day (minimum {thresholds.min_calls})")
    usable = [d for d in history if d.llm_calls >= thresholds.min_calls]
    if len(usable) < thresholds.min_baseline_days:
        return replace(
            base,
            baseline_days=len(usable),
            skipped=(
                f"{len(usable)} of the previous {thresholds.baseline_days} days have {thresholds.min_calls}+ "
                f"LLM calls (need {thresholds.min_baseline_days})"
            ),
        )
    answered = [d for d in usable if d.answered_calls > 0]
    baseline_p50 = sum(d.p50 for d in answered) / len(answered) if answered else 0.0
    answered_total = sum(d.answered_calls for d in answered)
    baseline_mean = sum(d.tokens_sum for d in answered) / answered_total if answered_total else 0.0
    baseline_refusal = sum(d.refusals for d in usable) / sum(d.llm_calls for d in usable)
    reasons: list[str] = []
    if today.answered_calls >= thresholds.min_calls:
        for name, current, baseline in (("p50", today.p50, baseline_p50), ("mean", today.mean, baseline_mean)):
            change = _relative(current, baseline)
            if change > thresholds.length_relative:
                sign = "+" if current >= baseline else "-"
                reasons.append(
                    f"output tokens {name} {current:.0f} vs {baseline:.0f} ({sign}{change:.0%}, "
                    f"limit {thresholds.length_relative:.0%})"
                )
    moved_pp = (today.refusal_rate - baseline_refusal) * 100
    if abs(moved_pp) > thresholds.refusal_pp:
        reasons.append(
            f"refusal rate {today.refusal_rate:.1%} vs {baseline_refusal:.1%} ({moved_pp:+.1f} pp, "
            f"limit {thresholds.refusal_pp:g} pp)"
        )
    return replace(
        base,
        baseline_days=len(usable),
        baseline_p50=baseline_p50,
        baseline_mean=baseline_mean,
        baseline_refusal_rate=baseline_refusal,
        reasons=tuple(reasons),
    )


def evaluate(ch: Client, thresholds: Thresholds, day: date | None = None) -> DriftReport:
    """Compare every model active on ``day`` (default: the latest day stored) with its baseline.

    Reads ``model_drift_daily`` only; materialize the ``model_drift_daily`` asset over the day
    and its baseline days first.
    """
    day = day or latest_day(ch)
    report = DriftReport(day, thresholds)
    if day is None:
        return report
    stats = daily_stats(ch, day - timedelta(days=thresholds.baseline_days), day)
    for today in (s for s in stats if s.day == day):
        history = [s for s in stats if s.model == today.model and s.day < day]
        report.models.append(compare(today, history, thresholds))
    return report
