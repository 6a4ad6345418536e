"""Run config for assets that recompute whole UTC days."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg


class DaysConfig(dg.Config):
    """Whole UTC days to recompute, [start, end]. Default: the last ``days`` days up to today."""

    start: str | None = None
    """First day, YYYY-MM-DD; default end - days + 1."""
    end: str | None = None
    """Last day, YYYY-MM-DD; default today (UTC), so the demo's traffic shows at once."""
    days: int = 3

    def day_list(self) -> list[date]:
        end = date.fromisoformat(self.end) if self.end else datetime.now(UTC).date()
        start = date.fromisoformat(self.start) if self.start else end - timedelta(days=self.days - 1)
        if start > end:
            raise ValueError(f"empty window: start {start} is after end {end}")
        return [start + timedelta(days=i) for i in range((end - start).days + 1)]
