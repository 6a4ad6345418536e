"""Provision dashboards from their definition files into Superset, through its REST API.

Every object has a UUID derived from the files (spec.py), and is looked up by it: provisioning
creates what is missing and updates what exists, so running it again after an edit changes the
dashboards in place and never duplicates them. Charts and datasets a file no longer lists are
deleted. Superset's import API is not used because it never overwrites existing charts, datasets
or databases.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from metrics_platform import clickhouse
from metrics_platform.bi import charts
from metrics_platform.bi.client import SupersetClient, SupersetError
from metrics_platform.bi.spec import NAMESPACE, Dashboard, load_all
from metrics_platform.settings import Settings
from metrics_platform.stack import superset

DATABASE_NAME = "ClickHouse (metrics platform)"
DATABASE_UUID = uuid.uuid5(NAMESPACE, "database/clickhouse")
# Guest users (embedded dashboards) get these permissions; which dashboards they can open and
# which rows they see come from their token. Read-only: no export, no SQL, no saving.
GUEST_ROLE = "EmbeddedViewer"
GUEST_PERMISSIONS = {
    ("can_read", "Dashboard"),
    ("can_read", "Chart"),
    ("can_read", "Dataset"),
    ("can_read", "EmbeddedDashboard"),
    ("can_dashboard", "Superset"),
    ("can_explore_json", "Superset"),
    ("can_read", "DashboardFilterStateRestApi"),
    ("can_write", "DashboardFilterStateRestApi"),
    ("can_time_range", "Api"),
    ("can_read", "Theme"),
    ("can_read", "CurrentUserRestApi"),
    ("can_log", "Superset"),
    ("can_language_pack", "Superset"),
}

Report = Callable[[str], None]


@dataclass
class Provisioned:
    """What one dashboard file became in Superset."""

    slug: str
    dashboard_id: int
    url: str
    dataset_ids: dict[str, int] = field(default_factory=dict)
    chart_ids: dict[str, int] = field(default_factory=dict)
    embedded_id: str | None = None
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def connect(settings: Settings) -> SupersetClient:
    """An admin session against the platform's Superset."""
    return SupersetClient(settings.superset.url, settings.superset.admin_user, superset.admin_password(settings))


def sqlalchemy_uri(settings: Settings) -> str:
    """``clickhousedb://`` URI of the platform's ClickHouse, as the read-only user, on the readers' database
    (a cluster's Distributed tables: clickhouse.read_database)."""
    user, password = superset.clickhouse_credentials(settings)
    ch = clickhouse.reader_settings(settings)
    uri = f"clickhousedb://{quote(user, safe='')}:{quote(password, safe='')}@{ch.host}:{ch.http_port}/{ch.database}"
    return uri + ("?secure=true" if ch.secure else "")


def _one(client: SupersetClient, resource: str, object_uuid: uuid.UUID) -> dict | None:
    found = client.find(resource, "uuid", str(object_uuid))
    return found[0] if found else None


def ensure_database(client: SupersetClient, settings: Settings) -> int:
    """The ClickHouse connection, created or updated; returns its id."""
    body = {
        "database_name": DATABASE_NAME,
        "sqlalchemy_uri": sqlalchemy_uri(settings),
        "expose_in_sqllab": True,
        "allow_dml": False,
        "allow_file_upload": False,
        "allow_run_async": False,
        "extra": json.dumps({"allows_virtual_table_explore": True}),
    }
    existing = _one(client, "database", DATABASE_UUID)
    if existing is None:
        return client.post("/api/v1/database/", {**body, "uuid": str(DATABASE_UUID)})["id"]
    client.put(f"/api/v1/database/{existing['id']}", body)
    return existing["id"]


