"""Billing accounts and feature flags from files and URLs, and cost by account, on the real stack."""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from metrics_platform.defs import resources
from metrics_platform.defs.enrichment import (
    billing_accounts,
    cost_attributed_to_accounts,
    cost_by_account_daily,
    feature_flags,
)
from metrics_platform.enrichment.billing import (
    BILLING_ACCOUNTS_ENV,
    parse_billing_accounts,
    sample_billing_accounts,
    user_hash,
)
from metrics_platform.enrichment.flags import parse_feature_flags
from metrics_platform.enrichment.sources import SAMPLE_DIR, SourceError, display_source, read_source
from tests.helpers import flat_event, ingest, span_id, trace_id, wait_for

SALT = "test-salt-not-secret"  # METRICS_PLATFORM_PII_SALT of the test stack (tests/conftest.py)
HEADER = "user_id_hash,account_id,account_name,plan"


def h(user: str) -> str:
    return user_hash(SALT, user)


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, object]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _source_config(node: str, source: str) -> dict:
    return {"ops": {node: {"config": {"source": source}}}}


def _accounts(ch) -> dict[str, tuple[str, str, str]]:
    rows = ch.query("SELECT user_id_hash, account_id, account_name, plan FROM billing_accounts").result_rows
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on loopback: (directory, base URL)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- parsing, without the stack --------------------------------------------------------------


def test_bad_csv_rows_are_rejected_with_line_and_reason_and_good_rows_kept():
    text = "\n".join(
        [
            "User_Id_Hash, account_id ,account_name,plan,extra",  # header case and spaces are forgiven
            f"{h('a')},acct-1,Acme,Enterprise,x",
            f"{h('b')},acct-1,,pro,x",  # no name: the id stands in
            "not-a-hash,acct-2,Globex,pro,x",
            "someone@example.com,acct-2,Globex,pro,x",
            f"{h('c')},,Globex,pro,x",
            f"{h('a')},acct-9,Other,free,x",  # same user again
            f"{h('d')},unassigned,Nobody,free,x",
            f"{h('e')},acct-3,Too,many,fields,here",
            "",
            f"{h('f').upper()},acct-3,Initech,free,x",  # upper-case hex is normalised
        ]
    )
    parsed = parse_billing_accounts("accounts.csv", text, "csv")
    assert [(a.user_id_hash, a.account_id, a.account_name, a.plan) for a in parsed.rows] == [
        (h("a"), "acct-1", "Acme", "enterprise"),
        (h("b"), "acct-1", "acct-1", "pro"),
        (h("f"), "acct-3", "Initech", "free"),
    ]
    reasons = {r.location: r.reason for r in parsed.rejects}
    assert set(reasons) == {"line 4", "line 5", "line 6", "line 7", "line 8", "line 9"}
    assert "64 hex characters" in reasons["line 4"] and "10 characters" in reasons["line 4"]
    assert "email" in reasons["line 5"] and "someone" not in reasons["line 5"]  # never echo raw identifiers
    assert reasons["line 6"] == "account_id is missing or empty"
    assert reasons["line 7"] == "duplicate of line 2"
    assert "reserved" in reasons["line 8"]
    assert reasons["line 9"] == "has 6 fields, the header has 5"
    assert parsed.records == 9


def test_unusable_sources_fail_naming_the_source(tmp_path: Path):
    with pytest.raises(SourceError, match=r"nowhere\.csv: cannot read the file"):
        read_source(str(tmp_path / "nowhere.csv"))
    with pytest.raises(SourceError, match=r"a\.csv: line 1: the CSV header lacks account_id, plan"):
        parse_billing_accounts("a.csv", "user_id_hash,name\nx,y\n", "csv")
    with pytest.raises(SourceError, match=r"a\.json: invalid JSON at line 2, column 1"):
        parse_billing_accounts("a.json", "[\n}", "json")
    with pytest.raises(SourceError, match="an array under 'billing_accounts' or 'accounts'"):
        parse_billing_accounts("a.json", '{"users": []}', "json")
    with pytest.raises(SourceError, match="unsupported source"):
        read_source("ftp://example.com/a.csv")

    jsonl = tmp_path / "flags.data"  # no telling extension: the content decides
    jsonl.write_text(
        '{"scope": "agent", "target": "router", "flag": "x", "enabled": "yes"}\n'
        "{broken\n"
        '{"scope": "team", "target": "t", "flag": "y", "enabled": true}\n'
        '{"scope": "route", "target": "GET /", "flag": "z", "variant": "b"}\n'
    )
    text, fmt = read_source(str(jsonl))
    assert fmt == "jsonl"
    parsed = parse_feature_flags(str(jsonl), text, fmt)
    assert [(f.scope, f.target, f.flag, f.enabled, f.variant) for f in parsed.rows] == [
        ("agent", "router", "x", True, ""),
        ("route", "GET /", "z", True, "b"),
    ]
    assert [r.location for r in parsed.rejects] == ["line 2", "line 3"]
    assert parsed.rejects[0].reason.startswith("not valid JSON")
    assert parsed.rejects[1].reason == "scope must be 'agent' or 'route', got 'team'"

    assert display_source("https://bob:s3cret@example.com/a.csv?token=abc") == (
        "https://bob@example.com/a.csv?<redacted>"
    )


