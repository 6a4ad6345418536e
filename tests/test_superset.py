"""Superset on the real stack: provisioning as code, chart data against ClickHouse, tenants, rendering.

Superset runs as a module fixture (its first start installs it, ~1 min, then sets up its metadata,
~40 s), so the other test modules do not pay for it. Rows are written straight into ClickHouse
tables (the ingest path has its own tests) under names no other test uses, and every comparison
is scoped to them.

Set METRICS_PLATFORM_UPDATE_SCREENSHOTS=1 to write the rendered dashboards to docs/screenshots/.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import pytest
import requests

from metrics_platform import clickhouse
from metrics_platform.bi import charts, portal, provision, render, spec
from metrics_platform.bi.spec import TIMESERIES
from metrics_platform.demo import run_demo
from metrics_platform.enrichment.billing import default_billing_accounts_source, load_billing_accounts
from metrics_platform.stack import superset

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("bi-test-api", "bi-test-worker")
ACCOUNTS = {"bi-acct-acme": ("Acme Robotics", "pro"), "bi-acct-globex": ("Globex Labs", "free")}
# Two users per test account and one without an account (it shows as 'unassigned').
USERS = {f"{i:02x}" * 32: account for i, account in enumerate([*ACCOUNTS, *ACCOUNTS, *ACCOUNTS, ""])}
DEAD_LETTER_TOPIC = "bi-test-topic"
RULES = ("bi-test-errors", "bi-test-lag")
# Where each dataset's rows of this test are: comparisons add the first of these filters the dataset
# has on both sides. Datasets with none (pipeline_health_samples) are compared whole: nothing writes
# to them while this module runs.
SCOPES = {
    "service": list(SERVICES),
    "source_topic": [DEAD_LETTER_TOPIC],
    "rule": list(RULES),
    "account_id": list(ACCOUNTS),
}
GRAIN_SQL = {
    "minute": "toStartOfMinute({c})",
    "5 minutes": "toStartOfFiveMinutes({c})",
    "15 minutes": "toStartOfFifteenMinutes({c})",
    "hour": "toStartOfHour({c})",
    "day": "toStartOfDay({c})",
}
NOW = datetime.now(UTC).replace(microsecond=0)
_EVENT_COLUMNS = [
    "ts", "trace_id", "span_id", "parent_span_id", "service", "env", "kind", "is_request", "agent", "model",
    "provider", "route", "tool", "user_id_hash", "status", "error_type", "latency_ms", "tokens_prompt",
    "tokens_completion", "tokens_cache_read", "tokens_cache_write", "tokens_reasoning", "cost_usd", "ingested_at",
]  # fmt: skip


def _trace(rng: random.Random, i: int) -> list[list]:
    """One request with an agent step, an LLM call and a tool call under it, like the demo's."""
    ts = NOW - timedelta(seconds=rng.randint(120, 6 * 3600))
    service, env = rng.choice(SERVICES), rng.choice(["prod", "staging"])
    route = rng.choice(["POST /v1/answer", "POST /v1/search", "GET /v1/status"])
    agent, user = rng.choice(["agent-bi", "helper-bi"]), rng.choice(list(USERS))
    model, provider = rng.choice([("gpt-4.1", "openai"), ("claude-sonnet-4", "anthropic"), ("gemini-2.5", "google")])
    llm_error = rng.choice(["Timeout", "RateLimitError"]) if rng.random() < 0.05 else ""
    tool_failed = rng.random() < 0.08
    failed = bool(llm_error) and rng.random() < 0.5
    prompt, completion = rng.randint(10, 3000), rng.randint(5, 800)
    cost = Decimal(rng.randint(1, 50_000)) / Decimal(10**6)
    trace, ids = f"{i:032x}", [f"{i:012x}{n:04x}" for n in range(4)]
    common = [service, env]
    rows = [
        [ts, trace, ids[0], "", *common, "request", True, agent, "", "", route, "", user,
         "error" if failed else "ok", "Upstream" if failed else "", rng.randint(200, 9000), 0, 0, 0, 0, 0, Decimal(0)],
        [ts, trace, ids[1], ids[0], *common, "agent", False, agent, "", "", route, "", user, "ok", "",
         rng.randint(100, 8000), 0, 0, 0, 0, 0, Decimal(0)],
        [ts, trace, ids[2], ids[1], *common, "llm", False, agent, model, provider, route, "", user,
         "error" if llm_error else "ok", llm_error, rng.randint(40, 4000), prompt, completion, prompt // 3,
         prompt // 10 if provider == "anthropic" else 0, completion // 4 if provider == "google" else 0, cost],
        [ts, trace, ids[3], ids[1], *common, "tool", False, agent, "", "", route, rng.choice(["search", "fetch"]), user,
         "error" if tool_failed else "ok", "ToolTimeout" if tool_failed else "", rng.randint(5, 900), 0, 0, 0, 0, 0,
         Decimal("0.0001")],
    ]  # fmt: skip
    ingested = ts + timedelta(seconds=rng.random() * 3)
    return [[*row, ingested] for row in rows]


def _fill(ch) -> None:
    """Six hours of traces of test users in two accounts, a day of dead letters, health samples and alerts."""
    rng = random.Random(7)
    ch.insert("agent_events", [row for i in range(800) for row in _trace(rng, i)], column_names=_EVENT_COLUMNS)
    accounts = [[user, account, *ACCOUNTS[account], "bi-test", NOW] for user, account in USERS.items() if account]
    ch.insert(
        "billing_accounts", accounts,
        column_names=["user_id_hash", "account_id", "account_name", "plan", "source", "loaded_at"],
    )  # fmt: skip
    reasons = ["schema: missing field ts", "schema: latency_ms is negative", "json: unexpected end of input"]
    ch.insert(
        "dead_letters",
        [[NOW - timedelta(minutes=rng.randint(5, 1400)), DEAD_LETTER_TOPIC, 0, i, rng.choice(reasons), "{}"]
         for i in range(60)],
        column_names=["received_at", "source_topic", "partition", "offset", "error", "payload"],
    )  # fmt: skip
    samples = []
    for minutes in range(0, 6 * 60, 5):
        at = NOW - timedelta(minutes=minutes)
        for metric, value in (("consumer_lag_total", rng.randint(0, 900)), ("collector_queue_size", rng.randint(0, 5)),
                              ("insert_delay_p50_s", rng.random()), ("insert_delay_p95_s", 1 + rng.random()),
                              ("final_delay_p95_s", 3 + rng.random()), ("clickhouse_freshness_s", rng.random() * 9),
                              ("oldest_settling_s", rng.random() * 3)):  # fmt: skip
            samples.append([at, metric, "", float(value)])
        for group in ("clickhouse_otel_spans", "clickhouse_agent_events"):
            samples.append([at, "consumer_lag", group, float(rng.randint(0, 400))])
    ch.insert("pipeline_health_samples", samples, column_names=["ts", "metric", "label", "value"])
    transitions = []
    for n, (account, state) in enumerate([("bi-acct-acme", "firing"), ("bi-acct-acme", "resolved"),
                                          ("bi-acct-globex", "firing"), ("", "firing")]):  # fmt: skip
        rule = RULES[0] if account else RULES[1]
        transitions.append([NOW - timedelta(minutes=90 - 20 * n), rule, "error_rate" if account else "consumer_lag",
                            f"account_id={account}" if account else "group=g", account, state, "critical",
                            20.0 + n, 14.4, f"burn rate {20 + n}x", "http://x", ["hook"]])  # fmt: skip
    ch.insert(
        "alert_events", transitions,
        column_names=["ts", "rule", "rule_type", "key", "account_id", "state", "severity", "value", "threshold",
                      "message", "dashboard_url", "notified"],
    )  # fmt: skip
    status = [
        [
            NOW,
            RULES[0],
            "error_rate",
            f"account_id={a}",
            a,
            "ok" if a.endswith("acme") else "firing",
            "critical",
            2.0 + n,
            14.4,
            f"burn rate {2 + n}x over 1 h",
        ]
        for n, a in enumerate(ACCOUNTS)
    ]
    status.append([NOW, RULES[1], "consumer_lag", "group=g", "", "firing", "critical", 50000.0, 10000.0, "behind"])
    ch.insert(
        "alert_status", status,
        column_names=["evaluated_at", "rule", "rule_type", "key", "account_id", "state", "severity", "value",
                      "threshold", "detail"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def bi(stack) -> Iterator[object]:
    """Superset started on the test stack, with demo traffic (for the screenshots) and this module's rows."""
    ch = clickhouse.client(stack.clickhouse)
    # The demo's users get accounts (a load replaces the table, so before this module's own rows).
    load_billing_accounts(ch, default_billing_accounts_source(stack.state_dir, stack.pii_salt()))
    _fill(ch)
    run_demo(stack.collector.otlp_http_endpoint, rate=10, duration_s=20, seed=3, progress=False)
    superset.start(stack, report=lambda _: None)  # the demo's spans become final meanwhile
    yield stack
    superset.stop(stack)
    ch.close()


@pytest.fixture(scope="module")
def provisioned(bi) -> dict[str, provision.Provisioned]:
    return {p.slug: p for p in provision.provision(bi, report=lambda _: None)}


@pytest.fixture(scope="module")
def admin(bi):
    return provision.connect(bi)


def _counts(client) -> dict[str, int]:
    return {
        r: client.get(f"/api/v1/{r}/", params={"q": "(page_size:1)"})["count"]
        for r in ("dashboard", "chart", "dataset")
    }


def test_readonly_clickhouse_user(bi):
    user, password = superset.clickhouse_credentials(bi)
    ro = clickhouse_connect.get_client(
        host=bi.clickhouse.host, port=bi.clickhouse.http_port, username=user, password=password,
        database=bi.clickhouse.database,
    )  # fmt: skip
    assert ro.query("SELECT count() FROM agent_events WHERE service IN {s:Array(String)}",
                    parameters={"s": list(SERVICES)}).result_rows[0][0] == 3200  # fmt: skip
    for statement in (
        "INSERT INTO dead_letters (error) VALUES ('x')",
        "DROP TABLE dead_letters",
        "CREATE TABLE t (a UInt8) ENGINE = Memory",
    ):
        with pytest.raises(Exception, match="READONLY|ACCESS_DENIED|Not enough privileges|readonly"):
            ro.command(statement)
    with pytest.raises(Exception, match="AUTHENTICATION_FAILED|Authentication failed"):
        clickhouse_connect.get_client(
            host=bi.clickhouse.host, port=bi.clickhouse.http_port, username=user, password=password + "x"
        )


def test_provisioning_twice_keeps_ids_and_counts(bi, provisioned, admin):
    before = _counts(admin)
    again = {p.slug: p for p in provision.provision(bi, report=lambda _: None)}
    assert _counts(admin) == before
    files = spec.load_all()
    assert set(again) == {d.slug for d in files}
    for slug, first in provisioned.items():
        second = again[slug]
        assert (second.dashboard_id, second.chart_ids, second.dataset_ids) == (
            first.dashboard_id, first.chart_ids, first.dataset_ids
        )  # fmt: skip
        assert second.created == [] and second.deleted == []
        assert second.embedded_id == first.embedded_id
    assert before["dashboard"] >= len(files)
    assert before["chart"] == sum(len(d.charts) for d in files)
    assert before["dataset"] == sum(len(d.datasets) for d in files)


def test_edited_file_updates_in_place(bi, admin, tmp_path):
    path = tmp_path / "edit.yaml"
    path.write_text((spec.DASHBOARDS_DIR / "overview.yaml").read_text().replace("slug: overview", "slug: bi-test-edit"))
    original = spec.load(path)
    first = provision.provision(bi, [original], report=lambda _: None)[0]
    # Rename a chart, change a dataset's SQL, drop the last chart.
    kept = dataclasses.replace(original.charts[0], title="Requests (renamed)")
    key = kept.dataset
    sql = original.datasets[key].sql + "\nWHERE service != 'nothing'"
    edited = dataclasses.replace(
        original,
        charts=(kept, *original.charts[1:-1]),
        datasets={**original.datasets, key: dataclasses.replace(original.datasets[key], sql=sql)},
    )
    second = provision.provision(bi, [edited], report=lambda _: None)[0]
    assert second.dashboard_id == first.dashboard_id
    assert second.dataset_ids == first.dataset_ids
    assert second.chart_ids == {k: v for k, v in first.chart_ids.items() if k != original.charts[-1].key}
    assert second.deleted == [f"chart {original.charts[-1].title}"]
    chart = admin.get(f"/api/v1/chart/{first.chart_ids[kept.key]}")["result"]
    assert chart["slice_name"] == "Requests (renamed)"
    assert admin.get(f"/api/v1/dataset/{first.dataset_ids[key]}")["result"]["sql"] == sql
    layout = json.loads(admin.get(f"/api/v1/dashboard/{first.dashboard_id}")["result"]["position_json"])
    assert {n["meta"]["chartId"] for n in layout.values() if isinstance(n, dict) and n.get("type") == "CHART"} == set(
        second.chart_ids.values()
    )
    with pytest.raises(Exception, match="404"):
        admin.get(f"/api/v1/chart/{first.chart_ids[original.charts[-1].key]}")
    for chart_id in second.chart_ids.values():
        admin.delete(f"/api/v1/chart/{chart_id}")
    for dataset_id in first.dataset_ids.values():
        admin.delete(f"/api/v1/dataset/{dataset_id}")
    admin.delete(f"/api/v1/dashboard/{first.dashboard_id}")


def _window() -> tuple[datetime, datetime]:
    start = (NOW - timedelta(days=15)).replace(hour=0, minute=0, second=0)
    return start, NOW + timedelta(minutes=1)


def _time_range(start: datetime, end: datetime) -> str:
    return f"{start:%Y-%m-%dT%H:%M:%S} : {end:%Y-%m-%dT%H:%M:%S}"


def _scope(columns: set[str]) -> tuple[str, list[str]] | None:
    column = next((c for c in SCOPES if c in columns), None)
    return (column, SCOPES[column]) if column else None


def _direct(ch, dashboard: spec.Dashboard, chart: spec.Chart, start: datetime, end: datetime, scope) -> list[tuple]:
    """The chart's numbers computed by ClickHouse itself from the dataset's SQL."""
    dataset = dashboard.datasets[chart.dataset]
    keys = list(chart.group_by)
    if chart.type in TIMESERIES:
        keys.insert(0, GRAIN_SQL[chart.time_grain].format(c=dataset.time_column))
    metrics = [f"{expression}" for expression in chart.metrics.values()]
    where = [f"{scope[0]} IN {{scope:Array(String)}}"] if scope else []
    where += [f"({chart.where})"] if chart.where else []
    if dataset.time_column:
        where.append(f"{dataset.time_column} >= {{start:DateTime}} AND {dataset.time_column} < {{end:DateTime}}")
    sql = f"SELECT {', '.join(keys + metrics)} FROM ({dataset.sql})" + (
        f" WHERE {' AND '.join(where)}" if where else ""
    )
    if keys:
        sql += f" GROUP BY {', '.join(keys)}"
    params = {"scope": scope[1] if scope else [], "start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)}
    return [tuple(row) for row in ch.query(sql, parameters=params).result_rows]


def _normal(value: object) -> object:
    if isinstance(value, datetime):
        return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?", value):
        return _normal(datetime.fromisoformat(value))  # a DateTime64 metric (max(ts)) as Superset sends it
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None  # 0/0: ClickHouse's nan is Superset's null
    return value


def _same(a: tuple, b: tuple, loose: set[int]) -> bool:
    if len(a) != len(b):
        return False
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = _normal(x), _normal(y)
        if x is None or y is None:
            if x is not y:
                return False
        elif not (isinstance(x, float) or isinstance(y, float)):
            if x != y:
                return False
        elif not math.isclose(x, y, rel_tol=1e-9, abs_tol=5 if i in loose else 1e-9):
            return False
    return True


def _chart_data(bi, dashboard, chart, dataset_id, scope, start, end, headers=None, dashboard_id=None, chart_id=None):
    context = charts.query_context(dashboard, chart, dataset_id, _time_range(start, end), chart_id=chart_id)
    if scope:
        context["queries"][0]["filters"].append({"col": scope[0], "op": "IN", "val": scope[1]})
    if dashboard_id is not None:
        context["form_data"]["dashboardId"] = dashboard_id
    response = requests.post(f"{bi.superset.url}/api/v1/chart/data", json=context, headers=headers or {}, timeout=60)
    return response


def _assert_same_rows(result: dict, direct: list[tuple], chart: spec.Chart) -> None:
    """Superset's answer (one query's result) holds exactly ClickHouse's rows, in any order."""
    assert result["status"] == "success", (chart.key, result.get("error"))
    names = result["colnames"]
    via_superset = [tuple(row[n] for n in names) for row in result["data"]]
    # A metric of now() moves between the two queries by a second or two.
    loose = {i for i, e in enumerate(chart.metrics.values(), len(names) - len(chart.metrics)) if "now()" in e}
    assert direct, f"{chart.key}: no rows to compare"
    assert len(via_superset) == len(direct), (chart.key, via_superset[:5], direct[:5])
    unmatched = list(direct)
    for row in via_superset:
        match = next((d for d in unmatched if _same(row, d, loose)), None)
        assert match is not None, f"{chart.key}: {row} not in ClickHouse's {direct[:5]}"
        unmatched.remove(match)


def test_chart_data_equals_clickhouse(bi, provisioned, admin):
    ch = clickhouse.client(bi.clickhouse)
    start, end = _window()
    compared = 0
    for dashboard in spec.load_all():
        done = provisioned[dashboard.slug]
        for chart in dashboard.charts:
            dataset_id = done.dataset_ids[chart.dataset]
            columns = {c["column_name"] for c in admin.get(f"/api/v1/dataset/{dataset_id}")["result"]["columns"]}
            scope = _scope(columns)
            context = charts.query_context(dashboard, chart, dataset_id, _time_range(start, end))
            if scope:
                context["queries"][0]["filters"].append({"col": scope[0], "op": "IN", "val": scope[1]})
            (result,) = admin.post("/api/v1/chart/data", context)["result"]
            _assert_same_rows(result, _direct(ch, dashboard, chart, start, end, scope), chart)
            compared += 1
    assert compared == sum(len(d.charts) for d in spec.load_all())


def _reads(plan: str) -> set[str]:
    """The tables and projections a query plan reads (database prefixes dropped)."""
    return {name.split(".")[-1] for name in re.findall(r"ReadFromMergeTree \(([\w.]+)\)", plan)}


def test_every_chart_reads_the_rollup_or_table_its_dataset_names(bi, provisioned, admin):
    """Superset's own SQL for each chart, explained by ClickHouse: a dataset over a rollup is answered
    from projections only (ClickHouse may pick a smaller one that also fits), never from raw rows."""
    ch = clickhouse.client(bi.clickhouse)
    start, end = _window()
    for dashboard in spec.load_all():
        done = provisioned[dashboard.slug]
        for chart in dashboard.charts:
            dataset = dashboard.datasets[chart.dataset]
            assert dataset.reads, f"{dashboard.slug}: dataset {chart.dataset} must say what it reads"
            context = charts.query_context(dashboard, chart, done.dataset_ids[chart.dataset], _time_range(start, end))
            context["result_type"] = "query"
            (result,) = admin.post("/api/v1/chart/data", context)["result"]
            plan = str(ch.command(f"EXPLAIN {result['query']}"))
            if re.search(r"ReadFromPreparedSource \(_(exact|minmax)_count_projection\)", plan):
                continue  # a count answered from the parts' metadata: cheaper than any table
            reads = _reads(plan)
            wanted = set(dataset.reads)
            projections = {name for name in reads if name.startswith("p_")}
            where = f"{dashboard.slug}.{chart.key}"
            if any(name.startswith("p_") for name in wanted):
                assert projections and "agent_events" not in reads, (where, reads, result["query"])
            assert reads - projections == {name for name in wanted if not name.startswith("p_")}, (where, reads)


def _guest_token(bi, account: str, dashboard: str = "account-usage", key: str | None = None) -> requests.Response:
    return requests.post(
        f"{bi.superset.url}/metrics-platform/api/guest-token",
        json={"dashboard": dashboard, "account_id": account},
        headers={"Authorization": f"Bearer {key or superset.embed_api_key(bi)}"},
        timeout=30,
    )


def test_guest_token_sees_only_its_account(bi, provisioned):
    ch = clickhouse.client(bi.clickhouse)
    dashboard = next(d for d in spec.load_all() if d.slug == "account-usage")
    done = provisioned["account-usage"]
    start, end = _window()
    table = next(c for c in dashboard.charts if c.key == "by_account")
    totals = {}
    for account in ACCOUNTS:
        token = _guest_token(bi, account).json()["token"]
        headers = {"X-GuestToken": token}
        # Asking for every test account: the token's row filter must narrow it to one.
        scope = ("account_id", list(ACCOUNTS))
        response = _chart_data(bi, dashboard, table, done.dataset_ids[table.dataset], scope, start, end, headers,
                               done.dashboard_id, done.chart_ids[table.key])  # fmt: skip
        assert response.status_code == 200, response.text
        rows = response.json()["result"][0]["data"]
        assert [r["account_id"] for r in rows] == [account]
        (expected,) = _direct(ch, dashboard, table, start, end, ("account_id", [account]))
        assert _same(tuple(rows[0][c] for c in ("account_id", "account_name", "plan", "requests", "cost (USD)")),
                     (*expected[:3], expected[3], expected[6]), set())  # fmt: skip
        totals[account] = rows[0]["cost (USD)"]
        # Every other chart of the dashboard is filtered too.
        for chart in dashboard.charts:
            response = _chart_data(bi, dashboard, chart, done.dataset_ids[chart.dataset], scope, start, end, headers,
                                   done.dashboard_id, done.chart_ids[chart.key])  # fmt: skip
            assert response.status_code == 200, (chart.key, response.text)
            alone = _direct(ch, dashboard, chart, start, end, ("account_id", [account]))
            _assert_same_rows(response.json()["result"][0], alone, chart)
        # Another dashboard's charts are out of reach.
        overview = provisioned["overview"]
        other = next(d for d in spec.load_all() if d.slug == "overview")
        first = other.charts[0]
        response = _chart_data(bi, other, first, overview.dataset_ids[first.dataset], ("service", list(SERVICES)),
                               start, end, headers, overview.dashboard_id, overview.chart_ids[first.key])  # fmt: skip
        assert response.status_code in (401, 403), response.text
    assert len(set(totals.values())) == 2


def test_guest_cannot_widen_its_query(bi, provisioned):
    dashboard = next(d for d in spec.load_all() if d.slug == "account-usage")
    done = provisioned["account-usage"]
    chart = next(c for c in dashboard.charts if c.key == "cost_total")
    token = _guest_token(bi, "bi-acct-acme").json()["token"]
    context = charts.query_context(dashboard, chart, done.dataset_ids["daily"], chart_id=done.chart_ids[chart.key])
    context["form_data"]["dashboardId"] = done.dashboard_id
    # A metric of the guest's own making that reads every account's rows.
    context["queries"][0]["metrics"] = [charts.metric("all", "(SELECT sum(cost_usd) FROM cost_by_account_daily)")]
    response = requests.post(
        f"{bi.superset.url}/api/v1/chart/data", json=context, headers={"X-GuestToken": token}, timeout=30
    )
    assert response.status_code in (400, 403), response.text


def test_tokens_always_carry_one_account_filter(bi, provisioned, admin):
    assert _guest_token(bi, "bi-acct-acme", key="not-the-key").status_code == 401
    assert _guest_token(bi, "x' OR 1=1 --").status_code == 400
    assert _guest_token(bi, "bi-acct-acme", dashboard="overview").status_code == 404  # not embeddable
    # Even the admin API refuses a token without exactly one account filter (validator hook).
    resources = [{"type": "dashboard", "id": provisioned["account-usage"].embedded_id}]
    user = {"username": "x", "first_name": "x", "last_name": "x"}
    for rls in ([], [{"clause": "1 = 1"}], [{"clause": "account_id = 'a'"}, {"clause": "account_id = 'b'"}]):
        with pytest.raises(Exception, match="400"):
            admin.post("/api/v1/security/guest_token/", {"user": user, "resources": resources, "rls": rls})
    token = admin.post(
        "/api/v1/security/guest_token/",
        {"user": user, "resources": resources, "rls": [{"clause": "account_id = 'bi-acct-acme'"}]},
    )["token"]
    assert token


@pytest.fixture()
def customer_portal(bi) -> Iterator[str]:
    server = portal.server(bi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_dashboards_render_in_chromium(bi, provisioned, customer_portal, tmp_path):
    out = ROOT / "docs" / "screenshots" if os.environ.get("METRICS_PLATFORM_UPDATE_SCREENSHOTS") else tmp_path
    files = spec.load_all()
    pages = [(f"/superset/dashboard/{d.slug}/", out / f"superset-{d.slug}.png") for d in files]
    # The embedded pages last: Superset's embedded view logs the browser's admin session out.
    pages += [(f"{customer_portal}/?account_id={a}", out / f"superset-embedded-{a[8:]}.png") for a in ACCOUNTS]
    rendered = render.render(bi, pages)
    expected = [*files, *[next(d for d in files if d.slug == "account-usage")] * len(ACCOUNTS)]
    for page, dashboard in zip(rendered, expected, strict=True):
        assert not page.timed_out and not page.errors, (page.url, page.errors)
        assert page.charts == len(dashboard.charts), page.url
        drawn_by_echarts = sum(c.type in (*TIMESERIES, "pie") for c in dashboard.charts)
        assert page.canvases >= drawn_by_echarts, page.url
        assert page.tables >= sum(c.type == "table" for c in dashboard.charts), page.url
        # A blank or error page is one or two colours; drawn charts add hundreds.
        assert page.distinct_colours > 100 and page.non_background > 0.05, (page.url, page.distinct_colours)
        assert page.file.stat().st_size > 20_000
    for page, account in zip(rendered[-2:], ACCOUNTS, strict=True):
        own, other = ACCOUNTS[account][0], next(n for a, (n, _) in ACCOUNTS.items() if a != account)
        assert own in page.text and other not in page.text, (account, page.text[:500])


# --- the file format, without Superset ---------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(text)
    return path


BOARD = """
title: T
slug: t
datasets:
  d: {time_column: ts, sql: "SELECT ts, service, latency_ms FROM agent_events"}
charts:
"""


def test_every_dashboard_file_loads():
    boards = spec.load_all()
    assert {b.slug for b in boards} == {
        "overview", "endpoints", "models", "agents", "customers", "pipeline-health", "account-usage"
    }  # fmt: skip
    for board in boards:
        assert board.embeddable == (board.slug == "account-usage")
        assert spec.load(board.source) == board
        assert all(dataset.reads for dataset in board.datasets.values()), board.slug
    embeddable = next(b for b in boards if b.embeddable)
    assert all("account_id" in d.sql for d in embeddable.datasets.values())


@pytest.mark.parametrize(
    ("charts_yaml", "message"),
    [
        ("  - {key: a, title: A, type: gauge, dataset: d, metrics: {n: count()}}", "type 'gauge'"),
        ("  - {key: a, title: A, type: bar, dataset: nope, metrics: {n: count()}}", "dataset 'nope'"),
        ("  - {key: a, title: A, type: number, dataset: d, metrics: {n: count(), m: max(ts)}}", "exactly one"),
        ("  - {key: a, title: A, type: line, dataset: d, metrics: {n: count()}, time_grain: fortnight}", "time_grain"),
        ("  - {key: a, title: A, type: table, dataset: d, metrics: {n: count()}, order_by: x}", "order_by"),
        ("  - {key: a, title: A, type: table, dataset: d, metrics: {n: count()}, width: 13}", "width"),
        ("  - {key: a, title: A, type: table, dataset: d, metrics: {n: count()}}\n" * 2, "repeated: a"),
        ("  - {key: A-1, title: A, type: table, dataset: d, metrics: {n: count()}}", "key must match"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, charts_yaml, message):
    with pytest.raises(spec.SpecError, match=message) as error:
        spec.load(_write(tmp_path, BOARD + charts_yaml))
    assert "board.yaml" in str(error.value)


def test_layout_fills_rows_of_twelve_and_ids_are_stable(tmp_path):
    charts_yaml = "".join(
        f"  - {{key: c{i}, title: C{i}, type: number, dataset: d, metrics: {{n: count()}}, width: {w}}}\n"
        for i, w in enumerate([4, 4, 4, 6, 12, 3])
    )
    board = spec.load(_write(tmp_path, BOARD + charts_yaml))
    layout = charts.position(board, {c.key: i for i, c in enumerate(board.charts)})
    rows = [
        [layout[node]["meta"]["width"] for node in layout[row]["children"]] for row in layout["GRID_ID"]["children"]
    ]
    assert rows == [[4, 4, 4], [6], [12], [3]]
    again = spec.load(_write(tmp_path, BOARD + charts_yaml))
    assert again.uuid == board.uuid and again.chart_uuid("c0") == board.chart_uuid("c0")
    assert board.chart_uuid("c0") != board.chart_uuid("c1") != board.dataset_uuid("d")
