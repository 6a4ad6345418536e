"""Billing accounts: which account (and plan) each user belongs to, keyed by the Collector's user_id_hash.

Parsed from CSV, JSON or JSON Lines and loaded into ``billing_accounts``. Without a configured
source the demo uses a generated sample that maps its users to fictional accounts.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from metrics_platform.enrichment.loads import LoadReport, store
from metrics_platform.enrichment.records import Parsed, RowError, iter_records, parse_records, text_field
from metrics_platform.enrichment.sources import DEFAULT_TIMEOUT_S, SAMPLE_DIR, display_source, read_source

BILLING_ACCOUNTS_ENV = "METRICS_PLATFORM_BILLING_ACCOUNTS_SOURCE"
UNASSIGNED = "unassigned"
BILLING_COLUMNS = ("user_id_hash", "account_id", "account_name", "plan")

_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BillingAccount:
    user_id_hash: str
    account_id: str
    account_name: str
    plan: str


def _billing_row(fields: dict[str, object]) -> BillingAccount:
    user_id_hash = text_field(fields, "user_id_hash").lower()
    if not _HASH_RE.match(user_id_hash):
        # The value is not echoed: a wrong column may well hold raw user ids or emails.
        shape = "contains '@' (an email?)" if "@" in user_id_hash else f"{len(user_id_hash)} characters"
        raise RowError(f"user_id_hash must be 64 hex characters (keyed SHA-256 of the user id), got {shape}")
    account_id = text_field(fields, "account_id")
    if account_id.lower() == UNASSIGNED:
        raise RowError(f"account_id '{UNASSIGNED}' is reserved for users without an account")
    plan = text_field(fields, "plan").lower()
    account_name = text_field(fields, "account_name", required=False) or account_id
    return BillingAccount(user_id_hash, account_id, account_name, plan)


def parse_billing_accounts(source: str, text: str, fmt: str) -> Parsed[BillingAccount]:
    """Validate billing-account records (columns user_id_hash, account_id, account_name, plan).

    account_name is optional (defaults to account_id); every other column is required. A second
    row for the same user_id_hash is rejected, naming the first.
    """
    records = iter_records(
        source, text, fmt, ("user_id_hash", "account_id", "plan"), ("billing_accounts", "accounts", "rows")
    )
    return parse_records(source, records, _billing_row, key=lambda a: a.user_id_hash)


def load_billing_accounts(
    ch: Client, source: str, timeout_s: float = DEFAULT_TIMEOUT_S, run_id: str = "", allow_empty: bool = False
) -> LoadReport:
    """Read, validate and load billing accounts from ``source``, replacing ``billing_accounts``.

    Rejected rows are reported, not loaded. With no valid row the table is left as it was
    (``SourceError``) unless ``allow_empty``. Every load is recorded in ``enrichment_loads``.
    """
    parsed = parse_billing_accounts(display_source(source), *read_source(source, timeout_s))
    return store(
        ch,
        "billing_accounts",
        parsed,
        BILLING_COLUMNS,
        lambda a: (a.user_id_hash, a.account_id, a.account_name, a.plan),
        run_id,
        allow_empty,
    )


def plan_summary(ch: Client) -> dict[str, tuple[int, int]]:
    """Plan -> (accounts, users) in the loaded ``billing_accounts``, largest plans first."""
    rows = ch.query(
        "SELECT plan, uniqExact(account_id), count() AS users FROM billing_accounts GROUP BY plan ORDER BY users DESC"
    ).result_rows
    return {str(plan): (int(accounts), int(users)) for plan, accounts, users in rows}


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