def test_sample_billing_accounts_are_deterministic_and_hash_like_the_collector(tmp_path: Path):
    first = sample_billing_accounts(SALT, tmp_path / "one.csv")
    second = sample_billing_accounts(SALT, tmp_path / "two.csv")
    assert first.read_text() == second.read_text()
    parsed = parse_billing_accounts(str(first), *read_source(str(first)))
    assert not parsed.rejects
    by_hash = {a.user_id_hash: a for a in parsed.rows}
    # What the Collector writes for user u-10000 (tests/test_otlp_ingest.py checks the Collector side).
    assert h("u-10000") in by_hash
    assert len(parsed.rows) == 1950  # one user in forty has no account
    assert len({a.account_id for a in parsed.rows}) == 30
    assert {a.plan for a in parsed.rows} == {"free", "pro", "enterprise"}
    other_salt = sample_billing_accounts("another-salt", tmp_path / "three.csv")
    assert h("u-10000") not in other_salt.read_text()


# --- loading, on the stack -------------------------------------------------------------------


def test_billing_accounts_load_good_rows_and_report_bad_ones(stack, ch, tmp_path: Path):
    source = tmp_path / "billing_accounts.csv"
    source.write_text(
        f"{HEADER}\n{h('ann')},acct-1,Acme,enterprise\n{h('bob')},acct-2,Globex,pro\n"
        f"xyz,acct-3,Initech,free\n{h('cat')},acct-2,Globex,\n"
    )
    result = dg.materialize(
        [billing_accounts],
        resources=resources.resources(),
        run_config=_source_config("billing_accounts", str(source)),
    )
    assert result.success
    meta = _meta(result, "billing_accounts")
    assert (meta["records"], meta["rows_loaded"], meta["rows_rejected"], meta["accounts"]) == (4, 2, 2, 2)
    assert "| line 4 | user_id_hash must be 64 hex characters" in meta["rejects"]
    assert "| line 5 | plan is missing or empty |" in meta["rejects"]
    assert _accounts(ch) == {h("ann"): ("acct-1", "Acme", "enterprise"), h("bob"): ("acct-2", "Globex", "pro")}
    check = _checks(result)["source_rows_valid"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    loads = ch.query(
        "SELECT records, loaded, rejected, run_id FROM enrichment_loads WHERE source = {s:String}",
        parameters={"s": str(source)},
    ).result_rows
    assert loads == [(4, 2, 2, result.run_id)]

    # A source without a single valid row fails and keeps the current mapping.
    source.write_text(f"{HEADER}\nxyz,acct-3,Initech,free\n")
    with pytest.raises(dg.Failure, match=r"no valid billing_accounts rows \(1 rejected; first reject: line 2"):
        dg.materialize(
            [billing_accounts],
            resources=resources.resources(),
            run_config=_source_config("billing_accounts", str(source)),
        )
    assert set(_accounts(ch)) == {h("ann"), h("bob")}
    # No staging table is left behind by either run.
    assert not ch.query("SELECT name FROM system.tables WHERE name LIKE 'billing_accounts_load_%'").result_rows


def test_json_over_http_and_json_file_sources_load(stack, ch, tmp_path: Path, http_dir: tuple[Path, str]):
    served, base = http_dir
    (served / "accounts.json").write_text(
        json.dumps(
            {
                "accounts": [
                    {"user_id_hash": h("dan"), "account_id": 42, "account_name": "Hooli", "plan": "pro"},
                    {"user_id_hash": h("eve"), "account_id": "acct-7", "plan": "free"},
                    {"user_id_hash": h("fay"), "account_id": ["not", "text"], "plan": "free"},
                    "not an object",
                ]
            }
        )
    )
    url = f"{base}/accounts.json?token=secret-token"
    result = dg.materialize(
        [billing_accounts], resources=resources.resources(), run_config=_source_config("billing_accounts", url)
    )
    meta = _meta(result, "billing_accounts")
    assert meta["source"] == f"{base}/accounts.json?<redacted>"  # a token in the URL is not stored
    assert (meta["rows_loaded"], meta["rows_rejected"]) == (2, 2)
    assert "| item 3 | account_id must be a string, not list |" in meta["rejects"]
    assert "| item 4 | expected an object, found str |" in meta["rejects"]
    assert _accounts(ch) == {h("dan"): ("42", "Hooli", "pro"), h("eve"): ("acct-7", "acct-7", "free")}
    assert ch.query("SELECT DISTINCT source FROM billing_accounts").result_rows == [
        (f"{base}/accounts.json?<redacted>",)
    ]

    # An HTTP error fails the run with the URL and status, and keeps the loaded accounts.
    with pytest.raises(dg.Failure, match=r"/missing\.csv: HTTP 404"):
        dg.materialize(
            [billing_accounts],
            resources=resources.resources(),
            run_config=_source_config("billing_accounts", f"{base}/missing.csv"),
        )
    assert set(_accounts(ch)) == {h("dan"), h("eve")}

    flags = tmp_path / "flags.json"
    flags.write_text(
        json.dumps(
            {
                "agents": {
                    "router": {"planner_v2": True, "prompt": "b", "tools": {"enabled": "off"}},
                    "ghost-agent": {"x": 3},
                },
                "routes": {"POST /v1/answer": {"cache": False}},
            }
        )
    )
    result = dg.materialize(
        [feature_flags], resources=resources.resources(), run_config=_source_config("feature_flags", str(flags))
    )
    meta = _meta(result, "feature_flags")
    assert (meta["rows_loaded"], meta["rows_rejected"]) == (4, 1)
    assert "| agents.ghost-agent.x | value must be true/false, a variant string or an object |" in meta["rejects"]
    rows = ch.query("SELECT scope, target, flag, enabled, variant FROM feature_flags ORDER BY flag").result_rows
    assert rows == [
        ("route", "POST /v1/answer", "cache", False, ""),
        ("agent", "router", "planner_v2", True, ""),
        ("agent", "router", "prompt", True, "b"),
        ("agent", "router", "tools", False, ""),
    ]

    # The shipped sample loads without a configured source.
    result = dg.materialize([feature_flags], resources=resources.resources())
    meta = _meta(result, "feature_flags")
    assert meta["source"] == str(SAMPLE_DIR / "feature_flags.json")
    assert meta["rows_loaded"] > 0 and meta["rows_rejected"] == 0


# --- cost by account -------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_cost_by_account_daily_attributes_cost_per_account(stack, ch, tmp_path: Path):
    # A day no other test writes to: cost_by_account_daily has no service column to filter on
    # (tests/test_drift.py keeps its windows to 20-27, 30-37 and 60 days ago).
    day = datetime.now(UTC).date() - timedelta(days=45)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    service = f"cost-{uuid.uuid4().hex[:8]}"
    run_trace, orphan_trace, run_span = trace_id(), trace_id(), span_id()

    def event(user: str | None, cost: float, at: datetime = noon, **fields: object) -> dict:
        return flat_event(
            service, ts=_iso(at), user_id_hash=h(user) if user else "", cost_usd=cost, tokens_prompt=100, **fields
        )

    # Calls are requests (spans without a parent here), tokens those of LLM calls, cost every call's.
    events = [
        event("ann", 0.0, trace_id=run_trace, span_id=run_span, name="agent_run"),
        event("ann", 0.010, trace_id=run_trace, parent_span_id=run_span),
        # a tool step carries no user: it belongs to ann through its parent
        event(None, 0.0, trace_id=run_trace, parent_span_id=run_span, kind="tool", status="error"),
        event("bob", 0.020, at=datetime(day.year, day.month, day.day, 23, 59, 59, 999000, tzinfo=UTC)),
        event("cat", 0.005, at=datetime(day.year, day.month, day.day, tzinfo=UTC)),
        event("xavier", 0.015, status="error"),  # a user no billing account knows
        event(None, 0.001, trace_id=orphan_trace),  # no user anywhere in its trace
        event("cat", 0.100, at=noon + timedelta(days=1)),  # the next day
    ]
    ingest(stack.kafka, ch, service, events)
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(f"{HEADER}\n{h('ann')},acct-1,Acme,enterprise\n{h('bob')},acct-1,Acme,enterprise\n")
    accounts.write_text(accounts.read_text() + f"{h('cat')},acct-2,Globex,pro\n")

    window = {"start": str(day), "end": str(day + timedelta(days=1))}
    run_config = {
        "ops": {
            "billing_accounts": {"config": {"source": str(accounts)}},
            "cost_by_account_daily": {"config": window},
            "cost_by_account_daily_cost_attributed_to_accounts": {"config": {**window, "max_unassigned_share": 0.1}},
        }
    }
    assets = [billing_accounts, cost_by_account_daily, cost_attributed_to_accounts]

    def table() -> dict[tuple[date, str], tuple]:
        rows = ch.query(
            "SELECT day, account_id, account_name, plan, calls, errors, tokens_prompt, cost_usd, users "
            "FROM cost_by_account_daily WHERE day IN ({d1:Date}, {d2:Date})",
            parameters={"d1": day, "d2": day + timedelta(days=1)},
        ).result_rows
        assert len(rows) == len({(r[0], r[1]) for r in rows}), "one row per day and account"
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}

    result = dg.materialize(assets, resources=resources.resources(), run_config=run_config)
    assert result.success
    expected = {
        (day, "acct-1"): ("Acme", "enterprise", 2, 0, 300, Decimal("0.030000"), 2),
        (day, "acct-2"): ("Globex", "pro", 1, 0, 100, Decimal("0.005000"), 1),
        (day, "unassigned"): ("unassigned", "", 2, 1, 200, Decimal("0.016000"), 1),
        (day + timedelta(days=1), "acct-2"): ("Globex", "pro", 1, 0, 100, Decimal("0.100000"), 1),
    }
    assert table() == expected
    meta = _meta(result, "cost_by_account_daily")
    assert meta["cost_usd"] == pytest.approx(0.151) and meta["unassigned_cost_usd"] == pytest.approx(0.016)
    assert "| acct-2 | Globex | pro | 2 | 0 | 210 | 0.1050 |" in meta["top_accounts"]
    check = _checks(result)["cost_attributed_to_accounts"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["unassigned_share"].value == pytest.approx(0.016 / 0.151)

    # Re-running is idempotent; a reloaded mapping re-attributes the days it recomputes.
    result = dg.materialize(assets, resources=resources.resources(), run_config=run_config)
    assert table() == expected
    accounts.write_text(accounts.read_text() + f"{h('xavier')},acct-2,Globex,pro\n")
    result = dg.materialize(assets, resources=resources.resources(), run_config=run_config)
    assert table()[(day, "acct-2")] == ("Globex", "pro", 2, 1, 200, Decimal("0.020000"), 2)
    assert table()[(day, "unassigned")] == ("unassigned", "", 1, 0, 100, Decimal("0.001000"), 0)
    assert _checks(result)["cost_attributed_to_accounts"].passed


def test_demo_traffic_is_attributed_with_the_generated_sample_accounts(stack, ch, monkeypatch):
    """What `make up` shows: demo traffic through the Collector, priced per generated sample account."""
    from metrics_platform.demo import DEPLOYMENTS, run_demo

    monkeypatch.delenv(BILLING_ACCOUNTS_ENV, raising=False)
    assert not (SAMPLE_DIR / "billing_accounts.csv").exists(), "a shipped file would win over the sample"
    services = sorted({d.service for d in DEPLOYMENTS})
    # A run's root span starts before the run (the demo lays steps out backwards from "now").
    since = datetime.now(UTC) - timedelta(minutes=2)
    demo_filter = "service IN {s:Array(String)} AND ts >= {t:DateTime64(3, 'UTC')}"
    params = {"s": services, "t": since}

    def stored() -> int:
        return ch.query(f"SELECT count() FROM agent_events WHERE {demo_filter}", parameters=params).result_rows[0][0]

    before = stored()
    stats = run_demo(stack.collector.otlp_http_endpoint, rate=60, duration_s=2, seed=11, progress=False)
    wait_for(lambda: stored() >= before + stats.spans, 60, "the demo's spans")
    today = datetime.now(UTC).date()
    if since.date() != today:  # the demo straddled midnight; its spans are on two days
        pytest.skip("demo ran across midnight UTC")

    result = dg.materialize(
        [billing_accounts, cost_by_account_daily],
        resources=resources.resources(),
        run_config={"ops": {"cost_by_account_daily": {"config": {"days": 1}}}},
    )
    meta = _meta(result, "billing_accounts")
    assert meta["source"] == str(stack.state_dir / "enrichment" / "billing_accounts.csv")
    assert (meta["rows_loaded"], meta["rows_rejected"], meta["accounts"]) == (1950, 0, 30)

    # The generated hashes match what the Collector wrote: almost all of the demo's cost has an account.
    mapped, total = ch.query(
        f"SELECT sumIf(cost_usd, user_id_hash IN (SELECT user_id_hash FROM billing_accounts)), sum(cost_usd) "
        f"FROM agent_events WHERE {demo_filter}",
        parameters=params,
    ).result_rows[0]
    assert total > 0 and mapped / total > Decimal("0.85"), (mapped, total)
    # ...and cost_by_account_daily has it under real accounts (other tests' events today have no user).
    accounts = ch.query(
        "SELECT account_id, account_name, plan, cost_usd FROM cost_by_account_daily "
        "WHERE day = {d:Date} AND account_id != 'unassigned' AND cost_usd > 0",
        parameters={"d": today},
    ).result_rows
    assert len(accounts) >= 10
    assert {plan for _, _, plan, _ in accounts} == {"free", "pro", "enterprise"}
    assert sum(cost for *_, cost in accounts) >= mapped
