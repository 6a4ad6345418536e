"""Synthetic AI-agent traffic, sent through the real OpenTelemetry SDK to an OTLP/HTTP endpoint.

The real SDK (not hand-built OTLP payloads) makes the demo send exactly what an instrumented agent sends,
so whatever the Collector or the ClickHouse mapping gets wrong shows up here first.
"""

import math
import random
import time
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue
from tqdm import tqdm

Attrs = dict[str, AttributeValue]

# Illustrative list prices in USD per 1M tokens (input, output); only their relative size matters here.
PRICE_PER_1M_USD: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4": (1.00, 5.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "llama-3.3-70b": (0.59, 0.79),
    "text-embedding-3-small": (0.02, 0.00),
}

# model -> (provider in the project's vocabulary, GenAI provider name, latency factor relative to gpt-4.1)
MODELS: dict[str, tuple[str, str, float]] = {
    "gpt-4.1": ("openai", "openai", 1.0),
    "gpt-4.1-mini": ("openai", "openai", 0.6),
    "claude-sonnet-4": ("anthropic", "anthropic", 1.2),
    "claude-haiku-4": ("anthropic", "anthropic", 0.5),
    "gemini-2.5-pro": ("google", "gcp.gemini", 1.3),
    "llama-3.3-70b": ("groq", "groq", 0.3),
    "text-embedding-3-small": ("openai", "openai", 0.15),
}
EMBEDDING_MODELS = frozenset({"text-embedding-3-small"})
# Providers often answer with a dated snapshot, so the mapping must not assume response == request model.
RESPONSE_MODEL = {"gpt-4.1": "gpt-4.1-2025-04-14", "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14"}
LLM_ERRORS = ("RateLimitError", "Timeout", "ContentFilter")
TOOL_ERRORS = ("ToolTimeout", "HTTPError", "ValidationError")
N_USERS = 2000
ANSWER, SEARCH, STATUS = "POST /v1/answer", "POST /v1/search", "GET /v1/status"


@dataclass(frozen=True)
class _Deployment:
    service: str
    env: str
    agent: str
    routes: tuple[str, ...]
    models: tuple[str, ...]
    tools: tuple[str, ...]
    weight: float  # share of requests, so prod dominates as it would in real traffic


# One TracerProvider each, because the OTel Resource (service, env, agent) is fixed per provider.
DEPLOYMENTS: tuple[_Deployment, ...] = (
    _Deployment(
        "api",
        "prod",
        "router",
        (ANSWER, SEARCH, STATUS),
        ("gpt-4.1", "gpt-4.1-mini"),
        ("web_search", "vector_search"),
        5,
    ),
    _Deployment(
        "api",
        "staging",
        "router",
        (ANSWER, SEARCH, STATUS),
        ("gpt-4.1", "llama-3.3-70b"),
        ("web_search", "vector_search"),
        1,
    ),
    _Deployment(
        "support-bot-svc",
        "prod",
        "support-bot",
        (ANSWER, "POST /v1/tickets/summarize"),
        ("claude-sonnet-4", "claude-haiku-4"),
        ("create_ticket", "get_customer", "vector_search"),
        4,
    ),
    _Deployment(
        "support-bot-svc",
        "staging",
        "support-bot",
        (ANSWER, "POST /v1/tickets/summarize"),
        ("claude-haiku-4",),
        ("create_ticket", "get_customer"),
        1,
    ),
    _Deployment(
        "search-svc",
        "prod",
        "retriever",
        (SEARCH,),
        ("text-embedding-3-small", "gpt-4.1-mini"),
        ("vector_search", "rerank"),
        4,
    ),
    _Deployment(
        "billing-assistant",
        "prod",
        "billing-agent",
        (ANSWER, "POST /v1/invoices/explain"),
        ("gpt-4.1", "claude-sonnet-4"),
        ("get_invoice", "sql_query"),
        2,
    ),
    _Deployment(
        "billing-assistant",
        "staging",
        "billing-agent",
        (ANSWER, "POST /v1/invoices/explain"),
        ("gpt-4.1-mini",),
        ("get_invoice", "sql_query"),
        1,
    ),
    _Deployment(
        "docs-qa",
        "prod",
        "docs-qa",
        (ANSWER,),
        ("gemini-2.5-pro", "text-embedding-3-small"),
        ("fetch_doc", "vector_search"),
        3,
    ),
    _Deployment("docs-qa", "staging", "docs-qa", (ANSWER,), ("gemini-2.5-pro", "llama-3.3-70b"), ("fetch_doc",), 1),
)


@dataclass(frozen=True)
class DemoStats:
    """What run_demo sent, so a caller can compare it with what landed in ClickHouse."""

    requests: int
    spans: int
    errors: int  # failed LLM and tool spans (root spans never carry an error)
    elapsed_s: float  # includes the final flush, so spans/s reflects delivered throughput

    @property
    def spans_per_s(self) -> float:
        """Throughput over the whole run; zero-safe because elapsed can round to nothing."""
        return self.spans / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.requests:,} requests, {self.spans:,} spans, {self.errors:,} errors "
            f"in {self.elapsed_s:.2f} s ({self.spans_per_s:,.0f} spans/s)"
        )


