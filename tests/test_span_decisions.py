"""The per-span decisions of sql/0011 (span kind, price entry, cost), called on the real ClickHouse
with the shapes real instrumentation emits (../shared/notes/real-instrumentation.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest

# (what emits it, kind_hint, operation, tool, model, response_model, tokens, span_kind, is_http, parent) -> kind
KINDS = [
    ("openlit app span (root, internal)", "", "", "", "", "", 0, "internal", False, "", "request"),
    ("openlit LLM span", "", "chat", "", "gpt-4o", "gpt-4o-2024-08-06", 120, "client", False, "p", "llm"),
    ("openlit httpx span under the LLM span", "", "", "", "", "", 0, "client", True, "p", "http"),
    ("openai-v2 chat span without an app span", "", "chat", "", "gpt-4o-mini", "", 50, "client", False, "", "llm"),
    ("openai-v2 embeddings", "", "embeddings", "", "text-embedding-3-small", "", 9, "client", False, "p", "llm"),
    ("OpenLLMetry workflow (traceloop.span.kind)", "workflow", "", "", "", "", 0, "internal", False, "", "request"),
    ("OpenLLMetry task", "task", "", "", "", "", 0, "internal", False, "p", "internal"),
    ("OpenLLMetry tool", "tool", "", "", "", "", 0, "internal", False, "p", "tool"),
    ("OpenInference LLM", "llm", "", "", "", "", 0, "internal", False, "p", "llm"),
    ("OpenInference embedding", "embedding", "", "", "", "", 0, "internal", False, "p", "llm"),
    ("GenAI execute_tool", "", "execute_tool", "search", "", "", 0, "internal", False, "p", "tool"),
    ("GenAI invoke_agent, agent model", "", "invoke_agent", "", "gpt-4.1", "", 900, "internal", False, "p", "agent"),
    ("HTTP server span of a downstream service", "", "", "", "", "", 0, "server", False, "p", "request"),
    ("queue consumer", "", "", "", "", "", 0, "consumer", False, "p", "request"),
    ("internal step", "", "", "", "", "", 0, "internal", False, "p", "internal"),
    ("seed client example (model, tokens)", "", "", "", "gpt-4.1", "", 640, "internal", False, "", "llm"),
]  # fmt: skip


def test_span_kinds_of_real_instrumentation(stack, ch):
    rows = ch.query(
        "SELECT name, mp_span_kind(hint, op, tool, model, response_model, tokens, span_kind, is_http, parent), "
        "mp_is_request(parent, span_kind) FROM (SELECT c.1 AS name, c.2 AS hint, c.3 AS op, c.4 AS tool, c.5 AS model, "
        "c.6 AS response_model, c.7 AS tokens, c.8 AS span_kind, c.9 AS is_http, c.10 AS parent "
        "FROM (SELECT arrayJoin({cases:Array(Tuple(String, String, String, String, String, String, UInt64, String, "
        "Bool, String))}) AS c))",
        parameters={"cases": [case[:-1] for case in KINDS]},
    ).result_rows
    got = {name: (kind, is_request) for name, kind, is_request in rows}
    for name, *_, parent, expected in KINDS:
        span_kind = next(case[7] for case in KINDS if case[0] == name)
        assert got[name] == (expected, parent == "" or span_kind in ("server", "consumer")), name


@pytest.mark.parametrize(
    ("provider", "model", "response_model", "price_id"),
    [
        ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", "openai/gpt-4.1"),  # the dated answer model, via its dataset alias
        ("openai", "gpt-4o-mini", "", "openai/gpt-4o-mini"),
        ("", "openai/gpt-4o-mini", "", "openai/gpt-4o-mini"),  # a provider prefix (LiteLLM, OpenRouter)
        ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514", "anthropic/claude-sonnet-4-0"),
        ("gcp.gemini", "gemini-2.5-pro", "", "google/gemini-2.5-pro"),
        ("OpenAI", "GPT-4.1", "", "openai/gpt-4.1"),  # case as some SDKs send it
        ("groq", "llama-3.3-70b", "", "groq/llama-3.3-70b"),  # data/prices/overrides.yaml
        ("nowhere", "no-such-model", "", ""),
    ],
)
def test_price_entries_are_found_the_way_spans_name_models(stack, ch, provider, model, response_model, price_id):
    assert ch.command(
        "SELECT mp_price_id({p:String}, {m:String}, {r:String})",
        parameters={"p": provider, "m": model, "r": response_model},
    ) == (price_id or "")


def test_cost_of_a_call_to_the_tenth_of_a_nano_dollar(stack, ch):
    """gpt-4.1-mini: $0.40 input, $0.10 cached input, $1.60 output per million tokens (genai-prices)."""
    cost = ch.query(
        "SELECT mp_llm_cost('openai/gpt-4.1-mini', today(), 1234, 567, 1000, 0, 0), "
        "mp_llm_cost('openai/gpt-4.1-mini', today(), 1, 0, 0, 0, 0), mp_llm_cost('nowhere/x', today(), 1, 1, 0, 0, 0)"
    ).result_rows[0]
    assert cost[0] == Decimal("0.0011008")  # (234 x 0.4 + 1000 x 0.1 + 567 x 1.6) / 1e6
    assert cost[1] == Decimal("0.0000004")
    assert cost[2] is None
