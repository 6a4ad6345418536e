"""Reference data that turns raw spans into business answers: who pays for a call, which flags were on.

Billing accounts (user_id_hash -> account, plan) and feature flags (agent or route -> flag ->
enabled/variant) are read from a CSV, JSON or JSON Lines file, or an http(s) URL, validated row by
row and loaded into ClickHouse join tables. A bad row is rejected with its line (or item) and
reason and the good rows still load; a source that cannot be read at all, or has no valid row,
changes nothing. Each load replaces its table atomically (staging table + EXCHANGE TABLES).

``refresh_cost_by_account`` then recomputes ``cost_by_account_daily`` from raw events: calls,
errors, tokens and cost per billing account and day, with users who have no account under
``unassigned``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlparse, urlunparse

from clickhouse_connect.driver.client import Client

from metrics_platform.paths import PROJECT_ROOT

BILLING_ACCOUNTS_ENV = "METRICS_PLATFORM_BILLING_ACCOUNTS_SOURCE"
FEATURE_FLAGS_ENV = "METRICS_PLATFORM_FEATURE_FLAGS_SOURCE"
SAMPLE_DIR = PROJECT_ROOT / "data" / "enrichment"
UNASSIGNED = "unassigned"
FLAG_SCOPES = ("agent", "route")
# Reference data is small; a cap keeps a wrong URL (a video, a dump) from filling memory.
MAX_SOURCE_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
# A staging table older than this belongs to a load that died; younger ones may be in use.
_STALE_STAGING_S = 3600

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})

BILLING_COLUMNS = ("user_id_hash", "account_id", "account_name", "plan")
FLAG_COLUMNS = ("scope", "target", "flag", "enabled", "variant")

T = TypeVar("T")


class SourceError(RuntimeError):
    """A source cannot be used as a whole; the message names the source and, if known, the line."""


class _RowError(ValueError):
    """One record is invalid; the message is the reason reported for it."""


@dataclass(frozen=True)
class Reject:
    """A record left out of a load, where it was and why."""

    location: str  # "line 7" (CSV, JSON Lines), "item 3" (JSON array) or a JSON path
    reason: str


@dataclass(frozen=True)
class BillingAccount:
    user_id_hash: str
    account_id: str
    account_name: str
    plan: str


@dataclass(frozen=True)
class FeatureFlag:
    scope: str
    target: str
    flag: str
    enabled: bool
    variant: str


@dataclass
class Parsed(Generic[T]):
    """The outcome of validating one source: its valid rows and its rejected records."""

    source: str
    rows: list[T]
    rejects: list[Reject]

    @property
    def records(self) -> int:
        return len(self.rows) + len(self.rejects)


@dataclass(frozen=True)
class LoadReport:
    """What one load read, stored and rejected; ``source`` is shown without credentials."""

    dataset: str
    source: str
    records: int
    loaded: int
    rejects: list[Reject]


# --- reading sources -------------------------------------------------------------------------


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


def _records(
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
                yield f"line {number}", _RowError(f"not valid JSON ({exc})")
    else:
        yield from _json_items(shown, _json_document(shown, text), list_keys)


def _json_document(shown: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{shown}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _json_items(shown: str, document: object, list_keys: Sequence[str]) -> Iterator[tuple[str, object]]:
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
            yield location, _RowError(f"has {len(row)} fields, the header has {len(header)}")
            continue
        yield location, dict(zip(header, row, strict=True))
    if header is None:
        raise SourceError(f"{shown}: empty CSV (expected a header with {', '.join(required)})")


def _text(fields: dict[str, object], key: str, required: bool = True) -> str:
    value = fields.get(key)
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)  # numeric account ids in JSON
    else:
        raise _RowError(f"{key} must be a string, not {type(value).__name__}")
    if required and not text:
        raise _RowError(f"{key} is missing or empty")
    return text


def _parse(
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
            if isinstance(record, _RowError):
                raise record
            if not isinstance(record, dict):
                raise _RowError(f"expected an object, found {type(record).__name__}")
            row = to_row(record)
        except _RowError as exc:
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


# --- billing accounts ------------------------------------------------------------------------


def _billing_row(fields: dict[str, object]) -> BillingAccount:
    user_id_hash = _text(fields, "user_id_hash").lower()
    if not _HASH_RE.match(user_id_hash):
        # The value is not echoed: a wrong column may well hold raw user ids or emails.
        shape = "contains '@' (an email?)" if "@" in user_id_hash else f"{len(user_id_hash)} characters"
        raise _RowError(f"user_id_hash must be 64 hex characters (keyed SHA-256 of the user id), got {shape}")
    account_id = _text(fields, "account_id")
    if account_id.lower() == UNASSIGNED:
        raise _RowError(f"account_id '{UNASSIGNED}' is reserved for users without an account")
    plan = _text(fields, "plan").lower()
    account_name = _text(fields, "account_name", required=False) or account_id
    return BillingAccount(user_id_hash, account_id, account_name, plan)


def parse_billing_accounts(source: str, text: str, fmt: str) -> Parsed[BillingAccount]:
    """Validate billing-account records (columns user_id_hash, account_id, account_name, plan).

    account_name is optional (defaults to account_id); every other column is required. A second
    row for the same user_id_hash is rejected, naming the first.
    """
    records = _records(
        source, text, fmt, ("user_id_hash", "account_id", "plan"), ("billing_accounts", "accounts", "rows")
    )
    return _parse(source, records, _billing_row, key=lambda a: a.user_id_hash)


# --- feature flags ---------------------------------------------------------------------------


def _flag_row(fields: dict[str, object]) -> FeatureFlag:
    scope = _text(fields, "scope").lower()
    if scope not in FLAG_SCOPES:
        raise _RowError(f"scope must be 'agent' or 'route', got {scope!r}")
    target = _text(fields, "target")
    flag = _text(fields, "flag")
    variant = _text(fields, "variant", required=False)
    raw = fields.get("enabled")
    if isinstance(raw, bool):
        enabled = raw
    else:
        text = _text(fields, "enabled", required=False).lower()
        if text in _TRUE:
            enabled = True
        elif text in _FALSE:
            enabled = False
        elif not text and variant:
            enabled = True  # naming a variant means the flag is on
        else:
            raise _RowError(f"enabled must be true or false, got {text!r}" if text else "enabled is missing")
    return FeatureFlag(scope, target, flag, enabled, variant)


def _nested_flags(document: dict[str, object]) -> Iterator[tuple[str, object]]:
    """Rows of the nested form ``{"agents": {"router": {"flag": true | "variant" | {..}}}}``."""
    for group, scope in (("agents", "agent"), ("routes", "route"), ("agent", "agent"), ("route", "route")):
        targets = document.get(group)
        if targets is None:
            continue
        if not isinstance(targets, dict):
            yield group, _RowError(f"{group} must map {scope} names to their flags")
            continue
        for target, flags in targets.items():
            if not isinstance(flags, dict):
                yield f"{group}.{target}", _RowError("must map flag names to true/false, a variant or an object")
                continue
            for flag, value in flags.items():
                location = f"{group}.{target}.{flag}"
                base: dict[str, object] = {"scope": scope, "target": target, "flag": flag}
                if isinstance(value, bool):
                    yield location, {**base, "enabled": value}
                elif isinstance(value, str):
                    yield location, {**base, "enabled": True, "variant": value}
                elif isinstance(value, dict):
                    yield location, {**base, **value}
                else:
                    yield location, _RowError("value must be true/false, a variant string or an object")


def parse_feature_flags(source: str, text: str, fmt: str) -> Parsed[FeatureFlag]:
    """Validate feature-flag records: scope (agent|route), target, flag, enabled, variant.

    JSON may also use the nested form ``{"agents": {name: {flag: value}}, "routes": {...}}``
    where a value is true/false, a variant name (meaning enabled) or ``{"enabled", "variant"}``.
    A second row for the same scope, target and flag is rejected.
    """
    records: Iterable[tuple[str, object]]
    if fmt == "json":
        document = _json_document(source, text)
        if isinstance(document, dict) and any(k in document for k in ("agents", "routes", "agent", "route")):
            records = _nested_flags(document)
        else:
            records = _json_items(source, document, ("feature_flags", "flags", "rows"))
    else:
        records = _records(source, text, fmt, ("scope", "target", "flag"), ())
    return _parse(source, records, _flag_row, key=lambda f: (f.scope, f.target, f.flag))


# --- loading into ClickHouse -----------------------------------------------------------------


def replace_table(ch: Client, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Replace every row of ``table`` atomically: readers see the old rows or the new, never a mix.

    The rows go into a staging table created ``AS`` the live one (same engine and columns), which
    is then swapped in with EXCHANGE TABLES. The staging name is unique per load, so two loads
    never write into each other's staging table; the last to swap wins.
    """
    _drop_stale_staging(ch, table)
    staging = f"{table}_load_{secrets.token_hex(4)}"
    ch.command(f"CREATE TABLE {staging} AS {table}")
    try:
        if rows:
            ch.insert(staging, list(rows), column_names=list(columns))
        ch.command(f"EXCHANGE TABLES {staging} AND {table}")
    finally:
        ch.command(f"DROP TABLE IF EXISTS {staging}")