def ensure_guest_role(client: SupersetClient) -> int:
    """The role guest tokens run as (superset_config.GUEST_ROLE_NAME), with exactly GUEST_PERMISSIONS."""
    roles = client.get("/api/v1/security/roles/", params={"q": "(page_size:100)"})["result"]
    role_id = next((r["id"] for r in roles if r["name"] == GUEST_ROLE), None)
    if role_id is None:
        role_id = client.post("/api/v1/security/roles/", {"name": GUEST_ROLE})["id"]
    wanted = set(GUEST_PERMISSIONS)
    ids: list[int] = []
    page = 0
    while wanted:
        query = {"q": f"(page:{page},page_size:100)"}
        batch = client.get("/api/v1/security/permissions-resources/", params=query)["result"]
        if not batch:
            break
        for row in batch:
            pair = (row["permission"]["name"], row["view_menu"]["name"])
            if pair in wanted:
                ids.append(row["id"])
                wanted.discard(pair)
        page += 1
    if wanted:
        raise SupersetError(f"Superset has no permission(s) {sorted(wanted)} for the {GUEST_ROLE} role")
    client.post(f"/api/v1/security/roles/{role_id}/permissions", {"permission_view_menu_ids": sorted(ids)})
    return role_id


def _dataset(client: SupersetClient, database_id: int, schema: str, dashboard: Dashboard, key: str) -> tuple[int, bool]:
    spec = dashboard.datasets[key]
    dataset_uuid = dashboard.dataset_uuid(key)
    existing = _one(client, "dataset", dataset_uuid)
    created = existing is None
    if created:
        body = {
            "database": database_id,
            "schema": schema,
            "table_name": dashboard.dataset_name(key),
            "sql": spec.sql,
            "uuid": str(dataset_uuid),
        }
        dataset_id = client.post("/api/v1/dataset/", body)["id"]
    else:
        dataset_id = existing["id"]
        client.put(f"/api/v1/dataset/{dataset_id}", {"table_name": dashboard.dataset_name(key), "sql": spec.sql})
    # Columns come from running the SQL: new ones appear, dropped ones go.
    client.put(f"/api/v1/dataset/{dataset_id}/refresh", {})
    if spec.time_column:
        columns = client.get(f"/api/v1/dataset/{dataset_id}")["result"]["columns"]
        if spec.time_column not in {c["column_name"] for c in columns}:
            raise SupersetError(f"{dashboard.source}: dataset '{key}' has no column {spec.time_column!r}")
        client.put(f"/api/v1/dataset/{dataset_id}", {"main_dttm_col": spec.time_column})
    return dataset_id, created


def _columns(client: SupersetClient, dataset_id: int) -> set[str]:
    return {c["column_name"] for c in client.get(f"/api/v1/dataset/{dataset_id}")["result"]["columns"]}


def _marker(dashboard: Dashboard) -> str:
    """The description that marks a chart as owned by a file (and so deletable when dropped from it)."""
    return f"Provisioned from deploy/superset/dashboards/{dashboard.source.name}; edit it there."


