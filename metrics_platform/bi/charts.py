"""What Superset stores for a dashboard file: chart form data and query contexts, layout, native filters.

Pure functions of the definitions in spec.py and the ids Superset gave the objects, so they are
unit-testable and re-provisioning yields the same JSON.
"""

from __future__ import annotations

from typing import Any

from metrics_platform.bi.spec import TIME_GRAINS, TIMESERIES, Chart, Dashboard

NO_FILTER = "No filter"


def metric(label: str, expression: str) -> dict[str, Any]:
    """An ad-hoc SQL metric as Superset's explore view writes it."""
    return {
        "expressionType": "SQL",
        "sqlExpression": expression,
        "label": label,
        "hasCustomLabel": True,
        "optionName": f"metric_{label}",
    }


def _time_filter(column: str, time_range: str) -> dict[str, Any]:
    return {
        "clause": "WHERE",
        "subject": column,
        "operator": "TEMPORAL_RANGE",
        "comparator": time_range,
        "expressionType": "SIMPLE",
    }


def _filters(dashboard: Dashboard, chart: Chart) -> list[dict[str, Any]]:
    dataset = dashboard.datasets[chart.dataset]
    filters = [_time_filter(dataset.time_column, dashboard.time_range)] if dataset.time_column else []
    if chart.where:
        filters.append({"clause": "WHERE", "expressionType": "SQL", "sqlExpression": chart.where})
    return filters


def form_data(dashboard: Dashboard, chart: Chart, dataset_id: int) -> dict[str, Any]:
    """The chart's ``params``: what the explore view and the dashboard render from."""
    dataset = dashboard.datasets[chart.dataset]
    metrics = [metric(label, sql) for label, sql in chart.metrics.items()]
    data: dict[str, Any] = {
        "datasource": f"{dataset_id}__table",
        "viz_type": chart.viz_type,
        "adhoc_filters": _filters(dashboard, chart),
        "row_limit": chart.row_limit,
        "y_axis_format": "SMART_NUMBER",
    }
    if chart.type in TIMESERIES:
        data.update(
            x_axis=dataset.time_column,
            time_grain_sqla=TIME_GRAINS[chart.time_grain or "hour"],
            metrics=metrics,
            groupby=list(chart.group_by),
            show_legend=True,
            rich_tooltip=True,
            truncate_metric=True,
            order_desc=True,
            x_axis_title_margin=15,
            y_axis_title_margin=15,
        )
        if chart.type == "line":
            # Markers keep a series visible while it has a single bucket (a platform just started).
            data.update(markerEnabled=True, markerSize=4)
    elif chart.type == "number":
        data.update(metric=metrics[0], header_font_size=0.4, subheader_font_size=0.15)
    elif chart.type == "pie":
        data.update(metric=metrics[0], groupby=list(chart.group_by), show_legend=True, label_type="key_percent")
    else:  # table
        data.update(
            query_mode="aggregate",
            groupby=list(chart.group_by),
            metrics=metrics,
            order_desc=True,
            timeseries_limit_metric=metric(chart.order_by, chart.metrics[chart.order_by]) if chart.order_by else None,
            server_page_length=10,
        )
    data.update(chart.params)
    return data


def query(dashboard: Dashboard, chart: Chart, time_range: str | None = None) -> dict[str, Any]:
    """The one query of the chart's query context: grouped rows without Superset's post-processing."""
    dataset = dashboard.datasets[chart.dataset]
    metrics = [metric(label, sql) for label, sql in chart.metrics.items()]
    columns: list[Any] = list(chart.group_by)
    extras: dict[str, Any] = {"having": "", "where": f"({chart.where})" if chart.where else ""}
    if chart.type in TIMESERIES:
        grain = TIME_GRAINS[chart.time_grain or "hour"]
        extras["time_grain_sqla"] = grain
        axis = {
            "timeGrain": grain,
            "columnType": "BASE_AXIS",
            "sqlExpression": dataset.time_column,
            "label": dataset.time_column,
            "expressionType": "SQL",
        }
        columns = [axis, *columns]
    order = chart.order_by or next(iter(chart.metrics))
    body: dict[str, Any] = {
        "filters": [{"col": dataset.time_column, "op": "TEMPORAL_RANGE", "val": time_range or dashboard.time_range}]
        if dataset.time_column
        else [],
        "extras": extras,
        "columns": columns,
        "metrics": metrics,
        "orderby": [[metric(order, chart.metrics[order]), False]] if chart.type == "table" else [],
        "row_limit": chart.row_limit,
        "series_limit": 0,
        "order_desc": True,
        "annotation_layers": [],
        "applied_time_extras": {},
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
        "post_processing": [],
    }
    return body