def _drop_stale_staging(ch: Client, table: str) -> None:
    stale = ch.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND startsWith(name, {p:String}) "
        "AND metadata_modification_time < now() - toIntervalSecond({s:UInt32})",
        parameters={"p": f"{table}_load_", "s": _STALE_STAGING_S},
    ).result_rows
    for (name,) in stale:
        ch.command(f"DROP TABLE IF EXISTS {name}")


def _store(
    ch: Client,
    dataset: str,
    parsed: Parsed[T],
    columns: Sequence[str],
    values: Callable[[T], Sequence[object]],
    run_id: str,
    allow_empty: bool,
) -> LoadReport:
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


def load_billing_accounts(
    ch: Client, source: str, timeout_s: float = DEFAULT_TIMEOUT_S, run_id: str = "", allow_empty: bool = False
) -> LoadReport:
    """Read, validate and load billing accounts from ``source``, replacing ``billing_accounts``.

    Rejected rows are reported, not loaded. With no valid row the table is left as it was
    (``SourceError``) unless ``allow_empty``. Every load is recorded in ``enrichment_loads``.
    """
    parsed = parse_billing_accounts(display_source(source), *read_source(source, timeout_s))
    return _store(
        ch,
        "billing_accounts",
        parsed,
        BILLING_COLUMNS,
        lambda a: (a.user_id_hash, a.account_id, a.account_name, a.plan),
        run_id,
        allow_empty,
    )


