"""OTLP JSON payloads built by hand, for tests that control exactly which spans travel together."""

from __future__ import annotations

import secrets
import time
from typing import Any

# OTLP span kinds as otlp_json writes them.
INTERNAL, SERVER, CLIENT = 1, 2, 3


def attribute(key: str, value: Any) -> dict:
    if isinstance(value, bool):
        encoded = {"boolValue": value}
    elif isinstance(value, int):
        encoded = {"intValue": str(value)}  # OTLP JSON writes 64-bit integers as strings
    elif isinstance(value, float):
        encoded = {"doubleValue": value}
    elif isinstance(value, list):
        encoded = {"arrayValue": {"values": [{"stringValue": str(v)} for v in value]}}
    else:
        encoded = {"stringValue": str(value)}
    return {"key": key, "value": encoded}


def span(
    trace_id: str,
    name: str,
    attrs: dict[str, Any],
    parent: str = "",
    kind: int = INTERNAL,
    start_ns: int | None = None,
    duration_ms: float = 100.0,
    failed: bool = False,
    span_id: str | None = None,
) -> dict:
    start = start_ns if start_ns is not None else time.time_ns() - 10_000_000_000
    body: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id or secrets.token_hex(8),
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + int(duration_ms * 1_000_000)),
        "attributes": [attribute(k, v) for k, v in attrs.items()],
    }
    if failed:
        body["status"] = {"code": 2, "message": "failed"}
    return body


def request(resource: dict[str, Any], spans: list[dict]) -> dict:
    """An ExportTraceServiceRequest with one resource and one scope."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [attribute(k, v) for k, v in resource.items()]},
                "scopeSpans": [{"scope": {"name": "tests"}, "spans": spans}],
            }
        ]
    }