def query_context(
    dashboard: Dashboard, chart: Chart, dataset_id: int, time_range: str | None = None, chart_id: int | None = None
) -> dict[str, Any]:
    """A query context for ``/api/v1/chart/data`` (stored with the chart for its data API and exports)."""
    data = form_data(dashboard, chart, dataset_id)
    if chart_id is not None:
        data["slice_id"] = chart_id
    return {
        "datasource": {"id": dataset_id, "type": "table"},
        "force": False,
        "queries": [query(dashboard, chart, time_range)],
        "form_data": data,
        "result_format": "json",
        "result_type": "full",
    }


def position(dashboard: Dashboard, chart_ids: dict[str, int]) -> dict[str, Any]:
    """The dashboard's ``position_json``: charts in file order, filling rows of 12 grid columns."""
    layout: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": dashboard.title}},
    }
    row: dict[str, Any] | None = None
    used = 0
    for chart in dashboard.charts:
        if row is None or used + chart.width > 12:
            row_id = f"ROW-{len(layout['GRID_ID']['children']) + 1}"
            row = {
                "type": "ROW",
                "id": row_id,
                "children": [],
                "parents": ["ROOT_ID", "GRID_ID"],
                "meta": {"background": "BACKGROUND_TRANSPARENT"},
            }
            layout[row_id] = row
            layout["GRID_ID"]["children"].append(row_id)
            used = 0
        node_id = f"CHART-{chart.key}"
        layout[node_id] = {
            "type": "CHART",
            "id": node_id,
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID", row["id"]],
            "meta": {
                "width": chart.width,
                "height": chart.height,
                "chartId": chart_ids[chart.key],
                "uuid": str(dashboard.chart_uuid(chart.key)),
                "sliceName": chart.title,
            },
        }
        row["children"].append(node_id)
        used += chart.width
    return layout


def native_filters(
    dashboard: Dashboard, chart_ids: dict[str, int], dataset_ids: dict[str, int], dataset_columns: dict[str, set[str]]
) -> list[dict[str, Any]]:
    """A time range filter plus one select filter per column in ``filters``.

    A select filter takes its values from the first dataset that has the column and applies to
    every chart whose dataset has it; charts without the column are out of its scope.
    """
    every_chart = [chart_ids[c.key] for c in dashboard.charts]
    timed = [chart_ids[c.key] for c in dashboard.charts if dashboard.datasets[c.dataset].time_column]
    filters: list[dict[str, Any]] = []
    if timed:
        filters.append(
            {
                "id": "NATIVE_FILTER-time_range",
                "name": "Time range",
                "filterType": "filter_time",
                "type": "NATIVE_FILTER",
                "targets": [{}],
                "controlValues": {},
                "defaultDataMask": {
                    "extraFormData": {"time_range": dashboard.time_range},
                    "filterState": {"value": dashboard.time_range},
                },
                "cascadeParentIds": [],
                "scope": {"rootPath": ["ROOT_ID"], "excluded": sorted(set(every_chart) - set(timed))},
                "chartsInScope": timed,
                "tabsInScope": [],
                "description": "",
            }
        )
    for column in dashboard.filters:
        having = [key for key, columns in dataset_columns.items() if column in columns]
        if not having:
            raise ValueError(f"{dashboard.source}: filter {column!r}: no dataset has a column of that name")
        in_scope = [chart_ids[c.key] for c in dashboard.charts if c.dataset in having]
        filters.append(
            {
                "id": f"NATIVE_FILTER-{column}",
                "name": column.replace("_", " ").capitalize(),
                "filterType": "filter_select",
                "type": "NATIVE_FILTER",
                "targets": [{"datasetId": dataset_ids[having[0]], "column": {"name": column}}],
                "controlValues": {
                    "enableEmptyFilter": False,
                    "defaultToFirstItem": False,
                    "multiSelect": True,
                    "searchAllOptions": False,
                    "inverseSelection": False,
                },
                "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
                "cascadeParentIds": [],
                "scope": {"rootPath": ["ROOT_ID"], "excluded": sorted(set(every_chart) - set(in_scope))},
                "chartsInScope": in_scope,
                "tabsInScope": [],
                "description": "",
            }
        )
    return filters


def json_metadata(dashboard: Dashboard, filters: list[dict[str, Any]]) -> dict[str, Any]:
    """The dashboard's ``json_metadata``: native filters, refresh, no cross-filters."""
    return {
        "native_filter_configuration": filters,
        "chart_configuration": {},
        "global_chart_configuration": {"scope": {"rootPath": ["ROOT_ID"], "excluded": []}, "chartsInScope": []},
        "cross_filters_enabled": False,
        "refresh_frequency": dashboard.refresh_seconds,
        "timed_refresh_immune_slices": [],
        "expanded_slices": {},
        "label_colors": {},
        "shared_label_colors": [],
        "color_scheme": "",
        "default_filters": "{}",
        "filter_scopes": {},
    }
