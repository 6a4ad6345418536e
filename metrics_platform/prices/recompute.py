"""Repricing past days after a price change: computed cost in raw events and, with them, every rollup.

Rollups are projections of agent_events (sql/0011), so one mutation of a day's LLM spans rewrites
raw events and rollups together. Reported cost is never touched: a span that carried its own
cost keeps it as cost_usd, and only its cost_computed_usd (kept beside it) is refreshed.
Recomputing a day twice with the same prices changes nothing; each run leaves one
cost_recompute_audit row per day with the totals before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from clickhouse_connect.driver.client import Client

_COST = (
    "mp_llm_cost(mp_price_id(provider, model, response_model), toDate(ts), tokens_prompt, tokens_completion, "
    "tokens_cache_read, tokens_cache_write, tokens_reasoning)"
)
_WINDOW = "kind = 'llm' AND toDate(ts) >= {first:Date} AND toDate(ts) <= {last:Date}"
_UPDATE = f"""
ALTER TABLE agent_events UPDATE
    price_id = mp_price_id(provider, model, response_model),
    cost_computed_usd = ifNull({_COST}, toDecimal64(0, 10)),
    cost_source = multiIf(cost_source = 'reported', 'reported', {_COST} IS NULL, 'unpriced', 'computed'),
    cost_usd = if(cost_source = 'reported', cost_usd, ifNull({_COST}, toDecimal64(0, 10)))
WHERE {_WINDOW}
"""
_TOTALS = f"""
SELECT toDate(ts) AS day, count(), sum(cost_computed_usd), sum(cost_usd), sumIf(cost_usd, cost_source = 'reported'),
       countIf(cost_source = 'unpriced')
FROM agent_events WHERE {_WINDOW} GROUP BY day
"""


@dataclass(frozen=True)
class DayTotals:
    llm_calls: int = 0
    computed_usd: Decimal = Decimal(0)
    cost_usd: Decimal = Decimal(0)
    reported_usd: Decimal = Decimal(0)
    unpriced: int = 0


@dataclass(frozen=True)
class DayRecompute:
    """One day's totals before and after a recompute."""

    day: date
    before: DayTotals
    after: DayTotals


def _totals(ch: Client, first: date, last: date) -> dict[date, DayTotals]:
    rows = ch.query(_TOTALS, parameters={"first": first, "last": last}).result_rows
    return {
        day: DayTotals(int(n), Decimal(computed), Decimal(cost), Decimal(reported), int(unpriced))
        for day, n, computed, cost, reported, unpriced in rows
    }


def recompute_cost(ch: Client, first: date, last: date, run_id: str) -> list[DayRecompute]:
    """Reprice the LLM spans whose day is in [first, last] with the prices loaded now.

    One mutation covers the range (a backfill of many days rewrites each part once); it runs
    synchronously, so the returned totals are final. Every day with LLM spans gets an audit row.
    """
    if last < first:
        raise ValueError(f"recompute window ends ({last}) before it starts ({first})")
    params = {"first": first, "last": last}
    before = _totals(ch, first, last)
    ch.command(_UPDATE, parameters=params, settings={"mutations_sync": 2, "allow_nondeterministic_mutations": 1})
    after = _totals(ch, first, last)
    results = [DayRecompute(day, before.get(day, DayTotals()), after.get(day, DayTotals())) for day in sorted(after)]
    if results:
        ch.insert(
            "cost_recompute_audit",
            [
                [
                    r.day,
                    run_id,
                    r.after.llm_calls,
                    r.before.computed_usd,
                    r.after.computed_usd,
                    r.before.cost_usd,
                    r.after.cost_usd,
                    r.after.reported_usd,
                    r.before.unpriced,
                    r.after.unpriced,
                ]
                for r in results
            ],  # fmt: skip
            column_names=[
                "day",
                "run_id",
                "llm_calls",
                "computed_before_usd",
                "computed_after_usd",
                "cost_before_usd",
                "cost_after_usd",
                "reported_usd",
                "unpriced_before",
                "unpriced_after",
            ],  # fmt: skip
        )
    return results
