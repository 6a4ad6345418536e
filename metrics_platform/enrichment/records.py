"""Records of a source, validated one by one: the valid rows load, each bad one is a ``Reject``.

``iter_records`` yields (location, record) pairs from CSV, JSON or JSON Lines text, the location
being what an operator needs to find the record ("line 7", "item 3"). ``parse_records`` turns
them into typed rows with a dataset's row function, rejecting invalid records and duplicates
with their location and reason. Only a problem with the source as a whole raises ``SourceError``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from metrics_platform.enrichment.sources import SourceError

T = TypeVar("T")


class RowError(ValueError):
    """One record is invalid; the message is the reason reported for it."""


@dataclass(frozen=True)
class Reject:
    """A record left out of a load, where it was and why."""

    location: str  # "line 7" (CSV, JSON Lines), "item 3" (JSON array) or a JSON path
    reason: str


@dataclass
class Parsed(Generic[T]):
    """The outcome of validating one source: its valid rows and its rejected records."""

    source: str
    rows: list[T]
    rejects: list[Reject]

    @property
    def records(self) -> int:
        return len(self.rows) + len(self.rejects)


def iter_records(
    shown: str, text: str, fmt: str, required: Sequence[str], list_keys: Sequence[str]
) -> Iterator[tuple[str, object]]:
    """(location, record) pairs; a record that is not an object is the row validator's problem."""
    if fmt == "csv":
        yield from _csv_records(shown, text, required)
    elif fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except ValueError as exc:
                yield f"line {number}", RowError(f"not valid JSON ({exc})")
    else:
        yield from json_items(shown, json_document(shown, text), list_keys)


def json_document(shown: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{shown}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def json_items(shown: str, document: object, list_keys: Sequence[str]) -> Iterator[tuple[str, object]]:
    if isinstance(document, dict):
        key = next((k for k in list_keys if isinstance(document.get(k), list)), None)
        if key is None:
            raise SourceError(
                f"{shown}: expected a JSON array of objects, or an object with an array under "
                f"{' or '.join(repr(k) for k in list_keys)}"
            )
        document = document[key]
    if not isinstance(document, list):
        raise SourceError(f"{shown}: expected a JSON array of objects, found {type(document).__name__}")
    for index, item in enumerate(document, start=1):
        yield f"item {index}", item


def _csv_records(shown: str, text: str, required: Sequence[str]) -> Iterator[tuple[str, object]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            raise SourceError(f"{shown}: line {reader.line_num}: unreadable CSV ({exc})") from None
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [c for c in required if c not in header]
            if missing:
                raise SourceError(
                    f"{shown}: line {reader.line_num}: the CSV header lacks {', '.join(missing)} "
                    f"(found: {', '.join(header) or 'nothing'})"
                )
            continue
        location = f"line {reader.line_num}"
        if len(row) != len(header):
            yield location, RowError(f"has {len(row)} fields, the header has {len(header)}")
            continue
        yield location, dict(zip(header, row, strict=True))
    if header is None:
        raise SourceError(f"{shown}: empty CSV (expected a header with {', '.join(required)})")


def text_field(fields: dict[str, object], key: str, required: bool = True) -> str:
    value = fields.get(key)
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)  # numeric account ids in JSON
    else:
        raise RowError(f"{key} must be a string, not {type(value).__name__}")
    if required and not text:
        raise RowError(f"{key} is missing or empty")
    return text


def parse_records(
    shown: str,
    records: Iterable[tuple[str, object]],
    to_row: Callable[[dict[str, object]], T],
    key: Callable[[T], object],
) -> Parsed[T]:
    rows: list[T] = []
    rejects: list[Reject] = []
    seen: dict[object, str] = {}
    for location, record in records:
        try:
            if isinstance(record, RowError):
                raise record
            if not isinstance(record, dict):
                raise RowError(f"expected an object, found {type(record).__name__}")
            row = to_row(record)
        except RowError as exc:
            rejects.append(Reject(location, str(exc)))
            continue
        # A later duplicate is rejected rather than silently winning: which one is right is
        # the data owner's call, and the report tells them where both are.
        if key(row) in seen:
            rejects.append(Reject(location, f"duplicate of {seen[key(row)]}"))
            continue
        seen[key(row)] = location
        rows.append(row)
    return Parsed(shown, rows, rejects)
