"""Dashboard definition files (deploy/superset/dashboards/<slug>.yaml), read and checked.

The format is described in deploy/superset/README.md. Everything Superset needs beyond it (ids,
form data, query contexts, layout JSON) is derived in charts.py, so a file stays short enough to
write by hand. Identity is stable: a dashboard is its slug, a dataset and a chart are their keys
within it, and each maps to a fixed UUID, so provisioning an edited file updates in place.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metrics_platform.paths import DEPLOY_DIR

DASHBOARDS_DIR = DEPLOY_DIR / "superset" / "dashboards"
# Fixed namespace: the UUIDs of provisioned objects derive from it and the keys in the files.
NAMESPACE = uuid.UUID("6f1c2b0e-4d1a-5c39-9a77-3c1f0f5d2a10")

CHART_TYPES = {
    "line": "echarts_timeseries_line",
    "bar": "echarts_timeseries_bar",
    "area": "echarts_area",
    "number": "big_number_total",
    "table": "table",
    "pie": "pie",
}
TIMESERIES = {"line", "bar", "area"}
TIME_GRAINS = {
    "minute": "PT1M",
    "5 minutes": "PT5M",
    "15 minutes": "PT15M",
    "30 minutes": "PT30M",
    "hour": "PT1H",
    "day": "P1D",
    "week": "P1W",
    "month": "P1M",
}
_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")
_SLUG = re.compile(r"[a-z][a-z0-9-]{0,62}")


class SpecError(ValueError):
    """A dashboard file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Dataset:
    key: str
    sql: str
    time_column: str | None
    # What ClickHouse reads to answer this dataset's charts: rollup projections (p_route_minute, ...)
    # or tables. tests/test_superset.py checks every chart's query plan against it.
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    type: str
    dataset: str
    metrics: dict[str, str]
    group_by: tuple[str, ...] = ()
    where: str = ""
    time_grain: str | None = None
    order_by: str | None = None
    row_limit: int = 1000
    width: int = 6
    height: int = 50
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def viz_type(self) -> str:
        return CHART_TYPES[self.type]


@dataclass(frozen=True)
class Dashboard:
    slug: str
    title: str
    source: Path
    datasets: dict[str, Dataset]
    charts: tuple[Chart, ...]
    filters: tuple[str, ...] = ()
    time_range: str = "Last day"
    refresh_seconds: int = 0
    embeddable: bool = False
    description: str = ""

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, f"dashboard/{self.slug}")

    def dataset_uuid(self, key: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, f"dashboard/{self.slug}/dataset/{key}")

    def chart_uuid(self, key: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, f"dashboard/{self.slug}/chart/{key}")

    def dataset_name(self, key: str) -> str:
        """The dataset's name in Superset (unique per database)."""
        return f"{self.slug}.{key}"


