"""Synthetic AI-agent traffic, sent through the real OpenTelemetry SDK to an OTLP/HTTP endpoint.

Shaped like real applications (../shared/notes/real-instrumentation.md): the application's own
span carries the route, the user and the agent; the instrumentation's LLM spans are its children
and carry the model, the provider and token counts, mostly without a cost; tool steps and the
HTTP calls under LLM calls are further children. Three instrumentation styles are mixed:

* ``semconv``: like opentelemetry-instrumentation-openai-v2, GenAI semantic conventions only;
* ``openlit``: also reports its own cost (``gen_ai.usage.cost``), cache-read tokens, and an HTTP
  client span under every LLM span (a failed call fails both);
* ``seed``: the original design's client example, everything in the platform's own attributes
  (``model``, ``tokens_prompt``, ``cost_usd``) with service, agent and route on the resource.

Some requests run long: their application span ends a few seconds after its children, so it is
exported in a later batch, as a long agent run's would be.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue
from tqdm import tqdm

Attrs = dict[str, AttributeValue]


@dataclass(frozen=True)
class Model:
    provider: str  # gen_ai.provider.name
    response_model: str  # the dated variant the provider answers with
    speed: float  # latency factor relative to gpt-4.1
    cached_input: bool = False  # the provider reports cache reads
    cache_writes: bool = False  # ...and cache writes (Anthropic)
    reasoning: bool = False  # reports reasoning tokens inside the output
    embeddings: bool = False


MODELS: dict[str, Model] = {
    "gpt-4.1": Model("openai", "gpt-4.1-2025-04-14", 1.0, cached_input=True),
    "gpt-4.1-mini": Model("openai", "gpt-4.1-mini-2025-04-14", 0.6, cached_input=True),
    "o4-mini": Model("openai", "o4-mini-2025-04-16", 1.6, cached_input=True, reasoning=True),
    "claude-sonnet-4-5": Model("anthropic", "claude-sonnet-4-5-20250929", 1.2, cached_input=True, cache_writes=True),
    "claude-haiku-4-5": Model("anthropic", "claude-haiku-4-5-20251001", 0.5, cached_input=True, cache_writes=True),
    "gemini-2.5-pro": Model("gcp.gemini", "gemini-2.5-pro", 1.3, cached_input=True, reasoning=True),
    # Priced by data/prices/overrides.yaml (self-hosted): the dataset cannot know our GPUs.
    "llama-3.3-70b": Model("groq", "llama-3.3-70b", 0.3),
    "text-embedding-3-small": Model("openai", "text-embedding-3-small", 0.15, embeddings=True),
}
# Illustrative list prices (USD per 1M input, output tokens) for the cost that openlit-style and
# seed-style instrumentation report themselves; the platform prices the rest from its price table.
LIST_PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "o4-mini": (1.10, 4.40),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "llama-3.3-70b": (0.59, 0.79),
    "text-embedding-3-small": (0.02, 0.00),
}
API_URLS = {
    "openai": "https://api.openai.com/v1/chat/completions",
    "anthropic": "https://api.anthropic.com/v1/messages",
    "gcp.gemini": "https://generativelanguage.googleapis.com/v1beta/models:generateContent",
    "groq": "https://api.groq.com/openai/v1/chat/completions",
}
LLM_ERRORS = ("RateLimitError", "Timeout", "ContentFilter")
TOOL_ERRORS = ("ToolTimeout", "HTTPError", "ValidationError")
N_USERS = 2000
ANSWER, SEARCH, STATUS = "POST /v1/answer", "POST /v1/search", "GET /v1/status"


@dataclass(frozen=True)
class Deployment:
    service: str
    env: str
    agent: str
    routes: tuple[str, ...]
    models: tuple[str, ...]
    tools: tuple[str, ...]
    weight: float  # share of requests, so prod dominates as it would in real traffic
    style: str  # semconv | openlit | seed (see the module docstring)
    agent_span: bool = False  # the app wraps its steps in an invoke_agent span


DEPLOYMENTS: tuple[Deployment, ...] = (
    Deployment("api", "prod", "router", (ANSWER, SEARCH, STATUS), ("gpt-4.1", "gpt-4.1-mini"),
               ("web_search", "vector_search"), 5, "semconv"),
    Deployment("api", "staging", "router", (ANSWER, SEARCH, STATUS), ("gpt-4.1", "llama-3.3-70b"),
               ("web_search", "vector_search"), 1, "semconv"),
    Deployment("support-bot-svc", "prod", "support-bot", (ANSWER, "POST /v1/tickets/summarize"),
               ("claude-sonnet-4-5", "claude-haiku-4-5"), ("create_ticket", "get_customer", "vector_search"), 4,
               "openlit", agent_span=True),
    Deployment("support-bot-svc", "staging", "support-bot", (ANSWER, "POST /v1/tickets/summarize"),
               ("claude-haiku-4-5",), ("create_ticket", "get_customer"), 1, "openlit", agent_span=True),
    Deployment("search-svc", "prod", "retriever", (SEARCH,), ("text-embedding-3-small", "gpt-4.1-mini"),
               ("vector_search", "rerank"), 4, "semconv"),
    Deployment("billing-assistant", "prod", "billing-agent", (ANSWER, "POST /v1/invoices/explain"),
               ("gpt-4.1", "o4-mini"), ("get_invoice", "sql_query"), 2, "seed"),
    Deployment("billing-assistant", "staging", "billing-agent", (ANSWER, "POST /v1/invoices/explain"),
               ("gpt-4.1-mini",), ("get_invoice", "sql_query"), 1, "seed"),
    Deployment("docs-qa", "prod", "docs-qa", (ANSWER,), ("gemini-2.5-pro", "text-embedding-3-small"),
               ("fetch_doc", "vector_search"), 3, "semconv", agent_span=True),
    Deployment("docs-qa", "staging", "docs-qa", (ANSWER,), ("gemini-2.5-pro", "llama-3.3-70b"), ("fetch_doc",), 1,
               "semconv", agent_span=True),
)  # fmt: skip


@dataclass(frozen=True)
class DemoStats:
    """What run_demo sent, so a caller can compare it with what landed in ClickHouse."""

    requests: int
    spans: int
    failed_requests: int
    llm_calls: int
    elapsed_s: float  # includes the final flush, so spans/s reflects delivered throughput

    @property
    def spans_per_s(self) -> float:
        """Throughput over the whole run; zero-safe because elapsed can round to nothing."""
        return self.spans / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.requests:,} requests ({self.failed_requests:,} failed), {self.llm_calls:,} LLM calls, "
            f"{self.spans:,} spans in {self.elapsed_s:.2f} s ({self.spans_per_s:,.0f} spans/s)"
        )


class _Step(NamedTuple):
    name: str
    kind: SpanKind
    attrs: Attrs
    duration_ms: float
    error: str | None
    marks_status: bool  # the instrumentation sets span status ERROR (not all do: some only set error.type)
    http: Attrs | None  # an HTTP client child span (openlit), with its attributes


class _Usage(NamedTuple):
    tokens_in: int
    tokens_out: int
    cache_read: int
    cache_write: int
    reasoning: int


def _user_id(rng: random.Random) -> str:
    # Squaring skews traffic towards a few heavy users, as real usage is.
    return f"u-{10000 + int(N_USERS * rng.random() ** 2)}"


def _llm_latency_ms(rng: random.Random, error: str | None, speed: float) -> float:
    if error == "RateLimitError":
        return rng.uniform(40, 300)  # rejected before any generation
    if error == "Timeout":
        return rng.uniform(29_500, 30_500)  # a typical 30 s client timeout
    if rng.random() < 0.02:
        return rng.uniform(5_000, 15_000)  # the slow tail that p99 dashboards exist for
    return max(80.0, rng.lognormvariate(math.log(900 * speed), 0.6))


def _usage(rng: random.Random, model: Model, error: str | None) -> _Usage:
    if error == "RateLimitError":
        return _Usage(0, 0, 0, 0, 0)
    tokens_in = 20 + int(rng.lognormvariate(math.log(1200), 0.7))
    if model.embeddings:
        return _Usage(tokens_in, 0, 0, 0, 0)
    tokens_out = 0 if error else 1 + int(rng.lognormvariate(math.log(250), 0.8))
    # Input tokens include cached ones, output tokens include reasoning ones (GenAI conventions).
    cache_read = int(tokens_in * rng.uniform(0.5, 0.9)) if model.cached_input and rng.random() < 0.4 else 0
    cache_write = int((tokens_in - cache_read) * 0.8) if model.cache_writes and rng.random() < 0.2 else 0
    reasoning = int(tokens_out * rng.uniform(0.3, 0.8)) if model.reasoning and tokens_out else 0
    return _Usage(tokens_in, tokens_out, cache_read, cache_write, reasoning)


def _list_cost(model: str, usage: _Usage) -> float:
    price_in, price_out = LIST_PRICES_PER_1M[model]
    return round((usage.tokens_in * price_in + usage.tokens_out * price_out) / 1e6, 10)


def _llm_step(rng: random.Random, dep: Deployment) -> _Step:
    model_name = rng.choice(dep.models)
    model = MODELS[model_name]
    error = rng.choice(LLM_ERRORS) if rng.random() < 0.03 else None
    usage = _usage(rng, model, error)
    duration = _llm_latency_ms(rng, error, model.speed)
    operation = "embeddings" if model.embeddings else "chat"
    if dep.style == "seed":
        attrs: Attrs = {
            "model": model_name,
            "provider": model.provider,
            "tokens_prompt": usage.tokens_in,
            "tokens_completion": usage.tokens_out,
            "cost_usd": _list_cost(model_name, usage),
            "status": "error" if error else "ok",
        }
        if error:
            attrs["error_type"] = error
        return _Step("llm_call", SpanKind.CLIENT, attrs, duration, error, False, None)
    attrs = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": model.provider,
        "gen_ai.request.model": model_name,
        "gen_ai.usage.input_tokens": usage.tokens_in,
    }
    if not model.embeddings:  # embeddings produce no output tokens, so the convention omits them
        attrs["gen_ai.usage.output_tokens"] = usage.tokens_out
    if usage.cache_read:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read
    if usage.cache_write:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write
    if usage.reasoning:
        attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning
    if error:
        attrs["error.type"] = error
    else:  # a failed call has no response to describe
        attrs["gen_ai.response.model"] = model.response_model
        if not model.embeddings:
            refused = rng.random() < 0.02
            attrs["gen_ai.response.finish_reasons"] = ["content_filter" if refused else "stop"]
    http = None
    if dep.style == "openlit":
        attrs["gen_ai.usage.cost"] = _list_cost(model_name, usage)
        http = {
            "http.request.method": "POST",
            "url.full": API_URLS.get(model.provider, "https://api.example.com/v1/chat"),
            "http.response.status_code": 429 if error == "RateLimitError" else (500 if error else 200),
        }
    marks_status = error is not None and (http is not None or rng.random() < 0.5)
    return _Step(f"{operation} {model_name}", SpanKind.CLIENT, attrs, duration, error, marks_status, http)


def _tool_step(rng: random.Random, dep: Deployment) -> _Step:
    tool = rng.choice(dep.tools)
    error = rng.choice(TOOL_ERRORS) if rng.random() < 0.05 else None
    attrs: Attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
    if error:
        attrs["error.type"] = error
    typical_ms = max(20.0, rng.lognormvariate(math.log(90), 0.7))
    duration = rng.uniform(2_000, 5_000) if error == "ToolTimeout" else typical_ms
    return _Step(f"execute_tool {tool}", SpanKind.INTERNAL, attrs, duration, error, error is not None, None)


def _emit_step(tracer: Tracer, step: _Step, parent: Span, start_ns: int) -> None:
    ctx = trace.set_span_in_context(parent)
    span = tracer.start_span(step.name, context=ctx, kind=step.kind, start_time=start_ns, attributes=step.attrs)
    end_ns = start_ns + int(step.duration_ms * 1e6)
    if step.http is not None:
        http = tracer.start_span(
            "POST", context=trace.set_span_in_context(span), kind=SpanKind.CLIENT,
            start_time=start_ns + 1_000_000, attributes=step.http,
        )  # fmt: skip
        if step.error:
            http.set_status(Status(StatusCode.ERROR))
        http.end(end_time=end_ns - 1_000_000)
    if step.marks_status:
        span.set_status(Status(StatusCode.ERROR, step.error))
    span.end(end_time=end_ns)


class _Request(NamedTuple):
    root: Span
    end_ns: int
    due: float  # wall-clock time at which to end (export) the root span
    spans: int
    failed: bool
    llm_calls: int


def _start_request(tracer: Tracer, dep: Deployment, rng: random.Random, now_ns: int) -> _Request:
    """Emit one request's steps now; its application span is returned to be ended when due."""
    route = rng.choice(dep.routes)
    # An agent reasons before it acts, so the first step is always a model call.
    kinds = ["tool"] * rng.randint(0, 3) + ["llm"] * (rng.randint(1, 4) - 1)
    rng.shuffle(kinds)
    steps = [_llm_step(rng, dep) if k == "llm" else _tool_step(rng, dep) for k in ["llm", *kinds]]
    # Lay the steps out on a simulated clock instead of sleeping, so thousands of spans/s are possible.
    offsets_ms, cursor = [], rng.uniform(1, 10)
    for step in steps:
        offsets_ms.append(cursor)
        cursor += step.duration_ms + rng.uniform(2, 25)
    root_start = now_ns - int(cursor * 1e6)
    # A failed model call fails the request half of the time (the app gives up instead of retrying).
    failed = any(s.error in LLM_ERRORS for s in steps) and rng.random() < 0.5
    attrs: Attrs = {"http.route": route, "http.request.method": route.split()[0], "user_id": _user_id(rng)}
    if dep.style != "seed":
        attrs["agent"] = dep.agent
    root = tracer.start_span(route, kind=SpanKind.SERVER, start_time=root_start, attributes=attrs)
    parent, spans = root, 1 + len(steps) + sum(s.http is not None for s in steps)
    agent_span = None
    if dep.agent_span:
        agent_span = tracer.start_span(
            f"invoke_agent {dep.agent}", context=trace.set_span_in_context(root), kind=SpanKind.INTERNAL,
            start_time=root_start + 500_000,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": dep.agent},
        )  # fmt: skip
        parent, spans = agent_span, spans + 1
    for step, offset_ms in zip(steps, offsets_ms, strict=True):
        _emit_step(tracer, step, parent, root_start + int(offset_ms * 1e6))
    if agent_span is not None:
        agent_span.end(end_time=now_ns - 500_000)
    if failed:
        root.set_status(Status(StatusCode.ERROR, "upstream model call failed"))
        root.set_attribute("error.type", "UpstreamError")
    # One request in ten runs long: its application span is exported seconds after its children.
    delay_s = rng.uniform(1.0, 4.0) if rng.random() < 0.1 else 0.0
    llm_calls = sum(s.kind == SpanKind.CLIENT for s in steps)
    return _Request(root, now_ns + int(delay_s * 1e9), time.monotonic() + delay_s, spans, failed, llm_calls)


