"""Right numbers from real instrumentation shapes: requests vs spans, attribution down the trace,
cost from the price table at the price in force, recompute after a price change, original-design
history replayed. Against the real Collector, Kafka and ClickHouse."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import orjson
import pytest

from metrics_platform import replay, rollup_audit
from metrics_platform.defs.prices import cost_recompute, model_prices, models_without_price
from metrics_platform.prices.load import load_prices
from metrics_platform.rollups import ROLLUPS
from tests.collector_helpers import post_otlp
from tests.helpers import flat_event, ingest, ingest_state, produce, stored_count, wait_for
from tests.otlp_json import CLIENT, SERVER, request, span

SALT = "test-salt-not-secret"  # tests/conftest.py


def _hash(user_id: str) -> str:
    return hashlib.sha256(f"{SALT}{user_id}".encode()).hexdigest()


def _rows(ch, trace_id: str, expected: int) -> dict[str, dict]:
    def fetch():
        rows = list(
            ch.query(
                "SELECT * EXCEPT attrs FROM agent_events WHERE trace_id = {t:String}", parameters={"t": trace_id}
            ).named_results()
        )
        return rows if len(rows) >= expected else None

    found = wait_for(fetch, 60, f"{expected} final rows of trace {trace_id}", lambda: ingest_state(ch, trace_id))
    return {r["name"]: r for r in found}


def _send(stack, service: str, spans: list[dict]) -> None:
    status, body = post_otlp(stack, request({"service.name": service, "deployment.environment.name": "prod"}, spans))
    assert status == 200, body


@pytest.mark.parametrize("failed", [False, True])
def test_a_request_with_an_llm_call_counts_once_and_its_tokens_belong_to_its_user_agent_and_route(stack, ch, failed):
    """openlit's shape: the app span carries user, agent and route; the LLM span tokens; an HTTP
    client span sits under the LLM span. The children are exported first, the app span a second
    later in another request (as a request that ends after its children is)."""
    service = f"attr-{uuid.uuid4().hex[:8]}"
    trace = secrets.token_hex(16)
    start = time.time_ns() - 20_000_000_000
    root = span(trace, "POST /v1/answer", {"http.route": "POST /v1/answer", "user_id": "u-77", "agent": "helper"},
                kind=SERVER, start_ns=start, duration_ms=2500, failed=failed)  # fmt: skip
    llm = span(
        trace, "chat gpt-4.1",
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4.1",
         "gen_ai.response.model": "gpt-4.1-2025-04-14", "gen_ai.usage.input_tokens": 2000,
         "gen_ai.usage.output_tokens": 0 if failed else 300, "gen_ai.usage.cache_read.input_tokens": 1000},
        parent=root["spanId"], kind=CLIENT, start_ns=start + 10_000_000, duration_ms=2000, failed=failed,
    )  # fmt: skip
    http_attrs = {"http.request.method": "POST", "url.full": "https://api.openai.com/v1/chat/completions"}
    http = span(trace, "POST", http_attrs, parent=llm["spanId"], kind=CLIENT, start_ns=start + 11_000_000,
                duration_ms=1990, failed=failed)  # fmt: skip
    _send(stack, service, [llm, http])
    time.sleep(1.0)  # less than the attribution delay (2 s in tests)
    _send(stack, service, [root])

    rows = _rows(ch, trace, 3)
    assert {name: (r["kind"], r["is_request"]) for name, r in rows.items()} == {
        "POST /v1/answer": ("request", True),
        "chat gpt-4.1": ("llm", False),
        "POST": ("http", False),
    }
    for name, row in rows.items():
        assert (row["user_id_hash"], row["agent"], row["route"], row["env"]) == (
            _hash("u-77"), "helper", "POST /v1/answer", "prod"
        ), name  # fmt: skip
        assert not row["parent_missing"], name
    # gpt-4.1 per million tokens: 1000 uncached input x $2 + 1000 cached x $0.50 + 300 output x $8
    expected_cost = Decimal("0.0049") if not failed else Decimal("0.0025")
    assert rows["chat gpt-4.1"]["cost_usd"] == expected_cost
    assert rows["chat gpt-4.1"]["cost_source"] == "computed"

    # Counted as one request and one LLM call, failed or not, in the rollups too.
    counts = ch.query(
        "SELECT countIf(is_request), countIf(is_request AND status != 'ok'), countIf(kind = 'llm'), "
        "countIf(kind = 'llm' AND status != 'ok'), sumIf(tokens_prompt, kind = 'llm') FROM agent_events "
        "WHERE trace_id = {t:String}",
        parameters={"t": trace},
    ).result_rows[0]
    assert counts == (1, int(failed), 1, int(failed), 2000)
    by_route = ch.query(
        "SELECT kind, is_request, count(), countIf(status != 'ok'), sum(tokens_prompt), sum(cost_usd) "
        "FROM agent_events WHERE toStartOfHour(ts) >= toStartOfHour(now() - INTERVAL 1 DAY) "
        "AND service = {s:String} AND route = 'POST /v1/answer' GROUP BY kind, is_request ORDER BY kind",
        parameters={"s": service},
        settings={"force_optimize_projection_name": "p_route_hour"},
    ).result_rows
    assert by_route == [
        ("http", False, 1, int(failed), 0, Decimal(0)),
        ("llm", False, 1, int(failed), 2000, expected_cost),
        ("request", True, 1, int(failed), 0, Decimal(0)),
    ]
    by_user = ch.query(
        "SELECT sumIf(tokens_prompt, kind = 'llm'), sum(cost_usd) FROM agent_events WHERE toDate(ts) >= today() - 1 "
        "AND user_id_hash = {u:String}",
        parameters={"u": _hash("u-77")},
        settings={"force_optimize_projection_name": "p_user_day"},
    ).result_rows[0]
    assert by_user[0] >= 2000 and by_user[1] >= expected_cost


def test_a_span_whose_parent_never_arrives_keeps_its_own_values_and_is_flagged(stack, ch):
    service = f"orphan-{uuid.uuid4().hex[:8]}"
    trace = secrets.token_hex(16)
    orphan = span(trace, "execute_tool search", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search",
                                                  "agent": "solo"}, parent=secrets.token_hex(8))  # fmt: skip
    _send(stack, service, [orphan])
    row = _rows(ch, trace, 1)["execute_tool search"]
    assert (row["kind"], row["tool"], row["agent"]) == ("tool", "search", "solo")
    assert (row["route"], row["user_id_hash"]) == ("", "")
    assert row["parent_missing"] and not row["is_request"]


def test_a_span_sent_twice_is_stored_once(stack, ch):
    """A Collector resending after a crash, or an SDK retrying an export, must not double-count."""
    service = f"twice-{uuid.uuid4().hex[:8]}"
    trace = secrets.token_hex(16)
    root = span(trace, "GET /status", {"http.route": "GET /status"}, kind=SERVER)
    _send(stack, service, [root])
    _send(stack, service, [root])
    time.sleep(1.5)
    _send(stack, service, [root])
    _rows(ch, trace, 1)
    time.sleep(4)  # two attribution delays: every copy has been considered
    assert ch.command("SELECT count() FROM agent_events WHERE trace_id = {t:String}", parameters={"t": trace}) == 1


def test_copies_read_in_one_inbox_block_are_stored_once(stack, ch):
    """A producer retrying after a broker failover writes a record again a few offsets on, and the Kafka
    engine reads both copies into one block; a span twice in one record is one block too. Each span is
    stored once, whichever copy."""
    service = f"oneblock-{uuid.uuid4().hex[:8]}"
    trace = secrets.token_hex(16)
    root = span(trace, "POST /chat", {"http.route": "POST /chat"}, kind=SERVER)
    child = span(trace, "chat", {"gen_ai.request.model": "gpt-4.1", "gen_ai.usage.input_tokens": 7},
                 parent=root["spanId"], kind=CLIENT)  # fmt: skip
    tool = span(trace, "execute_tool search", {"gen_ai.tool.name": "search"}, parent=root["spanId"])
    resource = {"service.name": service}
    record, doubled = orjson.dumps(request(resource, [root, child])), orjson.dumps(request(resource, [tool, tool]))
    positions = produce(stack.kafka, stack.kafka.spans_topic, [record, record, doubled], key=trace.encode())
    assert len({partition for partition, _ in positions}) == 1
    rows = _rows(ch, trace, 3)
    time.sleep(4)  # two attribution delays: every copy has been considered
    blocks = ch.query(
        "SELECT span_id, groupUniqArray(_block_number) FROM span_inbox WHERE trace_id = {t:String} GROUP BY span_id",
        parameters={"t": trace},
    ).result_rows
    assert all(len(b) == 1 for _, b in blocks), f"the copies were read in more than one block: {blocks}"
    stored = ch.query(
        "SELECT name, count() FROM agent_events WHERE trace_id = {t:String} GROUP BY name", parameters={"t": trace}
    ).result_rows
    assert sorted(stored) == [("POST /chat", 1), ("chat", 1), ("execute_tool search", 1)]
    assert rows["chat"]["route"] == "POST /chat" and rows["execute_tool search"]["route"] == "POST /chat"


def test_rows_another_replica_finalized_leave_this_servers_cursor_alone(stack, ch):
    """Replicas of a shard share agent_events, each finalizing its own inbox (sql/0017): a row finalized by
    another server, however far its inbox block, does not move this server's cursor, and this server's next
    span is still finalized."""
    service = f"replica-{uuid.uuid4().hex[:8]}"
    far = 10**15
    ch.command(
        "INSERT INTO agent_events (ts, trace_id, span_id, service, kind, ingested_at, inbox_block, finalized_by) "
        "VALUES (now64(3), {t:String}, {s:String}, {svc:String}, 'internal', now64(3), {b:UInt64}, 'replica-b')",
        parameters={"t": secrets.token_hex(16), "s": secrets.token_hex(8), "svc": service, "b": far},
    )
    assert ch.command("SELECT done_block FROM finalizer_cursor") < far
    trace = secrets.token_hex(16)
    _send(stack, service, [span(trace, "GET /after", {"http.route": "GET /after"}, kind=SERVER)])
    row = _rows(ch, trace, 1)["GET /after"]
    assert (row["finalized_by"], row["inbox_block"]) != ("replica-b", far)
    assert row["finalized_by"] == ""


@pytest.fixture()
def prices(stack, ch, tmp_path, monkeypatch):
    """Load the dataset plus test-only models; the default price table is restored afterwards."""

    def use(text: str) -> Path:
        path = tmp_path / f"overrides-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(text)
        monkeypatch.setenv("METRICS_PLATFORM_PRICE_OVERRIDES", str(path))
        load_prices(ch, path)
        return path

    yield use
    load_prices(ch, stack.price_overrides)


def _ts(day: date, hour: int = 12) -> str:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).isoformat().replace("+00:00", "Z")


def test_each_token_type_is_priced_at_the_price_in_force_and_a_recompute_changes_only_later_days(
    stack, ch, prices, dagster_resources
):
    model, embedding = f"tm-{uuid.uuid4().hex[:6]}", f"te-{uuid.uuid4().hex[:6]}"
    today = datetime.now(UTC).date()
    d4, d1 = today - timedelta(days=4), today - timedelta(days=1)
    prices(
        f"""
