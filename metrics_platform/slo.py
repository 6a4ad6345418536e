"""Multi-window error-rate (SLO burn) evaluation of requests per service, environment and route.

A key *burns* when its error rate exceeds the target in both the long window (default 15 min)
and the short one (default 5 min), with enough calls to mean something: the long window keeps
one burst from paging, the short one stops paging as soon as the service has recovered.
Burn rate = error rate / error budget, where the budget is the target error rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from metrics_platform.settings import AlertSettings

# Requests only (an LLM or HTTP call failing inside a request is not a second failed request);
# the inner query is answered by the per-minute route rollup (projection p_route_minute).
_QUERY = """
SELECT service, env, route,
       sumIf(calls, ts_min >= now() - toIntervalMinute({long:UInt32})) AS long_calls,
       sumIf(errors, ts_min >= now() - toIntervalMinute({long:UInt32})) AS long_errors,
       sumIf(calls, ts_min >= now() - toIntervalMinute({short:UInt32})) AS short_calls,
       sumIf(errors, ts_min >= now() - toIntervalMinute({short:UInt32})) AS short_errors
FROM
(
    SELECT toStartOfMinute(ts) AS ts_min, service, env, route,
           countIf(is_request) AS calls, countIf(is_request AND status != 'ok') AS errors
    FROM agent_events
    WHERE toStartOfMinute(ts) >= now() - toIntervalMinute({long:UInt32})
    GROUP BY ts_min, service, env, route
)
GROUP BY service, env, route
HAVING long_calls > 0
"""


@dataclass(frozen=True)
class SloWindow:
    key: tuple[str, str, str]  # service, env, route
    long_calls: int
    long_errors: int
    short_calls: int
    short_errors: int

    @property
    def long_rate(self) -> float:
        return self.long_errors / self.long_calls if self.long_calls else 0.0

    @property
    def short_rate(self) -> float:
        return self.short_errors / self.short_calls if self.short_calls else 0.0

    def burning(self, alerting: AlertSettings) -> bool:
        target = alerting.slo_error_rate
        return self.long_calls >= alerting.slo_min_calls and self.long_rate > target and self.short_rate > target

    def recovered(self, alerting: AlertSettings) -> bool:
        return self.short_rate <= alerting.slo_error_rate


def windows(ch: Client, alerting: AlertSettings) -> dict[tuple[str, str, str], SloWindow]:
    """Request and error counts per key in both windows (from the per-minute rollup: cheap)."""
    rows = ch.query(
        _QUERY, parameters={"long": alerting.slo_long_window_min, "short": alerting.slo_short_window_min}
    ).result_rows
    return {(s, a, r): SloWindow((s, a, r), int(lc), int(le), int(sc), int(se)) for s, a, r, lc, le, sc, se in rows}