def _session(certificate_file: str | None) -> requests.Session | None:
    """A session that keeps the given CA bundle: requests lets REQUESTS_CA_BUNDLE (set on many machines)
    override a session's own, so with a CA of its own the session ignores the environment."""
    if not certificate_file:
        return None
    session = requests.Session()
    session.trust_env = False
    return session


def _make_provider(
    dep: Deployment, traces_url: str, headers: dict[str, str] | None = None, certificate_file: str | None = None
) -> TracerProvider:
    resource: Attrs = {"service.name": dep.service, "deployment.environment.name": dep.env}
    if dep.style == "seed":
        # The original design's client example puts these on the resource.
        resource |= {"deployment.environment": dep.env, "agent": dep.agent}
        if len(dep.routes) == 1:
            resource["route"] = dep.routes[0]
    # ALWAYS_ON so an OTEL_TRACES_SAMPLER in the environment cannot make DemoStats.spans lie;
    # shutdown_on_exit=False because run_demo shuts down itself and atexit hooks would pile up per call.
    provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create(resource), shutdown_on_exit=False)
    # A large queue so bursts are buffered rather than silently dropped by the SDK.
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(
                endpoint=traces_url,
                headers=headers,
                certificate_file=certificate_file,
                session=_session(certificate_file),
            ),
            max_queue_size=65536,
            schedule_delay_millis=200,
            max_export_batch_size=2048,
        )
    )
    return provider


