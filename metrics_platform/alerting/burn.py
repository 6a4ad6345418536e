"""Multi-window burn rates of an objective (pure functions).

An objective such as "99 % of requests succeed" leaves an error budget of 1 %; the burn rate of a
window is its bad share divided by that budget (1 = spending the budget exactly as fast as the
objective allows). A pair of windows fires when both burn at least the pair's rate: the long window
(1 h, 6 h) keeps a short blip from paging, the short one (5 min, 30 min) makes the alert resolve
soon after the problem stops. Latency objectives are the same with "bad" = slower than the
threshold: "p95 under 2 s" is "at most 5 % of requests slower than 2 s".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metrics_platform.alerting.rules import BurnWindow


@dataclass(frozen=True)
class Counts:
    """Events in a window and how many of them were bad (failed, or slower than the threshold)."""

    total: int
    bad: int

    @property
    def bad_share(self) -> float:
        return self.bad / self.total if self.total else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.total + other.total, self.bad + other.bad)


def burn_rate(counts: Counts, objective: float) -> float:
    """Bad share over the error budget (1 - objective); 0 without events."""
    return counts.bad_share / (1.0 - objective)


@dataclass(frozen=True)
class BurnResult:
    """The verdict for one key: whether a pair fired, which, and the numbers behind it."""

    breached: bool
    severity: str
    value: float  # burn rate of the long window of the pair that fired (or of the first pair)
    threshold: float  # that pair's burn rate
    detail: str


def evaluate(
    counts: Mapping[int, Counts], objective: float, windows: Sequence[BurnWindow], min_events: int, bad_name: str
) -> BurnResult:
    """Check each window pair in order (most severe first); the first that fires decides.

    ``counts`` maps window length in minutes to that window's counts; a long window with fewer than
    ``min_events`` events never fires (three failures out of five requests say little).
    """
    empty = Counts(0, 0)
    for pair in windows:
        long, short = counts.get(pair.long_minutes, empty), counts.get(pair.short_minutes, empty)
        long_burn, short_burn = burn_rate(long, objective), burn_rate(short, objective)
        if long.total >= min_events and long_burn >= pair.burn_rate and short_burn >= pair.burn_rate:
            detail = (
                f"burn rate {long_burn:.1f}x over {_span(pair.long_minutes)} ({long.bad}/{long.total} {bad_name}, "
                f"{long.bad_share:.1%}) and {short_burn:.1f}x over {_span(pair.short_minutes)} "
                f"({short.bad}/{short.total}); objective {objective:.2%}, fires at {pair.burn_rate:g}x"
            )
            return BurnResult(True, pair.severity, long_burn, pair.burn_rate, detail)
    first = windows[0]
    long = counts.get(first.long_minutes, empty)
    burn = burn_rate(long, objective)
    detail = (
        f"burn rate {burn:.1f}x over {_span(first.long_minutes)} ({long.bad}/{long.total} {bad_name}); "
        f"objective {objective:.2%}"
    )
    return BurnResult(False, first.severity, burn, first.burn_rate, detail)


def _span(minutes: int) -> str:
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
