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
from metrics_platform.stack import superset

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("bi-test-api", "bi-test-worker")
ACCOUNTS = {"bi-acct-acme": ("Acme Corp", "pro"), "bi-acct-globex": ("Globex", "free")}
DEAD_LETTER_TOPIC = "bi-test-topic"
# Where each dataset's rows of this test are: comparisons add this filter on both sides.
SCOPES = {"service": list(SERVICES), "source_topic": [DEAD_LETTER_TOPIC], "account_id": list(ACCOUNTS)}
GRAIN_SQL = {
    "minute": "toStartOfMinute({c})",
    "5 minutes": "toStartOfFiveMinutes({c})",
    "15 minutes": "toStartOfFifteenMinutes({c})",
    "hour": "toStartOfHour({c})",
    "day": "toStartOfDay({c})",
}
NOW = datetime.now(UTC).replace(microsecond=0)


def _fill(ch) -> None:
    """Six hours of spans, a day of dead letters and two weeks of two accounts' daily cost."""
    rng = random.Random(7)
    rows = []
    for i in range(3000):
        ts = NOW - timedelta(seconds=rng.randint(120, 6 * 3600))
        model, provider = rng.choice(
            [("gpt-4.1", "openai"), ("claude-sonnet-4", "anthropic"), ("gemini-2.5", "google")]
        )
        status = "error" if rng.random() < 0.04 else "ok"
        cost = Decimal(rng.randint(1, 50_000)) / Decimal(10**6)
        ingested = ts + timedelta(seconds=rng.random() * 3)
        rows.append(
            [ts, f"{i:032x}", f"{i:016x}", rng.choice(SERVICES), rng.choice(["prod", "staging"]), "agent-bi", model,
             provider, rng.choice(["POST /v1/answer", "POST /v1/search", "GET /v1/status"]), status,
             "Timeout" if status == "error" else "", rng.randint(40, 4000), rng.randint(10, 3000),
             rng.randint(5, 800), cost, ingested]
        )  # fmt: skip
    ch.insert(
        "agent_events",
        rows,
        column_names=["ts", "trace_id", "span_id", "service", "env", "agent", "model", "provider", "route", "status",
                      "error_type", "latency_ms", "tokens_prompt", "tokens_completion", "cost_usd", "ingested_at"],
    )  # fmt: skip
    reasons = ["schema: missing field ts", "schema: latency_ms is negative", "json: unexpected end of input"]
    ch.insert(
        "dead_letters",
        [[NOW - timedelta(minutes=rng.randint(5, 1400)), DEAD_LETTER_TOPIC, 0, i, rng.choice(reasons), "{}"]
         for i in range(60)],
        column_names=["received_at", "source_topic", "partition", "offset", "error", "payload"],
    )  # fmt: skip
    daily = []
    for days_ago in range(14):
        for n, (account, (name, plan)) in enumerate(ACCOUNTS.items()):
            calls = 100 * (n + 1) + days_ago * 7
            daily.append(
                [NOW.date() - timedelta(days=days_ago), account, name, plan, calls, days_ago % 5, calls * 120,
                 calls * 40, Decimal(calls) * Decimal("0.0125") * (n + 1), 3 + n]
            )  # fmt: skip
    ch.insert(
        "cost_by_account_daily",
        daily,
        column_names=["day", "account_id", "account_name", "plan", "calls", "errors", "tokens_prompt",
                      "tokens_completion", "cost_usd", "users"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def bi(stack) -> Iterator[object]:
    """Superset started on the test stack, with this module's rows in ClickHouse."""
    ch = clickhouse.client(stack.clickhouse)
    _fill(ch)
    superset.start(stack, report=lambda _: None)
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
        host=bi.clickhouse.host, port=bi.clickhouse.http_port, username=user, password=password
    )
    assert ro.query("SELECT count() FROM agent_events WHERE service IN {s:Array(String)}",
                    parameters={"s": list(SERVICES)}).result_rows[0][0] == 3000  # fmt: skip
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
    # Rename a chart, change the dataset's SQL, drop the last chart.
    kept = dataclasses.replace(original.charts[0], title="Calls (renamed)")
    sql = original.datasets["events"].sql + "\nWHERE service != 'nothing'"
    edited = dataclasses.replace(
        original,
        charts=(kept, *original.charts[1:-1]),
        datasets={"events": dataclasses.replace(original.datasets["events"], sql=sql)},
    )
    second = provision.provision(bi, [edited], report=lambda _: None)[0]
    assert second.dashboard_id == first.dashboard_id
    assert second.dataset_ids == first.dataset_ids
    assert second.chart_ids == {k: v for k, v in first.chart_ids.items() if k != original.charts[-1].key}
    assert second.deleted == [f"chart {original.charts[-1].title}"]
    chart = admin.get(f"/api/v1/chart/{first.chart_ids[kept.key]}")["result"]
    assert chart["slice_name"] == "Calls (renamed)"
    assert admin.get(f"/api/v1/dataset/{first.dataset_ids['events']}")["result"]["sql"] == sql
    layout = json.loads(admin.get(f"/api/v1/dashboard/{first.dashboard_id}")["result"]["position_json"])
    assert {n["meta"]["chartId"] for n in layout.values() if isinstance(n, dict) and n.get("type") == "CHART"} == set(
        second.chart_ids.values()
    )
    with pytest.raises(Exception, match="404"):
        admin.get(f"/api/v1/chart/{first.chart_ids[original.charts[-1].key]}")
    for chart_id in second.chart_ids.values():
        admin.delete(f"/api/v1/chart/{chart_id}")
    admin.delete(f"/api/v1/dataset/{first.dataset_ids['events']}")
    admin.delete(f"/api/v1/dashboard/{first.dashboard_id}")


def _window() -> tuple[datetime, datetime]:
    start = (NOW - timedelta(days=15)).replace(hour=0, minute=0, second=0)
    return start, NOW + timedelta(minutes=1)


def _time_range(start: datetime, end: datetime) -> str:
    return f"{start:%Y-%m-%dT%H:%M:%S} : {end:%Y-%m-%dT%H:%M:%S}"


def _scope(columns: set[str]) -> tuple[str, list[str]]:
    column = next(c for c in SCOPES if c in columns)
    return column, SCOPES[column]


def _direct(ch, dashboard: spec.Dashboard, chart: spec.Chart, start: datetime, end: datetime, scope) -> list[tuple]:
    """The chart's numbers computed by ClickHouse itself from the dataset's SQL."""
    dataset = dashboard.datasets[chart.dataset]
    keys = list(chart.group_by)
    if chart.type in TIMESERIES:
        keys.insert(0, GRAIN_SQL[chart.time_grain].format(c=dataset.time_column))
    metrics = [f"{expression}" for expression in chart.metrics.values()]
    where = [f"{scope[0]} IN {{scope:Array(String)}}"] + [f"({chart.where})"] * bool(chart.where)
    if dataset.time_column:
        where.append(f"{dataset.time_column} >= {{start:DateTime}} AND {dataset.time_column} < {{end:DateTime}}")
    sql = f"SELECT {', '.join(keys + metrics)} FROM ({dataset.sql}) WHERE {' AND '.join(where)}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)}"
    params = {"scope": scope[1], "start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)}
    return [tuple(row) for row in ch.query(sql, parameters=params).result_rows]


def _normal(value: object) -> object:
    if isinstance(value, datetime):
        return int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return float(value)
    return value


def _same(a: tuple, b: tuple, loose: set[int]) -> bool:
    if len(a) != len(b):
        return False
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = _normal(x), _normal(y)
        if not (isinstance(x, float) or isinstance(y, float)):
            if x != y:
                return False
        elif x is None or y is None or not math.isclose(x, y, rel_tol=1e-9, abs_tol=5 if i in loose else 1e-9):
            return False
    return True


def _chart_data(bi, dashboard, chart, dataset_id, scope, start, end, headers=None, dashboard_id=None, chart_id=None):
    context = charts.query_context(dashboard, chart, dataset_id, _time_range(start, end), chart_id=chart_id)
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
            context["queries"][0]["filters"].append({"col": scope[0], "op": "IN", "val": scope[1]})
            (result,) = admin.post("/api/v1/chart/data", context)["result"]
            _assert_same_rows(result, _direct(ch, dashboard, chart, start, end, scope), chart)
            compared += 1
    assert compared == sum(len(d.charts) for d in spec.load_all())


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
        response = _chart_data(bi, dashboard, table, done.dataset_ids["daily"], scope, start, end, headers,
                               done.dashboard_id, done.chart_ids[table.key])  # fmt: skip
        assert response.status_code == 200, response.text
        rows = response.json()["result"][0]["data"]
        assert [r["account_id"] for r in rows] == [account]
        expected = ch.query(
            "SELECT sum(calls), sum(tokens_prompt + tokens_completion), toFloat64(sum(cost_usd)) "
            "FROM cost_by_account_daily WHERE account_id = {a:String}",
            parameters={"a": account},
        ).result_rows[0]
        assert _same((rows[0]["calls"], rows[0]["tokens"], rows[0]["cost"]), expected, set())
        totals[account] = rows[0]["cost"]
        # Every other chart of the dashboard is filtered too.
        for chart in dashboard.charts:
            response = _chart_data(bi, dashboard, chart, done.dataset_ids["daily"], scope, start, end, headers,
                                   done.dashboard_id, done.chart_ids[chart.key])  # fmt: skip
            assert response.status_code == 200, (chart.key, response.text)
            alone = _direct(ch, dashboard, chart, start, end, ("account_id", [account]))
            _assert_same_rows(response.json()["result"][0], alone, chart)
        # Another dashboard's charts are out of reach.
        overview = provisioned["overview"]
        other = next(d for d in spec.load_all() if d.slug == "overview")
        first = other.charts[0]
        response = _chart_data(bi, other, first, overview.dataset_ids["events"], ("service", list(SERVICES)),
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
    assert {"overview", "pipeline-health", "account-usage"} <= {b.slug for b in boards}
    for board in boards:
        assert board.embeddable == (board.slug == "account-usage")
        assert spec.load(board.source) == board


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
