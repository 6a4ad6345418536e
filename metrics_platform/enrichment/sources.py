"""Reading a reference-data source: a file path, a ``file://`` URL or an ``http(s)://`` URL.

``read_source`` returns the text and its format (csv, json or jsonl); ``records`` turns that text
into rows. A source that cannot be used as a whole raises ``SourceError``, whose message names
the source as ``display_source`` shows it (no password, no query string).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from metrics_platform.paths import PROJECT_ROOT

SAMPLE_DIR = PROJECT_ROOT / "data" / "enrichment"
# Reference data is small; a cap keeps a wrong URL (a video, a dump) from filling memory.
MAX_SOURCE_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0


class SourceError(RuntimeError):
    """A source cannot be used as a whole; the message names the source and, if known, the line."""


def display_source(source: str) -> str:
    """The source as safe to log and store: no password in the URL, no query string (tokens)."""
    parsed = urlparse(source)
    if parsed.scheme not in ("http", "https"):
        return source
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc = f"{netloc}:{parsed.port}"
    if parsed.username:
        netloc = f"{parsed.username}@{netloc}"
    return urlunparse(parsed._replace(netloc=netloc, query="<redacted>" if parsed.query else "", fragment=""))


def read_source(
    source: str, timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = MAX_SOURCE_BYTES
) -> tuple[str, str]:
    """The text of a file path, ``file://`` or ``http(s)://`` source, and its format.

    The format is ``csv``, ``json`` or ``jsonl``: from the file extension, else the HTTP
    Content-Type, else the first character. ``timeout_s`` bounds the whole download, not just
    each socket read. Raises ``SourceError`` naming the source when it cannot be read.
    """
    shown = display_source(source)
    parsed = urlparse(source)
    content_type = ""
    if parsed.scheme in ("http", "https"):
        data, content_type = _fetch(source, shown, timeout_s, max_bytes)
    elif parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
        try:
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise SourceError(f"{shown}: cannot read the file ({exc.strerror or exc})") from None
    else:
        raise SourceError(f"{shown}: unsupported source; use a file path or an http(s):// URL")
    if len(data) > max_bytes:
        raise SourceError(f"{shown}: larger than {max_bytes:,} bytes; is this the right source?")
    try:
        # utf-8-sig: spreadsheet programs put a byte-order mark in front of exported CSV.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{shown}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    return text, _detect_format(parsed.path if parsed.scheme else source, content_type, text)


def _fetch(url: str, shown: str, timeout_s: float, max_bytes: int) -> tuple[bytes, str]:
    request = urllib.request.Request(
        url,
        headers={"User-Agent": "metrics-platform-enrichment", "Accept": "text/csv, application/json, */*;q=0.5"},
    )
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            content_type = response.headers.get_content_type()
            while size <= max_bytes:
                if time.monotonic() > deadline:
                    raise SourceError(f"{shown}: download took longer than {timeout_s:g} s")
                chunk = response.read(64 * 1024)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SourceError(f"{shown}: cannot fetch ({exc.reason})") from None
    except (TimeoutError, OSError) as exc:
        raise SourceError(f"{shown}: cannot fetch ({exc or type(exc).__name__})") from None
    return b"".join(chunks), content_type


def _detect_format(path: str, content_type: str, text: str) -> str:
    suffix = Path(path).suffix.lower()
    by_suffix = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    if content_type in ("application/x-ndjson", "application/jsonl", "application/x-jsonlines"):
        return "jsonl"
    if content_type.endswith("json"):
        return "json"
    if content_type == "text/csv":
        return "csv"
    head = text.lstrip()[:1]
    if head == "[":
        return "json"
    if head == "{":
        # One object spread over the text is JSON; several objects, one per line, are JSON Lines.
        try:
            json.loads(text)
            return "json"
        except ValueError:
            return "jsonl"
    return "csv"