prices:
  - {{provider: testprov, model: {model}, valid_from: {today - timedelta(days=10)}, input: 2, output: 8,
     cache_read: 0.5, cache_write: 3.75, reasoning: 12, tier: {{start_tokens: 100000, input: 4, output: 16}}}}
  - {{provider: testprov, model: {model}, valid_from: {today - timedelta(days=2)}, input: 1, output: 4}}
  - {{provider: testprov, model: {embedding}, input: 0.02}}
"""
    )
    service = f"price-{uuid.uuid4().hex[:8]}"
    common = {"provider": "testprov", "cost_usd": None}
    events = {
        "mixed": flat_event(service, ts=_ts(d4), model=model, tokens_prompt=1000, tokens_cache_read=300,
                            tokens_cache_write=200, tokens_completion=500, tokens_reasoning=100, **common),
        "tiered": flat_event(service, ts=_ts(d4, 13), model=model, tokens_prompt=150_000, tokens_completion=1000,
                             **common),
        "new_price": flat_event(service, ts=_ts(d1), model=f"testprov/{model}-2026-01-15", tokens_prompt=1000,
                                tokens_cache_read=300, tokens_completion=500, **common),
        "embedding": flat_event(service, ts=_ts(d1, 13), model=embedding, tokens_prompt=9, tokens_completion=0,
                                **common),
        "reported": flat_event(service, ts=_ts(d1, 14), model=model, tokens_prompt=1000, tokens_completion=500,
                               provider="testprov", cost_usd=0.5),
    }  # fmt: skip
    for event in events.values():
        if event["cost_usd"] is None:
            del event["cost_usd"]  # the span reports no cost: the platform prices it
    ingest(stack.kafka, ch, service, list(events.values()))

    def costs() -> dict[str, tuple[Decimal, Decimal, str]]:
        rows = ch.query(
            "SELECT span_id, cost_usd, cost_computed_usd, cost_source FROM agent_events WHERE service = {s:String}",
            parameters={"s": service},
        ).result_rows
        by_span = {span_id: rest for span_id, *rest in rows}
        return {name: tuple(by_span[e["span_id"]]) for name, e in events.items()}

    before = costs()
    # uncached 500 x $2 + cache read 300 x $0.50 + cache write 200 x $3.75 + output 400 x $8 + reasoning 100 x $12
    assert before["mixed"] == (Decimal("0.0063"), Decimal("0.0063"), "computed")
    assert before["tiered"] == (Decimal("0.616"), Decimal("0.616"), "computed")  # above 100k input: $4 / $16
    # the later price; no cache-read price listed, so input's; the name had a prefix and a date suffix
    assert before["new_price"] == (Decimal("0.003"), Decimal("0.003"), "computed")
    assert before["embedding"] == (Decimal("0.00000018"), Decimal("0.00000018"), "computed")
    assert before["reported"] == (Decimal("0.5"), Decimal("0.003"), "reported")

    prices(
        f"""
