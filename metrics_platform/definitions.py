"""The Dagster code location: every asset, check, job, schedule and sensor of the platform.

Load with ``dagster dev -w workspace.yaml`` or ``dg``. Each ``defs`` submodule holds one
domain; this file only merges them and binds the shared resources.
"""

from __future__ import annotations

import dagster as dg

from metrics_platform.defs import (
    alerts,
    drift,
    enrichment,
    health,
    kafka,
    prices,
    replay,
    resources,
    retention,
    rollups,
    run_failures,
    schema,
)

defs = dg.Definitions.merge(
    schema.defs,
    kafka.defs,
    replay.defs,
    prices.defs,
    rollups.defs,
    retention.defs,
    enrichment.defs,
    drift.defs,
    health.defs,
    alerts.defs,
    run_failures.defs,
    dg.Definitions(resources=resources.resources()),
)