class _Child(NamedTuple):
    name: str
    kind: SpanKind
    attrs: Attrs
    duration_ms: float
    failed: bool
    status_description: str | None  # set => mark the span status ERROR, not just the attribute


def _user(rng: random.Random) -> Attrs:
    # Squaring skews traffic towards a few heavy users, as real usage is.
    k = int(N_USERS * rng.random() ** 2)
    attrs: Attrs = {"user_id": f"u-{10000 + k}"}
    if k % 3 == 0:  # the same users always leak an email, so per-user scrubbing is checkable
        attrs["user_email"] = f"user{k}@example.com"
    return attrs


def _llm_latency_ms(rng: random.Random, error: str | None, speed: float) -> float:
    if error == "RateLimitError":
        return rng.uniform(40, 300)  # rejected before any generation
    if error == "Timeout":
        return rng.uniform(29_500, 30_500)  # a typical 30 s client timeout
    if rng.random() < 0.02:
        return rng.uniform(5_000, 15_000)  # the slow tail that p99 dashboards exist for
    return max(80.0, rng.lognormvariate(math.log(900 * speed), 0.6))


class _Llm(NamedTuple):
    model: str
    tokens_in: int
    tokens_out: int
    error: str | None
    refusal: bool


def _seed_attrs(call: _Llm, dep: _Deployment, route: str, user: Attrs) -> Attrs:
    price_in, price_out = PRICE_PER_1M_USD[call.model]
    cost = round((call.tokens_in * price_in + call.tokens_out * price_out) / 1e6, 8)
    attrs: Attrs = {
        "agent": dep.agent,
        "model": call.model,
        "provider": MODELS[call.model][0],
        "route": route,
        "tokens_prompt": call.tokens_in,
        "tokens_completion": call.tokens_out,
        "cost_usd": cost,
        "status": "error" if call.error else "ok",
        **user,
    }
    if call.error:
        attrs["error_type"] = call.error
    return attrs


def _genai_attrs(call: _Llm, rng: random.Random, user_id: AttributeValue) -> Attrs:
    embeddings = call.model in EMBEDDING_MODELS
    # Older instrumentations still emit gen_ai.system; the mapping must accept both.
    provider_key = "gen_ai.system" if rng.random() < 0.3 else "gen_ai.provider.name"
    attrs: Attrs = {
        "gen_ai.operation.name": "embeddings" if embeddings else "chat",
        "gen_ai.request.model": call.model,
        provider_key: MODELS[call.model][1],
        "gen_ai.usage.input_tokens": call.tokens_in,
        "user_id": user_id,
    }
    if not embeddings:  # embeddings produce no output tokens, so the convention omits the attribute
        attrs["gen_ai.usage.output_tokens"] = call.tokens_out
    if call.error:
        attrs["error.type"] = call.error
    else:  # a failed call has no response to describe
        attrs["gen_ai.response.model"] = RESPONSE_MODEL.get(call.model, call.model)
        if not embeddings:
            attrs["gen_ai.response.finish_reasons"] = ["content_filter" if call.refusal else "stop"]
    return attrs


def _llm_call(rng: random.Random, dep: _Deployment, route: str, user: Attrs) -> _Child:
    model = rng.choice(dep.models)
    embeddings = model in EMBEDDING_MODELS
    error = rng.choice(LLM_ERRORS) if rng.random() < 0.03 else None
    refusal = error is None and not embeddings and rng.random() < 0.02
    tokens_in = 0 if error == "RateLimitError" else 20 + int(rng.lognormvariate(math.log(1200), 0.7))
    tokens_out = 0 if error or embeddings else 1 + int(rng.lognormvariate(math.log(250), 0.8))
    call = _Llm(model, tokens_in, rng.randint(15, 60) if refusal else tokens_out, error, refusal)
    if rng.random() < 0.5:
        name, attrs = "llm_call", _seed_attrs(call, dep, route, user)
    else:  # GenAI semantic conventions, span named "{operation} {model}" as they prescribe
        attrs = _genai_attrs(call, rng, user["user_id"])
        name = f"{attrs['gen_ai.operation.name']} {model}"
    if refusal:
        attrs["refusal"] = True
    # Half of the errors only carry the attribute, because not every instrumentation sets span status.
    status_description = error if error and rng.random() < 0.5 else None
    duration = _llm_latency_ms(rng, error, MODELS[model][2])
    return _Child(name, SpanKind.CLIENT, attrs, duration, error is not None, status_description)