def run_demo(
    endpoint: str,
    rate: float,
    duration_s: float,
    seed: int | None = None,
    progress: bool = True,
    headers: dict[str, str] | None = None,
    certificate_file: str | None = None,
) -> DemoStats:
    """Send `rate` synthetic agent requests per second for `duration_s` seconds to an OTLP/HTTP endpoint.

    Exists so the whole pipeline (Collector, Kafka, ClickHouse, dashboards) can be exercised and
    load-tested without real agents. `endpoint` is the OTLP/HTTP base URL, e.g. "http://127.0.0.1:4318".
    With `seed`, the traffic content is reproducible; trace/span ids and timestamps are not, so that
    repeated runs never collide in storage. Returns counts to compare with what the pipeline stored.
    `headers` go with every export (the bearer token: stack/network.otlp_headers); `certificate_file` is the CA
    bundle that verifies an https endpoint (None: the system's).
    """
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration_s must be positive")
    rng = random.Random(seed)
    total = max(1, round(rate * duration_s))
    traces_url = f"{endpoint.rstrip('/')}/v1/traces"
    providers = [_make_provider(dep, traces_url, headers, certificate_file) for dep in DEPLOYMENTS]
    targets = [(p.get_tracer("metrics_platform.demo"), dep) for p, dep in zip(providers, DEPLOYMENTS, strict=True)]
    cum_weights = list(accumulate(dep.weight for dep in DEPLOYMENTS))
    pending: list[_Request] = []
    done: list[_Request] = []

    def end_due(force: bool = False) -> None:
        for request in [r for r in pending if force or r.due <= time.monotonic()]:
            request.root.end(end_time=request.end_ns)
            pending.remove(request)
            done.append(request)

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
                pending.append(_start_request(tracer, dep, rng, time.time_ns()))
                end_due()
                bar.update()
            while pending:
                end_due()
                time.sleep(0.05)
    finally:
        end_due(force=True)
        for provider in providers:
            provider.force_flush()
            provider.shutdown()
    return DemoStats(
        requests=total,
        spans=sum(r.spans for r in done),
        failed_requests=sum(r.failed for r in done),
        llm_calls=sum(r.llm_calls for r in done),
        elapsed_s=time.perf_counter() - started,
    )