def provision_dashboard(
    client: SupersetClient,
    database_id: int,
    schema: str,
    dashboard: Dashboard,
    public_url: str,
    frame_origins: tuple[str, ...] = (),
) -> Provisioned:
    """Create or update one dashboard with its datasets and charts; returns their ids."""
    existing = _one(client, "dashboard", dashboard.uuid)
    created: list[str] = []
    if existing is None:
        body = {"dashboard_title": dashboard.title, "slug": dashboard.slug, "uuid": str(dashboard.uuid)}
        dashboard_id = client.post("/api/v1/dashboard/", body)["id"]
        created.append(f"dashboard {dashboard.slug}")
    else:
        dashboard_id = existing["id"]
    result = Provisioned(dashboard.slug, dashboard_id, f"{public_url}/superset/dashboard/{dashboard.slug}/")
    result.created = created

    for key in dashboard.datasets:
        result.dataset_ids[key], new = _dataset(client, database_id, schema, dashboard, key)
        if new:
            created.append(f"dataset {key}")

    for chart in dashboard.charts:
        dataset_id = result.dataset_ids[chart.dataset]
        chart_uuid = dashboard.chart_uuid(chart.key)
        found = _one(client, "chart", chart_uuid)
        body = {
            "slice_name": chart.title,
            "viz_type": chart.viz_type,
            "datasource_id": dataset_id,
            "datasource_type": "table",
            "params": json.dumps(charts.form_data(dashboard, chart, dataset_id)),
            "description": chart.description or _marker(dashboard),
            "dashboards": [dashboard_id],
        }
        if found is None:
            chart_id = client.post("/api/v1/chart/", {**body, "uuid": str(chart_uuid)})["id"]
            created.append(f"chart {chart.key}")
        else:
            chart_id = found["id"]
        context = charts.query_context(dashboard, chart, dataset_id, chart_id=chart_id)
        client.put(f"/api/v1/chart/{chart_id}", {**body, "query_context": json.dumps(context)})
        result.chart_ids[chart.key] = chart_id

    # Charts and datasets of this file that it no longer lists.
    keep = set(result.chart_ids.values())
    for row in client.get(f"/api/v1/dashboard/{dashboard_id}/charts")["result"]:
        if row["id"] not in keep:
            client.delete(f"/api/v1/chart/{row['id']}")
            result.deleted.append(f"chart {row['slice_name']}")
    for row in client.find("dataset", "table_name", f"{dashboard.slug}.", operator="sw"):
        if row["id"] not in result.dataset_ids.values():
            client.delete(f"/api/v1/dataset/{row['id']}")
            result.deleted.append(f"dataset {row['table_name']}")

    columns = {key: _columns(client, dataset_id) for key, dataset_id in result.dataset_ids.items()}
    filters = charts.native_filters(dashboard, result.chart_ids, result.dataset_ids, columns)
    client.put(
        f"/api/v1/dashboard/{dashboard_id}",
        {
            "dashboard_title": dashboard.title,
            "slug": dashboard.slug,
            "published": True,
            "position_json": json.dumps(charts.position(dashboard, result.chart_ids)),
            "json_metadata": json.dumps(charts.json_metadata(dashboard, filters)),
        },
    )
    if dashboard.embeddable:
        # Superset serves the embedded page only to these referrers; the guest token is what guards the data.
        embedded = client.post(f"/api/v1/dashboard/{dashboard_id}/embedded", {"allowed_domains": list(frame_origins)})
        result.embedded_id = embedded["result"]["uuid"]
    else:
        with contextlib.suppress(SupersetError):  # it was not embeddable
            client.delete(f"/api/v1/dashboard/{dashboard_id}/embedded")
    return result


def _tally(what: list[str]) -> str:
    """'2 charts, 1 dataset' from ['chart a', 'chart b', 'dataset x']; '' for nothing."""
    kinds = Counter(entry.split(" ", 1)[0] for entry in what)
    return ", ".join(f"{n} {kind}{'s' * (n > 1)}" for kind, n in kinds.items())


def provision(
    settings: Settings, dashboards: Iterable[Dashboard] | None = None, report: Report = print
) -> list[Provisioned]:
    """Provision every dashboard file (or the ones given) into the running Superset."""
    client = connect(settings)
    database_id = ensure_database(client, settings)
    ensure_guest_role(client)
    results = []
    schema, origins = clickhouse.read_database(settings), settings.superset.frame_origins
    for dashboard in load_all() if dashboards is None else dashboards:
        result = provision_dashboard(client, database_id, schema, dashboard, settings.superset.url, origins)
        changes = [
            f"{verb} {_tally(what)}"
            for verb, what in (("created", result.created), ("deleted", result.deleted))
            if what
        ]
        report(f"  {dashboard.slug}: {result.url} ({'; '.join([f'{len(result.chart_ids)} charts', *changes])})")
        results.append(result)
    return results
