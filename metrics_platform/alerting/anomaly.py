"""Anomaly scores against a trailing baseline: median and MAD (pure functions).

For a model (or provider), the baseline is the same number — p95 latency, error rate, tokens per
call — in each earlier window of the same length over the trailing hours. The score of the current
window is a robust z-score:

    z = (current - median(baseline)) / (1.4826 * MAD(baseline))

MAD is the median absolute deviation; 1.4826 scales it to a standard deviation for normal data,
so the threshold reads like a z-score (default 6). Median and MAD ignore the baseline's own
outliers (one bad hour yesterday does not widen the band), unlike mean and standard deviation.

A steady metric has a MAD near zero, where any wobble would score huge, so the scale has a floor:
a share of the median (``relative_floor``, default 10 %) and an absolute floor per metric (5 ms of
latency, 1 percentage point of error rate, 1 token per call). Windows with too few calls are left
out of the baseline and are not scored.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826
ABSOLUTE_FLOORS = {"latency_p95": 5.0, "latency_p50": 5.0, "error_rate": 0.01, "tokens_per_call": 1.0}


@dataclass(frozen=True)
class Score:
    """How far the current window is from its baseline."""

    current: float
    median: float
    mad: float
    scale: float  # the denominator used: 1.4826 * MAD, or the floor
    z: float
    baseline_size: int


def score(current: float, baseline: Sequence[float], absolute_floor: float, relative_floor: float = 0.1) -> Score:
    """The robust z-score of ``current`` against ``baseline`` (needs at least one baseline value)."""
    if not baseline:
        raise ValueError("an anomaly score needs at least one baseline window")
    median = statistics.median(baseline)
    mad = statistics.median(abs(value - median) for value in baseline)
    scale = max(MAD_TO_SIGMA * mad, relative_floor * abs(median), absolute_floor)
    return Score(current, median, mad, scale, (current - median) / scale, len(baseline))


def is_anomalous(s: Score, threshold: float, direction: str = "up") -> bool:
    """Whether the score crosses the threshold in the watched direction (up, down or both)."""
    if direction == "up":
        return s.z >= threshold
    if direction == "down":
        return s.z <= -threshold
    return abs(s.z) >= threshold
