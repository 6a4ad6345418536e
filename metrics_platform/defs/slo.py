"""SLO burn alerts: request error rate per service, environment and route over a long and a short window."""

import json

import dagster as dg

from metrics_platform import slo
from metrics_platform.alerts import Alert
from metrics_platform.defs.resources import AlertsResource, ClickHouseResource, PlatformSettings


def _name(key: tuple[str, str, str]) -> str:
    return " / ".join(part or "(none)" for part in key)


def build_slo_burn_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    """The SLO sensor; a factory so tests can build and call it directly."""

    @dg.sensor(
        name="slo_burn_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def slo_burn_sensor(
        context: dg.SensorEvaluationContext,
        platform: PlatformSettings,
        clickhouse: ClickHouseResource,
        alerts: AlertsResource,
    ) -> dg.SkipReason:
        """Pages when a service/env/route burns its error budget (failed requests) in both windows.

        Error rate above METRICS_PLATFORM_SLO_ERROR_RATE (default 2 %) over the long window
        (15 min) *and* the short one (5 min), with at least METRICS_PLATFORM_SLO_MIN_CALLS requests:
        one burst does not page, and a key that recovers in the short window sends a recovery
        message and stops paging. State (which keys are firing) lives in the cursor.
        """
        rules = platform.get().alerting
        firing = {tuple(key) for key in json.loads(context.cursor)} if context.cursor else set()
        current = slo.windows(clickhouse.get_client(), rules)
        budget = rules.slo_error_rate
        for key, window in sorted(current.items()):
            name = _name(key)
            if key not in firing and window.burning(rules):
                alerts.send(
                    Alert(
                        title=f"SLO burn: {name}",
                        text=(
                            f"error rate {window.long_rate:.1%} over {rules.slo_long_window_min} min "
                            f"({window.long_errors}/{window.long_calls}) and {window.short_rate:.1%} over "
                            f"{rules.slo_short_window_min} min; target {budget:.1%}, burn rate "
                            f"{window.long_rate / budget:.1f}x"
                        ),
                        key=f"slo:{name}",
                        fields={"long_rate": window.long_rate, "short_rate": window.short_rate},
                    ),
                    context.log,
                )
                firing.add(key)
        for key in sorted(firing):
            name, window = _name(key), current.get(key)
            if window is None or window.recovered(rules):
                rate = f"{window.short_rate:.1%}" if window else "no traffic"
                alerts.send(
                    Alert(
                        title=f"SLO recovered: {name}",
                        text=f"error rate over {rules.slo_short_window_min} min: {rate} (target {budget:.1%})",
                        kind="recovery",
                        key=f"slo:{name}",
                    ),
                    context.log,
                )
                firing.discard(key)
        context.update_cursor(json.dumps(sorted(firing)))
        return dg.SkipReason(f"{len(current)} keys evaluated, {len(firing)} burning")

    return slo_burn_sensor


defs = dg.Definitions(sensors=[build_slo_burn_sensor()])
