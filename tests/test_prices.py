"""Pure units of the price table: overrides validation, effective dates, merging, name resolution."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import types

from metrics_platform.prices import entries, names
from metrics_platform.prices.load import apply_overrides
from metrics_platform.prices.overrides import OverridesError, parse_overrides

PATH = Path("data/prices/overrides.yaml")


def test_valid_overrides_are_read_with_their_lines():
    text = """\
prices:
  - provider: openai
    model: GPT-4.1
    valid_from: 2026-01-01
    input: 1.8
    output: "7.20"
    aliases: [gpt-4.1-enterprise]
  - {provider: selfhosted, model: llama-3.3-70b, input: 0.1, output: 0.1,
     tier: {start_tokens: 100000, input: 0.2}}
"""
    first, second = parse_overrides(PATH, text)
    assert (first.provider, first.model, first.valid_from, first.line) == ("openai", "gpt-4.1", date(2026, 1, 1), 2)
    assert (first.base.input, first.base.output, first.base.cache_read) == (Decimal("1.8"), Decimal("7.20"), None)
    assert first.aliases == ("gpt-4.1-enterprise",)
    assert (second.valid_from, second.tier_start_tokens, second.tier.input) == (
        entries.FIRST_DAY,
        100000,
        Decimal("0.2"),
    )
    assert second.line == 8


def test_every_problem_in_an_overrides_file_is_reported_with_its_line():
    text = """\
prices:
  - provider: openai
    model: gpt-4.1
    input: -1
    outputs: 2
  - provider: anthropic
    valid_from: 2026-02-30
    input: cheap
  - provider: y
    model: m
    input: 1
    tier: {start_tokens: many}
  - {provider: x, model: m, input: 1}
  - {provider: x, model: m, input: 2}
"""
    with pytest.raises(OverridesError) as raised:
        parse_overrides(PATH, text)
    problems = str(raised.value).splitlines()
    assert f"{PATH}:4: input: -1 must be a price between 0 and 1e9 USD per million tokens" in problems
    assert any(p.startswith(f"{PATH}:5: unknown field 'outputs'") for p in problems)
    assert f"{PATH}:6: model is required" in problems
    assert f"{PATH}:7: valid_from '2026-02-30' is not a YYYY-MM-DD date" in problems
    assert f"{PATH}:8: input: 'cheap' is not a number" in problems
    assert f"{PATH}:12: tier.start_tokens must be a positive whole number of input tokens" in problems
    assert f"{PATH}:14: x/m from 1970-01-01 is already priced at line 13" in problems


def test_broken_yaml_names_the_line():
    with pytest.raises(OverridesError, match=r"overrides.yaml:\d+: not valid YAML"):
        parse_overrides(PATH, "prices:\n  - provider: a\n    model: [unclosed\n")


def test_empty_overrides_are_fine():
    assert parse_overrides(PATH, "") == []
    assert parse_overrides(PATH, "prices: []\n") == []
    assert parse_overrides(PATH, "prices:\n") == []


def _model(prices) -> types.ModelInfo:
    return types.ModelInfo(id="m", match=types.ClauseEquals(equals="m"), prices=prices)


def test_conditional_prices_become_effective_dated_entries():
    old, new = types.ModelPrice(input_mtok=Decimal(2), output_mtok=Decimal(8)), types.ModelPrice(input_mtok=Decimal(1))
    model = _model(
        [
            types.ConditionalPrice(prices=old),
            types.ConditionalPrice(constraint=types.StartDateConstraint(start_date=date(2026, 3, 1)), prices=new),
        ]
    )
    timeline = entries._timeline(model)
    assert timeline == [(entries.FIRST_DAY, old), (date(2026, 3, 1), new)]


def test_a_tiered_price_keeps_its_base_and_first_tier():
    tiered = types.TieredPrices(
        base=Decimal("1.25"),
        tiers=[types.Tier(start=500_000, price=Decimal(5)), types.Tier(start=200_000, price=Decimal("2.5"))],
    )
    base, start, tier = entries._unit_prices(types.ModelPrice(input_mtok=tiered, output_mtok=Decimal(10)))
    assert (base.input, base.output, start, tier.input, tier.output) == (
        Decimal("1.25"),
        Decimal(10),
        200_000,
        Decimal("2.5"),
        None,
    )


def test_an_override_replaces_the_dataset_from_its_day_and_adds_its_names():
    def entry(model: str, valid_from: date, price: int) -> entries.PriceEntry:
        prices = entries.UnitPrices(Decimal(price))
        return entries.PriceEntry(f"openai/{model}", "openai", model, valid_from, entries.LAST_DAY, prices)

    dataset = [
        entry("gpt-4.1", entries.FIRST_DAY, 2),
        entry("gpt-4.1", date(2026, 6, 1), 3),
        entry("gpt-4o", entries.FIRST_DAY, 5),
    ]
    overrides = parse_overrides(
        PATH,
        "prices:\n  - {provider: openai, model: gpt-4.1, valid_from: 2026-03-01, input: 1, aliases: [my-gpt]}\n"
        "  - {provider: selfhosted, model: llama-x, input: 0.5}\n",
    )
    merged, aliases = apply_overrides(dataset, [("openai", "gpt-4.1", "openai/gpt-4.1")], overrides, PATH)
    series = sorted((e.price_id, e.valid_from, e.valid_to, e.base.input) for e in merged)
    assert series == [
        ("openai/gpt-4.1", entries.FIRST_DAY, date(2026, 2, 28), Decimal(2)),
        (
            "openai/gpt-4.1",
            date(2026, 3, 1),
            entries.LAST_DAY,
            Decimal(1),
        ),  # the dataset's June change no longer applies
        ("openai/gpt-4o", entries.FIRST_DAY, entries.LAST_DAY, Decimal(5)),
        ("selfhosted/llama-x", entries.FIRST_DAY, entries.LAST_DAY, Decimal("0.5")),
    ]
    targets = {(p, m): t for p, m, t, _ in aliases}
    assert targets[("openai", "my-gpt")] == targets[("", "my-gpt")] == "openai/gpt-4.1"
    assert targets[("selfhosted", "llama-x")] == targets[("", "llama-x")] == "selfhosted/llama-x"


@pytest.mark.parametrize(
    ("provider", "model", "price_id"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
        ("", "claude-sonnet-4-20250514", "anthropic/claude-sonnet-4-0"),
        ("gcp.gemini", "gemini-2.5-pro", "google/gemini-2.5-pro"),
        ("OpenAI", "o4-mini", "openai/o4-mini"),
        ("", "no-such-model-anywhere", None),
    ],
)
def test_model_names_resolve_the_way_providers_spell_them(provider, model, price_id):
    assert names.resolve(provider, model) == price_id


def test_the_dataset_spells_out_names_under_every_provider_name():
    aliases = {(p, m): t for p, m, t in names.dataset_aliases()}
    assert aliases[("openai", "gpt-4.1")] == "openai/gpt-4.1"
    assert aliases[("gcp.vertex_ai", "gemini-2.5-pro")] == aliases[("google", "gemini-2.5-pro")]
    assert aliases[("", "gpt-4.1")] == "openai/gpt-4.1"
    # A dated variant matched by a regex in the dataset resolves in ClickHouse through its undated name.
    assert aliases[("anthropic", "claude-sonnet-4")] == "anthropic/claude-sonnet-4-0"
