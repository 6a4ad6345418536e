"""Every rollup of agent_events, described once: the projections of sql/0011 and sql/0019.

A rollup is a projection of agent_events: ClickHouse fills it in the same part as the raw rows it
aggregates, so rollups and raw events cannot disagree, and any query whose GROUP BY keys and
filters use a projection's keys (with the same time bucket) and its aggregates reads the
projection instead of raw rows. This registry writes such queries (dashboards, SLO sensors, the
audit) and names each projection for the audit, which compares it with raw events.
"""

from __future__ import annotations

from dataclasses import dataclass

# Aggregates, exactly as the projections spell them (a query matches a projection only with the same
# expressions). Every rollup starts with spans = count(), which the audit reports as its size.
SPAN_SUMS: dict[str, str] = {
    "spans": "count()",
    "errors": "countIf(status != 'ok')",
    "tokens_prompt": "sum(tokens_prompt)",
    "tokens_completion": "sum(tokens_completion)",
    "tokens_cache_read": "sum(tokens_cache_read)",
    "tokens_cache_write": "sum(tokens_cache_write)",
    "tokens_reasoning": "sum(tokens_reasoning)",
    "cost_usd": "sum(cost_usd)",
}
# The per-minute and per-user rollups answer questions about requests only (SLO windows, cost per
# user), so they fold kinds into conditional aggregates: one row per bucket and key, not per kind.
REQUEST_SUMS: dict[str, str] = {
    "spans": "count()",
    "requests": "countIf(is_request)",
    "failed_requests": "countIf(is_request AND status != 'ok')",
}
USER_SUMS: dict[str, str] = {
    **REQUEST_SUMS,
    "llm_tokens_prompt": "sumIf(tokens_prompt, kind = 'llm')",
    "llm_tokens_completion": "sumIf(tokens_completion, kind = 'llm')",
    "cost_usd": "sum(cost_usd)",
}
# Per endpoint (sql/0019): the requests' and the LLM calls' figures of one service and route, in one row.
ENDPOINT_SUMS: dict[str, str] = {**USER_SUMS, "llm_calls": "countIf(kind = 'llm')"}
# Per model, or per agent and tool, across services and envs (sql/0019): calls and failures.
CALL_SUMS: dict[str, str] = {"spans": "count()", "errors": "countIf(status != 'ok')"}
SPAN_LATENCY = "quantilesTDigest(0.5, 0.95)(latency_ms)"
REQUEST_LATENCY = "quantilesTDigestIf(0.5, 0.95)(latency_ms, is_request)"


@dataclass(frozen=True)
class Rollup:
    """One projection: its time bucket over ``ts``, its keys, its sums and latency quantiles (if any)."""

    name: str
    bucket_column: str
    bucket: str
    keys: tuple[str, ...]
    sums: dict[str, str]
    latency: str | None
    audit_hours: int  # default audit window: a few of its buckets

    @property
    def latency_rows(self) -> str:
        """The raw rows its latency quantiles cover, as a condition."""
        return "is_request" if self.latency == REQUEST_LATENCY else "1"

    @property
    def group_columns(self) -> tuple[str, ...]:
        return (self.bucket_column, *self.keys)

    def query(self, where: str = "", keys: tuple[str, ...] | None = None) -> str:
        """Per bucket and key, every aggregate, for buckets in [{start}, {end}) and an optional filter.

        ``keys`` narrows the grouping to a subset of the projection's keys (still answered by it).
        """
        keys = self.keys if keys is None else keys
        columns = [f"{self.bucket} AS {self.bucket_column}", *keys, *(f"{e} AS {n}" for n, e in self.sums.items())]
        if self.latency:
            columns.append(f"{self.latency} AS latency_q")
        condition = f"{self.bucket} >= {{start:DateTime}} AND {self.bucket} < {{end:DateTime}}"
        return (
            f"SELECT {', '.join(columns)} FROM agent_events WHERE {condition}{f' AND ({where})' if where else ''} "
            f"GROUP BY {', '.join((self.bucket_column, *keys))}"
        )


ROLLUPS: dict[str, Rollup] = {
    rollup.name: rollup
    for rollup in (
        Rollup("p_route_minute", "ts_min", "toStartOfMinute(ts)", ("service", "env", "route"),
               REQUEST_SUMS, REQUEST_LATENCY, audit_hours=3),
        Rollup("p_route_hour", "ts_hour", "toStartOfHour(ts)", ("service", "env", "route", "kind", "is_request"),
               SPAN_SUMS, SPAN_LATENCY, audit_hours=24),
        Rollup("p_route_day", "day", "toDate(ts)", ("service", "env", "route", "kind", "is_request"),
               SPAN_SUMS, SPAN_LATENCY, audit_hours=72),
        Rollup("p_model_minute", "ts_min", "toStartOfMinute(ts)", ("service", "env", "model", "provider", "kind"),
               SPAN_SUMS, SPAN_LATENCY, audit_hours=3),
        Rollup("p_model_hour", "ts_hour", "toStartOfHour(ts)",
               ("service", "env", "model", "provider", "kind", "error_type"), SPAN_SUMS, SPAN_LATENCY, audit_hours=24),
        Rollup("p_agent_hour", "ts_hour", "toStartOfHour(ts)", ("service", "env", "agent", "tool", "kind"),
               SPAN_SUMS, SPAN_LATENCY, audit_hours=24),
        Rollup("p_user_day", "day", "toDate(ts)", ("user_id_hash",), USER_SUMS, None, audit_hours=72),
        Rollup("p_endpoint_hour", "ts_hour", "toStartOfHour(ts)", ("service", "route"),
               ENDPOINT_SUMS, REQUEST_LATENCY, audit_hours=24),
        Rollup("p_model_calls_hour", "ts_hour", "toStartOfHour(ts)", ("model", "provider", "kind"),
               CALL_SUMS, SPAN_LATENCY, audit_hours=24),
        Rollup("p_agent_calls_hour", "ts_hour", "toStartOfHour(ts)", ("agent", "tool", "kind"),
               CALL_SUMS, SPAN_LATENCY, audit_hours=24),
    )
}  # fmt: skip
