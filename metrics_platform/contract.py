"""The flat event contract (schemas/agent_event.schema.json), checked on the producer side.

ClickHouse enforces the same rules when it ingests the events topic (sql/0004); checking before
producing gives a backfill a precise reason and line number for every reject instead of a
dead-letter row later.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from metrics_platform.paths import SCHEMA_DIR

SCHEMA_PATH = SCHEMA_DIR / "agent_event.schema.json"


@cache
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def event_time(record: dict[str, Any]) -> datetime:
    """The event's ``ts`` as an aware UTC datetime (call only on a valid record)."""
    from datetime import UTC

    ts = record["ts"]
    if isinstance(ts, int):
        return datetime.fromtimestamp(ts / 1000, tz=UTC)
    # RFC 3339, and ClickHouse's text form ('2026-11-24 09:08:44.071', UTC) which fromisoformat reads too
    parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def validate(record: Any, accepted: tuple[datetime, datetime] | None = None) -> str | None:
    """Why ``record`` breaks the contract, or None when it is a valid event.

    ``accepted`` is the (earliest, latest) ``ts`` ClickHouse stores (retention and clock-skew
    allowance, see ``accepted_window``); without it any time passes.
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.path) or "record"
        if error.validator in ("not", "propertyNames", "if", "then", "allOf"):
            # The default message would repeat the forbidden value: a raw user id or email.
            return f"{where}: must not carry raw user identifiers (user_id, user.email, ...): send user_id_hash"
        return f"{where}: {error.message}"
    try:
        ts = event_time(record)
    except ValueError as exc:
        return f"ts: not an RFC 3339 timestamp ({exc})"
    if accepted and not accepted[0] <= ts <= accepted[1]:
        first, last = (f"{moment:%Y-%m-%d %H:%M} UTC" for moment in accepted)
        return f"ts: {ts.isoformat()} is outside the accepted window {first} .. {last} (retention, clock skew)"
    return None


def accepted_window(retention_days: int, max_future_s: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The span start times ClickHouse accepts: within the retention, at most ``max_future_s`` ahead."""
    from datetime import UTC, timedelta

    now = now or datetime.now(UTC)
    return now - timedelta(days=retention_days), now + timedelta(seconds=max_future_s)
