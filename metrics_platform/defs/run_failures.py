"""An alert for every failed run."""

import dagster as dg

from metrics_platform.alerts import Alert
from metrics_platform.defs.resources import AlertsResource


# Checked every minute, like the alert rules: each tick reads the run storage, and at idle ticks are most of
# what Dagster does (Dagster's default is every 30 s).
@dg.run_failure_sensor(
    name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=60
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertsResource) -> None:
    """Sends an alert naming the failed run's job, run id and error."""
    run = context.dagster_run
    error = context.failure_event.message if context.failure_event else "unknown error"
    alerts.send(
        Alert(
            title=f"Dagster run failed: {run.job_name}",
            text=f"run {run.run_id}: {error}"[:1500],
            key=f"run:{run.run_id}",
            fields={"job": run.job_name, "run_id": run.run_id},
        ),
        context.log,
    )


defs = dg.Definitions(sensors=[run_failure_alert])