prices:
  - {{provider: testprov, model: {model}, valid_from: {today - timedelta(days=10)}, input: 2, output: 8,
     cache_read: 0.5, cache_write: 3.75, reasoning: 12, tier: {{start_tokens: 100000, input: 4, output: 16}}}}
  - {{provider: testprov, model: {model}, valid_from: {today - timedelta(days=3)}, input: 3, output: 6}}
  - {{provider: testprov, model: {embedding}, input: 0.02}}
"""
    )
    # A backfill over the range, as the UI launches it: one run (single-run backfill policy).
    result = dg.materialize(
        [cost_recompute],
        resources=dagster_resources,
        tags={"dagster/asset_partition_range_start": str(d4), "dagster/asset_partition_range_end": str(d1)},
    )
    assert result.success
    after = costs()
    assert after["mixed"] == before["mixed"] and after["tiered"] == before["tiered"]  # before the change
    assert after["new_price"] == (Decimal("0.006"), Decimal("0.006"), "computed")  # 700x3 + 300x3 + 500x6
    assert after["reported"] == (Decimal("0.5"), Decimal("0.006"), "reported")  # reported cost untouched
    audit = ch.query(
        "SELECT day, cost_before_usd, cost_after_usd FROM cost_recompute_audit WHERE run_id = {r:String} ORDER BY day",
        parameters={"r": result.run_id},
    ).result_rows
    assert {d4, d1} <= {d for d, *_ in audit}
    # The rollups changed with the raw rows.
    for name in ("p_model_hour", "p_user_day", "p_route_day"):
        start = datetime.combine(d4, datetime.min.time())
        check = rollup_audit.audit(ch, start, start + timedelta(days=4), ROLLUPS[name])
        assert check.passed, (name, check.mismatches[:3])


def test_a_model_without_a_price_shows_in_the_warn_check(stack, ch, dagster_resources, prices):
    prices("prices: []\n")
    service = f"unpriced-{uuid.uuid4().hex[:8]}"
    model = f"mystery-{uuid.uuid4().hex[:6]}"
    ingest(stack.kafka, ch, service, [flat_event(service, model=model, provider="nowhere") for _ in range(3)])
    result = dg.materialize([model_prices, models_without_price], resources=dagster_resources)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert f"| nowhere | {model} | — | 3 |" in evaluation.metadata["models"].value


def test_history_in_the_original_designs_shape_replays_every_valid_line(stack, ch, tmp_path):
    """What `SELECT * FROM agent_events FORMAT JSONEachRow` writes on the original design: text
    timestamps, 32-character user hashes, status 'success'."""
    service = f"seed-{uuid.uuid4().hex[:8]}"
    day = datetime.now(UTC).date() - timedelta(days=2)
    lines = []
    for i in range(40):
        moment = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(seconds=37 * i, milliseconds=71)
        ts: object = moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]  # ClickHouse's DateTime64(3) text
        if i % 4 == 1:
            ts = moment.isoformat().replace("+00:00", "Z")
        elif i % 4 == 2:
            ts = int(moment.timestamp() * 1000)
        failed = i % 9 == 0
        lines.append(
            {"ts": ts, "trace_id": secrets.token_hex(16), "span_id": secrets.token_hex(8), "parent_span_id": "",
             "service": service, "env": "prod", "agent": "order_bot", "model": "gpt-4.1", "provider": "openai",
             "route": "POST /v1/answer", "user_id_hash": secrets.token_hex(16),
             "status": "error" if failed else "success", "error_type": "Timeout" if failed else "",
             "latency_ms": 812, "tokens_prompt": 512, "tokens_completion": 128, "cost_usd": 0.0032,
             "attrs": {"tool": {"name": "search"}}}
        )  # fmt: skip
    (tmp_path / f"{day}.jsonl").write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    report = replay.replay_day(day, tmp_path, stack, ch, run_id="seed-shape")
    assert (report.valid, report.rejected, report.produced) == (40, 0, 40), report.rejects[:3]
    wait_for(lambda: stored_count(ch, service) == 40, 60, "the 40 replayed events")
    requests, failed, cost = ch.query(
        "SELECT countIf(is_request), countIf(status != 'ok'), sum(cost_usd) FROM agent_events "
        "WHERE service = {s:String}",
        parameters={"s": service},
    ).result_rows[0]
    assert (requests, failed, cost) == (40, 5, Decimal("0.128"))
