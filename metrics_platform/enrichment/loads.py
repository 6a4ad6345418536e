"""Storing a validated source: replace the dataset's table and record the load in ``enrichment_loads``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from clickhouse_connect.driver.client import Client

from metrics_platform.enrichment.records import Parsed, Reject
from metrics_platform.enrichment.sources import SourceError
from metrics_platform.table_swap import replace_table

T = TypeVar("T")


@dataclass(frozen=True)
class LoadReport:
    """What one load read, stored and rejected; ``source`` is shown without credentials."""

    dataset: str
    source: str
    records: int
    loaded: int
    rejects: list[Reject]


def store(
    ch: Client,
    dataset: str,
    parsed: Parsed[T],
    columns: Sequence[str],
    values: Callable[[T], Sequence[object]],
    run_id: str,
    allow_empty: bool,
) -> LoadReport:
    """Replace table ``dataset`` with ``parsed.rows`` (``values`` gives a row's ``columns``).

    With no valid row the table is kept and ``SourceError`` raised, unless ``allow_empty``.
    """
    if not parsed.rows and not allow_empty:
        example = f"; first reject: {parsed.rejects[0].location}: {parsed.rejects[0].reason}" if parsed.rejects else ""
        raise SourceError(
            f"{parsed.source}: no valid {dataset} rows ({len(parsed.rejects)} rejected{example}); "
            f"the current {dataset} table is kept"
        )
    loaded_at = datetime.now(UTC)
    rows = [[*values(row), parsed.source, loaded_at] for row in parsed.rows]
    replace_table(ch, dataset, [*columns, "source", "loaded_at"], rows)
    ch.insert(
        "enrichment_loads",
        [[dataset, parsed.source, parsed.records, len(parsed.rows), len(parsed.rejects), run_id, loaded_at]],
        column_names=["dataset", "source", "records", "loaded", "rejected", "run_id", "loaded_at"],
    )
    return LoadReport(dataset, parsed.source, parsed.records, len(parsed.rows), parsed.rejects)
