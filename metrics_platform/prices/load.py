"""Writing prices and model-name aliases to ClickHouse, and finding models without a price.

The two tables are replaced whole (staging table + EXCHANGE, metrics_platform/table_swap.py) and
their dictionaries reloaded, so the finalizer prices new spans with the new set from then on.
Past days keep the cost they were stored with until they are recomputed (prices/recompute.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from metrics_platform import table_swap
from metrics_platform.prices.entries import LAST_DAY, PRICE_KEYS, PriceEntry, dataset_entries, price_id, with_valid_to
from metrics_platform.prices.names import PROVIDER_IDS, dataset_aliases, provider_names, resolve, resolve_seen
from metrics_platform.prices.overrides import Override, read_overrides

PRICE_COLUMNS = (
    "price_id", "provider_id", "model_id", "valid_from", "valid_to",
    *(f"{key}_per_mtok" for key in PRICE_KEYS),
    "tier_start_tokens",
    *(f"tier_{key}_per_mtok" for key in PRICE_KEYS if key != "reasoning"),
    "source", "loaded_at",
)  # fmt: skip
ALIAS_COLUMNS = ("provider", "model", "price_id", "source", "loaded_at")
# Model names seen this far back are resolved into aliases on every load.
SEEN_DAYS = 30


@dataclass
class PriceLoad:
    """What one load wrote, for the CLI and the asset's metadata."""

    entries: int = 0
    models: int = 0
    aliases: int = 0
    overrides: int = 0
    seen_resolved: int = 0
    seen_unpriced: list[tuple[str, str]] = field(default_factory=list)


def apply_overrides(
    entries: list[PriceEntry], aliases: list[tuple[str, str, str]], overrides: list[Override], path: Path
) -> tuple[list[PriceEntry], list[tuple[str, str, str, str]]]:
    """Merge overrides into the dataset's entries and aliases (see overrides.py for the rules).

    Returns the entries and the alias rows with their source.
    """
    alias_rows = [(p, m, target, "dataset") for p, m, target in aliases]
    first_override: dict[str, date] = {}
    added: list[PriceEntry] = []
    for override in overrides:
        target = resolve(override.provider, override.model)
        if target is None:
            provider_id = PROVIDER_IDS.get(override.provider, override.provider)
            target = price_id(provider_id, override.model)
        provider_id, model_id = target.split("/", 1)
        added.append(
            PriceEntry(target, provider_id, model_id, override.valid_from, override.valid_from, override.base,
                       override.tier_start_tokens, override.tier, override.source(path))
        )  # fmt: skip
        first_override[target] = min(first_override.get(target, override.valid_from), override.valid_from)
        for name in (override.model, *override.aliases):
            for provider_name in {override.provider, *provider_names(provider_id)}:
                alias_rows.append((provider_name, name, target, override.source(path)))
            alias_rows.append(("", name, target, override.source(path)))
    kept = [e for e in entries if e.valid_from < first_override.get(e.price_id, LAST_DAY)]
    # Later rows win: an override's aliases replace the dataset's for the same name.
    deduplicated = {(p, m): (p, m, t, s) for p, m, t, s in alias_rows}
    return with_valid_to(kept + added), list(deduplicated.values())


def _seen_models(ch: Client) -> list[tuple[str, str]]:
    # Requested models come from the hourly model projection; response models (dated variants)
    # only from the last day of raw events, which is enough to catch new ones.
    rows = ch.query(
        f"""
        SELECT provider, model FROM agent_events
        WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL {SEEN_DAYS} DAY) AND kind = 'llm'
        GROUP BY provider, model
        UNION DISTINCT
        SELECT provider, response_model FROM agent_events
        WHERE ts >= now() - INTERVAL 1 DAY AND kind = 'llm' AND response_model != ''
        GROUP BY provider, response_model
        """
    ).result_rows
    return [(str(p), str(m)) for p, m in rows]


def _entry_row(entry: PriceEntry, loaded_at: datetime) -> tuple[object, ...]:
    return (
        entry.price_id, entry.provider_id, entry.model_id, entry.valid_from, entry.valid_to,
        *(getattr(entry.base, key) for key in PRICE_KEYS),
        entry.tier_start_tokens,
        *(getattr(entry.tier, key) for key in PRICE_KEYS if key != "reasoning"),
        entry.source, loaded_at,
    )  # fmt: skip


def load_prices(ch: Client, overrides_path: Path) -> PriceLoad:
    """Load the dataset plus overrides into model_prices / model_price_aliases and reload both dictionaries.

    Raises OverridesError (with every problem and its line) before anything is written when the
    overrides file is invalid, so the prices in force stay as they were.
    """
    overrides = read_overrides(overrides_path)
    entries, alias_rows = apply_overrides(dataset_entries(), dataset_aliases(), overrides, overrides_path)
    known = {(p, m) for p, m, _, _ in alias_rows}
    seen_rows, unpriced = resolve_seen(_seen_models(ch), known)
    alias_rows += [(p, m, target, "seen in agent_events") for p, m, target in seen_rows]
    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    table_swap.replace_table(ch, "model_prices", PRICE_COLUMNS, [_entry_row(e, loaded_at) for e in entries])
    table_swap.replace_table(ch, "model_price_aliases", ALIAS_COLUMNS, [(*row, loaded_at) for row in alias_rows])
    for dictionary in ("model_price_dict", "model_alias_dict"):
        ch.command(f"SYSTEM RELOAD DICTIONARY {dictionary}")
    # Names the alias table now resolves through its normalization (prefix, date suffix) are priced.
    still_unpriced = [
        (p, m)
        for p, m in unpriced
        if not ch.command("SELECT mp_price_id({p:String}, {m:String}, '') != ''", parameters={"p": p, "m": m})
    ]
    return PriceLoad(
        entries=len(entries),
        models=len({e.price_id for e in entries}),
        aliases=len(alias_rows),
        overrides=len(overrides),
        seen_resolved=len(seen_rows),
        seen_unpriced=still_unpriced,
    )


@dataclass(frozen=True)
class UnpricedModel:
    provider: str
    model: str
    response_model: str
    calls: int


def unpriced_models(ch: Client, hours: int = 24) -> list[UnpricedModel]:
    """LLM calls of the last ``hours`` whose model has no price in force today, by model, most calls first."""
    rows = ch.query(
        """
        SELECT provider, model, response_model, count() AS calls
        FROM agent_events
        WHERE ts >= now() - toIntervalHour({h:UInt32}) AND kind = 'llm'
        GROUP BY provider, model, response_model
        HAVING mp_llm_cost(mp_price_id(provider, model, response_model), today(), 0, 0, 0, 0, 0) IS NULL
        ORDER BY calls DESC
        """,
        parameters={"h": hours},
    ).result_rows
    return [UnpricedModel(str(p), str(m), str(r), int(c)) for p, m, r, c in rows]


def loaded_overview(ch: Client) -> dict[str, int]:
    """How many price entries, models and aliases are loaded (0s before the first load)."""
    entries, models = ch.query("SELECT count(), uniqExact(price_id) FROM model_prices").result_rows[0]
    aliases = ch.command("SELECT count() FROM model_price_aliases")
    return {"entries": int(entries), "models": int(models), "aliases": int(aliases)}
