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
    parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def validate(record: Any) -> str | None:
    """Why ``record`` breaks the contract, or None when it is a valid event."""
    if not isinstance(record, dict):
        return "not a JSON object"
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.path) or "record"
        if error.validator == "not":
            # The default message would repeat the forbidden value: a raw user id or email.
            return f"{where}: must not carry user_id or user_email (send user_id_hash)"
        return f"{where}: {error.message}"
    try:
        event_time(record)
    except ValueError as exc:
        return f"ts: not an RFC 3339 timestamp ({exc})"
    return None