def load_feature_flags(
    ch: Client, source: str, timeout_s: float = DEFAULT_TIMEOUT_S, run_id: str = "", allow_empty: bool = False
) -> LoadReport:
    """Read, validate and load feature flags from ``source``, replacing ``feature_flags``.

    Same rules as ``load_billing_accounts``.
    """
    parsed = parse_feature_flags(display_source(source), *read_source(source, timeout_s))
    return _store(
        ch,
        "feature_flags",
        parsed,
        FLAG_COLUMNS,
        lambda f: (f.scope, f.target, f.flag, f.enabled, f.variant),
        run_id,
        allow_empty,
    )


def plan_summary(ch: Client) -> dict[str, tuple[int, int]]:
    """Plan -> (accounts, users) in the loaded ``billing_accounts``, largest plans first."""
    rows = ch.query(
        "SELECT plan, uniqExact(account_id), count() AS users FROM billing_accounts GROUP BY plan ORDER BY users DESC"
    ).result_rows
    return {str(plan): (int(accounts), int(users)) for plan, accounts, users in rows}


def flag_targets_without_traffic(ch: Client, days: int = 7) -> list[tuple[str, str]]:
    """Flag targets (scope, agent or route) with no traffic in the last ``days`` days.

    Usually a typo or a retired agent: the flag can never show up in a metric.
    """
    rows = ch.query(
        """
        SELECT DISTINCT scope, target FROM feature_flags
        WHERE (scope = 'agent' AND target NOT IN
                  (SELECT DISTINCT agent FROM agent_metrics_1m_state WHERE ts_min > now() - toIntervalDay({d:UInt32})))
           OR (scope = 'route' AND target NOT IN
                  (SELECT DISTINCT route FROM agent_metrics_1m_state WHERE ts_min > now() - toIntervalDay({d:UInt32})))
        ORDER BY scope, target
        """,
        parameters={"d": days},
    ).result_rows
    return [(str(scope), str(target)) for scope, target in rows]


