"""The repository's price overrides: negotiated or self-hosted prices and models the dataset lacks.

A YAML file (default ``data/prices/overrides.yaml``, or ``METRICS_PLATFORM_PRICE_OVERRIDES``)::

    prices:
      - provider: openai            # as spans name it (gen_ai.provider.name) or a genai-prices id
        model: gpt-4.1
        valid_from: 2026-01-01      # optional: in force from this day (UTC); default always
        input: 1.80                 # USD per million tokens
        output: 7.20
        cache_read: 0.45            # optional: cache_read, cache_write, reasoning
        tier: {start_tokens: 200000, input: 3.6, output: 14.4}   # optional long-context tier
        aliases: [gpt-4.1-enterprise]                              # optional: other names

An override of a model the dataset prices replaces the dataset's prices from its ``valid_from``
on (dataset changes after it no longer apply); any other model gets a price entry of its own.
Every problem is reported with the file and line, and nothing is loaded while one remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

from metrics_platform.prices.entries import FIRST_DAY, PRICE_KEYS, UnitPrices

_ENTRY_KEYS = {"provider", "model", "valid_from", "aliases", "tier", *PRICE_KEYS}
_TIER_KEYS = {"start_tokens", *PRICE_KEYS}


class OverridesError(ValueError):
    """The overrides file cannot be used; the message lists every problem with its line."""


@dataclass(frozen=True)
class Override:
    provider: str
    model: str
    valid_from: date
    base: UnitPrices
    tier_start_tokens: int
    tier: UnitPrices
    aliases: tuple[str, ...]
    line: int  # 1-based, of the entry in the file

    def source(self, path: Path) -> str:
        return f"override {path.name}:{self.line}"


def _scalar(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _price(node: yaml.Node, where: str, errors: list[str]) -> Decimal | None:
    text = _scalar(node)
    if text in (None, "", "~", "null"):
        if text is None:
            errors.append(f"{where}: must be a number")
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        errors.append(f"{where}: {text!r} is not a number")
        return None
    if not value.is_finite() or value < 0 or value >= Decimal("1e9"):
        errors.append(f"{where}: {text} must be a price between 0 and 1e9 USD per million tokens")
        return None
    return value


def _mapping(node: yaml.Node, allowed: set[str], where: str, errors: list[str]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        errors.append(f"{where}: expected a mapping")
        return {}
    fields: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        at = f"{where.rsplit(':', 1)[0]}:{key_node.start_mark.line + 1}"
        if key not in allowed:
            errors.append(f"{at}: unknown field {key!r} (expected one of {sorted(allowed)})")
        elif key in fields:
            errors.append(f"{at}: {key!r} given twice")
        else:
            fields[key] = value_node
    return fields


def _unit_prices(fields: dict[str, yaml.Node], path: Path, errors: list[str]) -> UnitPrices:
    return UnitPrices(
        **{
            key: _price(fields[key], f"{path}:{fields[key].start_mark.line + 1}: {key}", errors)
            for key in PRICE_KEYS
            if key in fields
        }
    )


def _entry(node: yaml.Node, path: Path, errors: list[str]) -> Override | None:
    line = node.start_mark.line + 1
    where = f"{path}:{line}"
    before = len(errors)
    fields = _mapping(node, _ENTRY_KEYS, where, errors)
    names = {}
    for key in ("provider", "model"):
        text = _scalar(fields[key]).strip() if key in fields and _scalar(fields[key]) else ""
        if not text:
            errors.append(f"{where}: {key} is required")
        names[key] = text.lower()
    valid_from = FIRST_DAY
    if "valid_from" in fields:
        text = _scalar(fields["valid_from"]) or ""
        try:
            valid_from = date.fromisoformat(text)
        except ValueError:
            at = f"{path}:{fields['valid_from'].start_mark.line + 1}"
            errors.append(f"{at}: valid_from {text!r} is not a YYYY-MM-DD date")
    base = _unit_prices(fields, path, errors)
    if base.input is None and base.output is None:
        errors.append(f"{where}: give at least one of input and output (USD per million tokens)")
    tier_start, tier = 0, UnitPrices()
    if "tier" in fields:
        tier_where = f"{path}:{fields['tier'].start_mark.line + 1}"
        tier_fields = _mapping(fields["tier"], _TIER_KEYS, tier_where, errors)
        start_text = _scalar(tier_fields["start_tokens"]) if "start_tokens" in tier_fields else None
        if not (start_text or "").isdigit() or int(start_text or 0) <= 0:
            errors.append(f"{tier_where}: tier.start_tokens must be a positive whole number of input tokens")
        else:
            tier_start = int(start_text or 0)
        tier = _unit_prices(tier_fields, path, errors)
    aliases: tuple[str, ...] = ()
    if "aliases" in fields:
        alias_node = fields["aliases"]
        items = alias_node.value if isinstance(alias_node, yaml.SequenceNode) else None
        if items is None or any(not _scalar(item) for item in items):
            errors.append(f"{path}:{alias_node.start_mark.line + 1}: aliases must be a list of model names")
        else:
            aliases = tuple(str(_scalar(item)).strip().lower() for item in items)
    if len(errors) > before:
        return None
    return Override(names["provider"], names["model"], valid_from, base, tier_start, tier, aliases, line)


def parse_overrides(path: Path, text: str) -> list[Override]:
    """Validate an overrides document; raises OverridesError listing every problem with its line."""
    errors: list[str] = []
    try:
        document = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise OverridesError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if document is None:
        return []
    top = _mapping(document, {"prices"}, f"{path}:1", errors)
    entries_node = top.get("prices")
    overrides: list[Override] = []
    if entries_node is not None and not (isinstance(entries_node, yaml.ScalarNode) and not entries_node.value):
        if not isinstance(entries_node, yaml.SequenceNode):
            errors.append(f"{path}:{entries_node.start_mark.line + 1}: prices must be a list of entries")
        else:
            for node in entries_node.value:
                entry = _entry(node, path, errors)
                if entry:
                    overrides.append(entry)
    seen: dict[tuple[str, str, date], int] = {}
    for entry in overrides:
        key = (entry.provider, entry.model, entry.valid_from)
        if key in seen:
            errors.append(
                f"{path}:{entry.line}: {entry.provider}/{entry.model} from {entry.valid_from} "
                f"is already priced at line {seen[key]}"
            )
        seen.setdefault(key, entry.line)
    if errors:
        raise OverridesError("\n".join(errors))
    return overrides


def read_overrides(path: Path) -> list[Override]:
    """The overrides in ``path``; a missing file means none."""
    if not path.exists():
        return []
    return parse_overrides(path, path.read_text())
