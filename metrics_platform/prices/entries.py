"""Price entries: one model's unit prices over a range of days, from the genai-prices dataset.

genai-prices lists, per provider and model, either one price set or conditional price sets that
start on given dates (the last one whose start has passed is in force; before any, the first).
Each becomes entries with ``valid_from`` / ``valid_to`` days, which ClickHouse looks up by the
span's day. Two simplifications, both documented in the README: prices that depend on the time
of day (off-peak discounts) are read as their standard price, and a model with several
long-context tiers keeps the first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal

from genai_prices import __version__ as GENAI_PRICES_VERSION
from genai_prices import data_snapshot, types

FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(2149, 6, 6)  # ClickHouse's last Date
DATASET_SOURCE = f"genai-prices {GENAI_PRICES_VERSION}"

# Unit prices an entry carries (USD per million tokens), by column name.
PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")
# genai-prices' price keys per column; the first one present wins (Anthropic lists 5-minute and
# 1-hour cache writes, the 5-minute one being the default).
_DATASET_KEYS = {
    "input": ("input_mtok",),
    "output": ("output_mtok",),
    "cache_read": ("cache_read_mtok",),
    "cache_write": ("cache_write_mtok", "cache_write_5m_mtok"),
    "reasoning": ("output_reasoning_mtok",),
}


@dataclass(frozen=True)
class UnitPrices:
    """USD per million tokens by token type; None = not listed (see sql/0010 mp_llm_cost)."""

    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True)
class PriceEntry:
    """The prices of one model in force from ``valid_from`` to ``valid_to`` (inclusive days)."""

    price_id: str  # provider_id/model_id
    provider_id: str
    model_id: str
    valid_from: date
    valid_to: date
    base: UnitPrices
    tier_start_tokens: int = 0  # 0 = no tier; above it the tier's prices replace the base ones
    tier: UnitPrices = UnitPrices()
    source: str = DATASET_SOURCE


def price_id(provider_id: str, model_id: str) -> str:
    return f"{provider_id}/{model_id}"


def _unit_prices(model_price: types.ModelPrice) -> tuple[UnitPrices, int, UnitPrices]:
    base: dict[str, Decimal | None] = {}
    tier: dict[str, Decimal | None] = {}
    tier_start = 0
    for column, keys in _DATASET_KEYS.items():
        value = next((v for k in keys if (v := model_price.__dict__.get(k)) is not None), None)
        if isinstance(value, types.TieredPrices):
            base[column] = value.base
            if value.tiers:
                first = min(value.tiers, key=lambda t: t.start)
                tier_start = tier_start or first.start
                tier[column] = first.price
        else:
            base[column] = value
    return UnitPrices(**base), tier_start, UnitPrices(**tier)


def _timeline(model: types.ModelInfo) -> list[tuple[date, types.ModelPrice]]:
    """(first day, prices) in force from each day on, in day order, consecutive duplicates merged."""
    if isinstance(model.prices, types.ModelPrice):
        return [(FIRST_DAY, model.prices)]
    conditional = model.prices
    starts = {FIRST_DAY} | {
        c.constraint.start_date for c in conditional if isinstance(c.constraint, types.StartDateConstraint)
    }
    timeline: list[tuple[date, types.ModelPrice]] = []
    for day in sorted(starts):
        # genai-prices' rule: the last conditional price whose constraint holds, else the first.
        # Time-of-day constraints never hold here, so their standard price applies.
        chosen = conditional[0].prices
        for candidate in reversed(conditional):
            constraint = candidate.constraint
            started = isinstance(constraint, types.StartDateConstraint) and constraint.start_date <= day
            if constraint is None or started:
                chosen = candidate.prices
                break
        if not timeline or timeline[-1][1] is not chosen:
            timeline.append((day, chosen))
    return timeline


def with_valid_to(entries: list[PriceEntry]) -> list[PriceEntry]:
    """Set each entry's ``valid_to`` to the day before the next entry of the same price_id."""
    by_id: dict[str, list[PriceEntry]] = {}
    for entry in entries:
        by_id.setdefault(entry.price_id, []).append(entry)
    result: list[PriceEntry] = []
    for series in by_id.values():
        series.sort(key=lambda e: e.valid_from)
        for current, following in zip(series, [*series[1:], None], strict=True):
            end = following.valid_from - timedelta(days=1) if following else LAST_DAY
            result.append(replace(current, valid_to=end))
    return result


def dataset_entries() -> list[PriceEntry]:
    """Every token-priced model of the bundled genai-prices snapshot, as effective-dated entries."""
    entries: list[PriceEntry] = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            for valid_from, model_price in _timeline(model):
                base, tier_start, tier = _unit_prices(model_price)
                if base.input is None and base.output is None:
                    continue  # priced per request, image, audio hour...: not a token price
                target = price_id(provider.id, model.id)
                entries.append(PriceEntry(target, provider.id, model.id, valid_from, LAST_DAY, base, tier_start, tier))
    return with_valid_to(entries)