# --- sample data for the demo ----------------------------------------------------------------

_SAMPLE_COMPANIES = (
    "Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Industries", "Wayne Logistics",
    "Hooli", "Pied Piper", "Soylent Foods", "Tyrell Systems", "Cyberdyne", "Wonka Confections",
    "Vandelay Imports", "Massive Dynamic", "Aperture Labs", "Oceanic Air", "Gringotts Bank",
    "Monarch Solutions", "Dunder Paper", "Prestige Worldwide", "Nakatomi Trading", "Oscorp",
    "Blue Sun", "Virtucon", "Sirius Cybernetics", "Weyland Freight", "Bluth Homes", "Krusty Foods",
    "Planet Express", "Los Pollos Hermanos",
)  # fmt: skip
# First five are enterprise, the next ten pro, the rest free; bigger plans have more seats.
_SAMPLE_PLANS = ("enterprise",) * 5 + ("pro",) * 10 + ("free",) * 15
_SAMPLE_SEAT_WEIGHT = {"enterprise": 8.0, "pro": 3.0, "free": 1.0}
DEMO_USER_IDS = tuple(f"u-{k}" for k in range(10000, 12000))  # as metrics_platform.demo generates them


def user_hash(salt: str, user_id: str) -> str:
    """The Collector's user_id_hash: lowercase hex SHA-256 of salt + user id."""
    return hashlib.sha256((salt + user_id).encode()).hexdigest()