def _tool_call(rng: random.Random, dep: _Deployment) -> _Child:
    tool = rng.choice(dep.tools)
    error = rng.choice(TOOL_ERRORS) if rng.random() < 0.05 else None
    attrs: Attrs = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "status": "error" if error else "ok",
    }
    if error:
        attrs["error.type"] = error
    typical_ms = max(20.0, rng.lognormvariate(math.log(90), 0.7))
    duration = rng.uniform(2_000, 5_000) if error == "ToolTimeout" else typical_ms
    return _Child("tool_call", SpanKind.INTERNAL, attrs, duration, error is not None, error)


def _emit_request(tracer: Tracer, dep: _Deployment, rng: random.Random, now_ns: int) -> tuple[int, int]:
    """Emit one agent run as a trace; returns (spans, failed spans)."""
    route = rng.choice(dep.routes)
    user = _user(rng)
    # An agent reasons before it acts, so the first step is always a model call.
    steps = ["tool"] * rng.randint(0, 3) + ["llm"] * (rng.randint(1, 4) - 1)
    rng.shuffle(steps)
    children = [_llm_call(rng, dep, route, user) if s == "llm" else _tool_call(rng, dep) for s in ["llm", *steps]]
    # Lay the steps out on a simulated clock instead of sleeping, so thousands of spans/s are possible.
    offsets_ms, cursor = [], rng.uniform(1, 10)
    for child in children:
        offsets_ms.append(cursor)
        cursor += child.duration_ms + rng.uniform(2, 25)
    total_ns = int(cursor * 1e6)
    # The run ends now: exported spans are always in the past, so freshness/lag metrics stay sane.
    root_start = now_ns - total_ns
    root = tracer.start_span(
        "agent_run", kind=SpanKind.SERVER, start_time=root_start, attributes={"route": route, **user}
    )
    ctx = trace.set_span_in_context(root)
    for child, offset_ms in zip(children, offsets_ms, strict=True):
        start = root_start + int(offset_ms * 1e6)
        span = tracer.start_span(child.name, context=ctx, kind=child.kind, start_time=start, attributes=child.attrs)
        if child.status_description:
            span.set_status(Status(StatusCode.ERROR, child.status_description))
        span.end(end_time=start + int(child.duration_ms * 1e6))
    root.end(end_time=now_ns)
    return 1 + len(children), sum(c.failed for c in children)


def _make_provider(dep: _Deployment, traces_url: str) -> TracerProvider:
    resource: Attrs = {"service.name": dep.service, "deployment.environment": dep.env, "agent": dep.agent}
    if len(dep.routes) == 1:
        # A single-route deployment states its route once on the Resource, exercising the mapping's fallback.
        resource["route"] = dep.routes[0]
    # ALWAYS_ON so an OTEL_TRACES_SAMPLER in the environment cannot make DemoStats.spans lie;
    # shutdown_on_exit=False because run_demo shuts down itself and atexit hooks would pile up per call.
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create(resource), shutdown_on_exit=False)
    # A large queue so bursts are buffered rather than silently dropped by the SDK.
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=traces_url),
            max_queue_size=65536,
            schedule_delay_millis=200,
            max_export_batch_size=2048,
        )
    )
    return provider


def run_demo(
    endpoint: str, rate: float, duration_s: float, seed: int | None = None, progress: bool = True
) -> DemoStats:
    """Send `rate` synthetic agent runs per second for `duration_s` seconds to an OTLP/HTTP endpoint.

    Exists so the whole pipeline (Collector, Kafka, ClickHouse, dashboards) can be exercised and
    load-tested without real agents. `endpoint` is the OTLP/HTTP base URL, e.g. "http://127.0.0.1:4318".
    With `seed`, the traffic content is reproducible; trace/span ids and timestamps are not, so that
    repeated runs never collide in storage. Returns counts to compare with what the pipeline stored.
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration_s must be positive")
    rng = random.Random(seed)
    total = max(1, round(rate * duration_s))
    traces_url = f"{endpoint.rstrip('/')}/v1/traces"
    providers = [_make_provider(dep, traces_url) for dep in DEPLOYMENTS]
    targets: list[tuple[Tracer, _Deployment]] = [
        (p.get_tracer("metrics_platform.demo"), dep) for p, dep in zip(providers, DEPLOYMENTS, strict=True)
    ]
    cum_weights = list(accumulate(dep.weight for dep in DEPLOYMENTS))
    spans = errors = 0
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="req", desc="demo", disable=not progress) as bar:
            for i in range(total):
                # Pace against an absolute schedule so per-request overhead never accumulates;
                # when behind, skip sleeping and catch up as fast as the SDK allows.
                ahead = started + i / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
                tracer, dep = rng.choices(targets, cum_weights=cum_weights)[0]
                n_spans, n_failed = _emit_request(tracer, dep, rng, time.time_ns())
                spans += n_spans
                errors += n_failed
                bar.update()
    finally:
        for provider in providers:
            provider.force_flush()
            provider.shutdown()
    return DemoStats(requests=total, spans=spans, errors=errors, elapsed_s=time.perf_counter() - started)