def _require(mapping: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in mapping:
        raise SpecError(f"{where}: '{key}' is required")
    value = mapping[key]
    if not isinstance(value, kind):
        raise SpecError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, not {type(value).__name__}")
    return value


def _chart(raw: Any, where: str, datasets: dict[str, Dataset]) -> Chart:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a chart is a mapping (key, title, type, dataset, metrics, ...)")
    key = _require(raw, "key", where)
    where = f"{where} '{key}'"
    if not _KEY.fullmatch(key):
        raise SpecError(f"{where}: key must match {_KEY.pattern}")
    kind = _require(raw, "type", where)
    if kind not in CHART_TYPES:
        raise SpecError(f"{where}: type {kind!r} is not one of {', '.join(CHART_TYPES)}")
    dataset = _require(raw, "dataset", where)
    if dataset not in datasets:
        raise SpecError(f"{where}: dataset {dataset!r} is not defined under 'datasets'")
    metrics = _require(raw, "metrics", where, dict)
    if not metrics or not all(isinstance(k, str) and isinstance(v, str) for k, v in metrics.items()):
        raise SpecError(f"{where}: metrics maps labels to SQL aggregates, e.g. {{calls: count()}}")
    if kind in ("number", "pie") and len(metrics) != 1:
        raise SpecError(f"{where}: a {kind} chart shows exactly one metric")
    grain = raw.get("time_grain")
    if kind in TIMESERIES:
        if datasets[dataset].time_column is None:
            raise SpecError(f"{where}: a {kind} chart needs a dataset with a time_column")
        grain = grain or "hour"
    if grain is not None and grain not in TIME_GRAINS:
        raise SpecError(f"{where}: time_grain {grain!r} is not one of {', '.join(TIME_GRAINS)}")
    order_by = raw.get("order_by")
    if order_by is not None and order_by not in metrics:
        raise SpecError(f"{where}: order_by must name one of its metrics")
    width = raw.get("width", 6)
    if not isinstance(width, int) or not 1 <= width <= 12:
        raise SpecError(f"{where}: width is 1-12 grid columns")
    group_by = raw.get("group_by", [])
    if isinstance(group_by, str):
        group_by = [group_by]
    return Chart(
        key=key,
        title=_require(raw, "title", where),
        type=kind,
        dataset=dataset,
        metrics=dict(metrics),
        group_by=tuple(group_by),
        where=str(raw.get("where", "")).strip(),
        time_grain=grain,
        order_by=order_by,
        row_limit=int(raw.get("row_limit", 1000)),
        width=width,
        height=int(raw.get("height", 50)),
        description=str(raw.get("description", "")),
        params=dict(raw.get("params", {})),
    )


def load(path: Path) -> Dashboard:
    """Read and check one dashboard file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    where = str(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping with title, slug, datasets and charts")
    slug = _require(raw, "slug", where)
    if not _SLUG.fullmatch(slug):
        raise SpecError(f"{where}: slug must match {_SLUG.pattern}")
    datasets: dict[str, Dataset] = {}
    for key, body in _require(raw, "datasets", where, dict).items():
        at = f"{where}: dataset '{key}'"
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise SpecError(f"{at}: name must match {_KEY.pattern}")
        if not isinstance(body, dict):
            raise SpecError(f"{at}: expected a mapping with sql (and time_column)")
        sql = _require(body, "sql", at).strip().rstrip(";")
        reads = body.get("reads", [])
        if isinstance(reads, str):
            reads = [reads]
        if not isinstance(reads, list) or not all(isinstance(r, str) and r for r in reads):
            raise SpecError(f"{at}: reads lists the projections or tables that answer it, e.g. [p_route_hour]")
        datasets[key] = Dataset(key=key, sql=sql, time_column=body.get("time_column"), reads=tuple(reads))
    charts = tuple(_chart(c, f"{where}: chart", datasets) for c in _require(raw, "charts", where, list))
    keys = [c.key for c in charts]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise SpecError(f"{where}: chart keys must be unique, repeated: {', '.join(duplicated)}")
    filters = raw.get("filters", [])
    if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
        raise SpecError(f"{where}: filters is a list of column names")
    return Dashboard(
        slug=slug,
        title=_require(raw, "title", where),
        source=path,
        datasets=datasets,
        charts=charts,
        filters=tuple(filters),
        time_range=str(raw.get("time_range", "Last day")),
        refresh_seconds=int(raw.get("refresh_seconds", 0)),
        embeddable=bool(raw.get("embeddable", False)),
        description=str(raw.get("description", "")),
    )


def load_all(directory: Path = DASHBOARDS_DIR) -> list[Dashboard]:
    """Every ``*.yaml`` in the directory, checked; slugs must be unique."""
    dashboards = [load(path) for path in sorted(directory.glob("*.yaml"))]
    slugs = [d.slug for d in dashboards]
    duplicated = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicated:
        raise SpecError(f"{directory}: dashboard slugs must be unique, repeated: {', '.join(duplicated)}")
    return dashboards