def sample_billing_accounts(salt: str, path: Path) -> Path:
    """Write a billing-accounts CSV mapping the demo's users to 30 fictional accounts; returns ``path``.

    Deterministic for a salt (the installation's PII salt, so the hashes match what the Collector
    writes). One user in forty has no account, so the demo also shows the 'unassigned' bucket.
    """
    rng = random.Random(20261127)
    weights = [_SAMPLE_SEAT_WEIGHT[plan] for plan in _SAMPLE_PLANS]
    lines = [",".join(BILLING_COLUMNS)]
    for k, user_id in enumerate(DEMO_USER_IDS):
        index = rng.choices(range(len(_SAMPLE_COMPANIES)), weights=weights)[0]
        if k % 40 == 39:
            continue
        lines.append(
            f"{user_hash(salt, user_id)},acct-{index + 1:03d},{_SAMPLE_COMPANIES[index]},{_SAMPLE_PLANS[index]}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed, so a concurrent load never reads half a file.
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    partial.write_text("\n".join(lines) + "\n")
    os.replace(partial, path)
    return path


def default_billing_accounts_source(state_dir: Path, salt: str) -> str:
    """The billing source when none is configured for a run.

    METRICS_PLATFORM_BILLING_ACCOUNTS_SOURCE if set; else data/enrichment/billing_accounts.csv if
    present; else a demo sample generated under ``state_dir``/enrichment (regenerated when it
    was made with another salt, so its hashes always match this installation's Collector).
    """
    configured = os.environ.get(BILLING_ACCOUNTS_ENV, "").strip()
    if configured:
        return configured
    shipped = SAMPLE_DIR / "billing_accounts.csv"
    if shipped.exists():
        return str(shipped)
    generated = state_dir / "enrichment" / "billing_accounts.csv"
    marker = user_hash(salt, DEMO_USER_IDS[0])
    if not generated.exists() or marker not in generated.read_text()[:4096]:
        sample_billing_accounts(salt, generated)
    return str(generated)


def default_feature_flags_source() -> str:
    """METRICS_PLATFORM_FEATURE_FLAGS_SOURCE if set, else the sample data/enrichment/feature_flags.json."""
    return os.environ.get(FEATURE_FLAGS_ENV, "").strip() or str(SAMPLE_DIR / "feature_flags.json")


# --- cost by account -------------------------------------------------------------------------

# One day of raw events, each attributed to an account. A span without a user (a tool step) takes
# the user of its trace, looked up within an hour either side of the day so runs that cross
# midnight keep their user. Unmatched joins give '' (join_use_nulls is off), hence 'unassigned'.
_COST_BY_ACCOUNT_SQL = """
INSERT INTO {staging:Identifier}
    (day, account_id, account_name, plan, calls, errors, tokens_prompt, tokens_completion, cost_usd, users)
SELECT
    {day:Date} AS day,
    if(b.account_id = '', 'unassigned', b.account_id) AS account,
    if(b.account_id = '', 'unassigned', b.account_name) AS name,
    b.plan AS plan,
    count() AS calls,
    countIf(e.status != 'ok') AS errors,
    sum(e.tokens_prompt) AS tokens_prompt,
    sum(e.tokens_completion) AS tokens_completion,
    sum(toDecimal128(e.cost_usd, 6)) AS cost_usd,
    uniqExactIf(e.user, e.user != '') AS users
FROM
(
    SELECT ev.status, ev.tokens_prompt, ev.tokens_completion, ev.cost_usd,
           if(ev.user_id_hash != '', ev.user_id_hash, t.trace_user) AS user
    FROM agent_events AS ev
    LEFT JOIN
    (
        SELECT trace_id, any(user_id_hash) AS trace_user
        FROM agent_events
        WHERE ts >= toDateTime64({day:Date}, 3, 'UTC') - INTERVAL 1 HOUR
          AND ts < toDateTime64({day:Date} + 1, 3, 'UTC') + INTERVAL 1 HOUR
          AND user_id_hash != ''
          AND trace_id IN (SELECT trace_id FROM agent_events WHERE toDate(ts) = {day:Date} AND user_id_hash = '')
        GROUP BY trace_id
    ) AS t ON ev.trace_id = t.trace_id
    WHERE toDate(ev.ts) = {day:Date}
) AS e
LEFT JOIN billing_accounts AS b ON e.user = b.user_id_hash
GROUP BY account, name, plan
"""


@dataclass(frozen=True)
class DayCost:
    """Totals of one recomputed day of ``cost_by_account_daily``."""

    day: date
    accounts: int  # rows written, 'unassigned' included
    calls: int
    cost_usd: Decimal
    unassigned_cost_usd: Decimal

    @property
    def unassigned_share(self) -> float:
        return float(self.unassigned_cost_usd / self.cost_usd) if self.cost_usd else 0.0


def replace_day_partitions(ch: Client, table: str, days: Sequence[date], fill: Callable[[str, date], None]) -> None:
    """Recompute whole-day partitions of ``table`` (``PARTITION BY day``) atomically per day.

    ``fill(staging, day)`` inserts the day's rows into a staging table made ``AS`` the target;
    the day's partition is then swapped in with REPLACE PARTITION, so readers never see a day
    half-written or missing, and a re-run replaces rather than adds. A day that computes to no
    rows has its partition dropped.
    """
    _drop_stale_staging(ch, table)
    staging = f"{table}_load_{secrets.token_hex(4)}"
    ch.command(f"CREATE TABLE {staging} AS {table}")
    try:
        for day in days:
            fill(staging, day)
            # A date's ISO form is a safe literal; ALTER ... PARTITION takes no query parameters.
            partition = f"'{day.isoformat()}'"
            filled = ch.query(
                f"SELECT count() FROM {staging} WHERE day = {{d:Date}}", parameters={"d": day}
            ).result_rows[0][0]
            if filled:
                ch.command(f"ALTER TABLE {table} REPLACE PARTITION {partition} FROM {staging}")
            else:
                # REPLACE from an empty partition is refused by recent servers; dropping says it plainly.
                ch.command(f"ALTER TABLE {table} DROP PARTITION {partition}")
    finally:
        ch.command(f"DROP TABLE IF EXISTS {staging}")


def refresh_cost_by_account(ch: Client, days: Sequence[date]) -> list[DayCost]:
    """Recompute ``cost_by_account_daily`` for ``days`` from raw events and current accounts.

    Idempotent: each day's partition is replaced, so re-running after an accounts reload
    re-attributes the day. Returns the totals of each day.
    """

    def fill(staging: str, day: date) -> None:
        ch.command(_COST_BY_ACCOUNT_SQL, parameters={"staging": staging, "day": day})

    replace_day_partitions(ch, "cost_by_account_daily", days, fill)
    rows = ch.query(
        "SELECT day, count(), sum(calls), sum(cost_usd), sumIf(cost_usd, account_id = {u:String}) "
        "FROM cost_by_account_daily WHERE day IN {days:Array(Date)} GROUP BY day",
        parameters={"u": UNASSIGNED, "days": list(days)},
    ).result_rows
    found = {row[0]: row for row in rows}
    result = []
    for day in days:
        _, accounts, calls, cost, unassigned = found.get(day, (day, 0, 0, Decimal(0), Decimal(0)))
        result.append(DayCost(day, int(accounts), int(calls), Decimal(cost), Decimal(unassigned)))
    return result


@dataclass(frozen=True)
class AccountCost:
    account_id: str
    account_name: str
    plan: str
    calls: int
    errors: int
    tokens: int
    cost_usd: Decimal


def top_accounts(ch: Client, start: date, end: date, limit: int = 10) -> list[AccountCost]:
    """The accounts with the highest cost over [start, end] (days inclusive), 'unassigned' included."""
    rows = ch.query(
        """
        SELECT account_id, any(account_name), any(plan), sum(calls), sum(errors),
               sum(tokens_prompt) + sum(tokens_completion), sum(cost_usd) AS cost
        FROM cost_by_account_daily
        WHERE day >= {start:Date} AND day <= {end:Date}
        GROUP BY account_id ORDER BY cost DESC, account_id LIMIT {n:UInt32}
        """,
        parameters={"start": start, "end": end, "n": limit},
    ).result_rows
    return [
        AccountCost(str(a), str(n), str(p), int(c), int(e), int(t), Decimal(cost)) for a, n, p, c, e, t, cost in rows
    ]


def unassigned_cost(ch: Client, start: date, end: date) -> tuple[Decimal, Decimal]:
    """(total cost, cost of users without an account) over [start, end] in ``cost_by_account_daily``."""
    total, unassigned = ch.query(
        "SELECT sum(cost_usd), sumIf(cost_usd, account_id = {u:String}) FROM cost_by_account_daily "
        "WHERE day >= {start:Date} AND day <= {end:Date}",
        parameters={"u": UNASSIGNED, "start": start, "end": end},
    ).result_rows[0]
    return Decimal(total or 0), Decimal(unassigned or 0)
