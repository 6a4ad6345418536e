"""Cost by billing account and day: ``cost_by_account_daily``, recomputed from raw events.

Calls, errors, tokens and cost per account and day, with users who have no account under
``unassigned``. Each day is swapped in whole, so a re-run (say after an accounts reload)
re-attributes the day instead of adding to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from metrics_platform.enrichment.billing import UNASSIGNED
from metrics_platform.table_swap import replace_day_partitions

# One day per user from the per-user rollup (projection p_user_day), each user mapped to an
# account. Spans already carry their trace's user (the finalizer inherits it down the trace).
# calls/errors are requests; tokens are LLM calls' tokens; cost is every billed span's cost.
# Unmatched joins give '' (join_use_nulls is off), hence 'unassigned'.
_COST_BY_ACCOUNT_SQL = """
INSERT INTO {staging:Identifier}
    (day, account_id, account_name, plan, calls, errors, tokens_prompt, tokens_completion, cost_usd, users)
SELECT
    {day:Date} AS day,
    if(b.account_id = '', 'unassigned', b.account_id) AS account,
    if(b.account_id = '', 'unassigned', b.account_name) AS name,
    b.plan AS plan,
    sum(u.requests) AS calls,
    sum(u.failed) AS errors,
    sum(u.tokens_prompt) AS tokens_prompt,
    sum(u.tokens_completion) AS tokens_completion,
    sum(u.cost) AS cost_usd,
    uniqExactIf(u.user, u.user != '') AS users
FROM
(
    SELECT user_id_hash AS user, countIf(is_request) AS requests, countIf(is_request AND status != 'ok') AS failed,
           sumIf(tokens_prompt, kind = 'llm') AS tokens_prompt,
           sumIf(tokens_completion, kind = 'llm') AS tokens_completion,
           sum(cost_usd) AS cost
    FROM agent_events
    WHERE toDate(ts) = {day:Date}
    GROUP BY toDate(ts), user_id_hash
) AS u
LEFT JOIN billing_accounts AS b ON u.user = b.user_id_hash
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
