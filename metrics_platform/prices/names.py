"""How spans name providers and models, resolved to genai-prices' ids.

Spans carry ``gen_ai.provider.name`` (or the older ``gen_ai.system``, or the platform's own
``provider``) and the model as the application requested it or the provider answered it: dated
variants (``gpt-4o-mini-2024-07-18``), provider prefixes (``openai/gpt-4o``), deployment aliases.
ClickHouse resolves a name through the alias table (exact name, then without prefix and date
suffix, see sql/0010 ``mp_price_id``); this module fills that table with every name the dataset
spells out and with every name seen in agent_events that genai-prices' own matcher resolves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from genai_prices import data_snapshot, types

from metrics_platform.prices.entries import price_id

# gen_ai.provider.name / gen_ai.system values (and common short forms) -> genai-prices provider id.
PROVIDER_IDS: dict[str, str] = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "azure": "azure",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "aws": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "gemini": "google",
    "google": "google",
    "groq": "groq",
    "deepseek": "deepseek",
    "mistral_ai": "mistral",
    "mistral": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "together_ai": "together",
    "together": "together",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
}


def provider_names(provider_id: str) -> list[str]:
    """Every name a span may give the provider ``provider_id`` (its id included)."""
    return sorted({provider_id, *(name for name, pid in PROVIDER_IDS.items() if pid == provider_id)})


def _equals_literals(clause: object) -> Iterator[str]:
    if isinstance(clause, types.ClauseEquals):
        yield clause.equals.lower()
    elif isinstance(clause, types.ClauseOr):
        for inner in clause.or_:
            yield from _equals_literals(inner)


def dataset_aliases() -> list[tuple[str, str, str]]:
    """(provider as spans name it, model name, price_id) for every name the dataset spells out.

    A name is listed under each of its provider's names and, for the provider genai-prices
    itself picks when no provider is given, under '' (any provider).
    """
    snapshot = data_snapshot.get_snapshot()
    rows: dict[tuple[str, str], str] = {}
    for provider in snapshot.providers:
        for model in provider.models:
            target = price_id(provider.id, model.id)
            for name in {model.id.lower(), *_equals_literals(model.match)}:
                for provider_name in provider_names(provider.id):
                    rows.setdefault((provider_name, name), target)
    for _, name in list(rows):
        if ("", name) not in rows and (resolved := resolve("", name)):
            rows[("", name)] = resolved
    return [(p, m, target) for (p, m), target in rows.items()]


def resolve(provider: str, model: str) -> str | None:
    """genai-prices' price_id for a model as a span names it, or None if the dataset has no price.

    The span's provider narrows the search when genai-prices knows it; an unknown or empty one
    lets genai-prices pick the provider from the model name.
    """
    snapshot = data_snapshot.get_snapshot()
    provider_id = PROVIDER_IDS.get(provider.lower(), provider.lower()) or None
    for candidate in (provider_id, None) if provider_id else (None,):
        try:
            found_provider, found_model = snapshot.find_provider_model(model, None, candidate, None)
        except LookupError:
            continue
        return price_id(found_provider.id, found_model.id)
    return None


def resolve_seen(
    seen: Iterable[tuple[str, str]], known: set[tuple[str, str]]
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Aliases for (provider, model) names seen in spans that the alias table does not hold yet.

    Returns the new alias rows and the names genai-prices cannot price either.
    """
    rows: list[tuple[str, str, str]] = []
    unresolved: list[tuple[str, str]] = []
    for provider, model in sorted(set(seen)):
        key = (provider.lower(), model.lower())
        if not model or key in known or ("", key[1]) in known:
            continue
        target = resolve(*key)
        if target:
            rows.append((key[0], key[1], target))
        else:
            unresolved.append(key)
    return rows, unresolved
