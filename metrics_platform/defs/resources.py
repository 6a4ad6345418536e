"""Resources shared by every Dagster object: ClickHouse, Kafka and alerts.

They read the same settings as the CLI (``Settings.from_env``), so one set of environment
variables configures the stack, the CLI and Dagster alike.
"""

import dagster as dg
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from metrics_platform import alerts, clickhouse, kafka_clients
from metrics_platform.settings import Settings


class PlatformSettings(dg.ConfigurableResource):
    """The platform's settings, read from the environment when a run or sensor starts."""

    def get(self) -> Settings:
        return Settings.from_env()


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse through clickhouse-connect, at the URL the CLI uses."""

    def get_client(self) -> Client:
        return clickhouse.client(Settings.from_env().clickhouse)

    def read_database(self) -> str:
        """The database readers use: on a cluster, the one of Distributed tables over every shard."""
        return clickhouse.read_database(Settings.from_env())

    def get_reader(self) -> Client:
        """A client of the readers' database: on a cluster, the Distributed tables over every shard."""
        return clickhouse.reader(Settings.from_env())

    def get_server_clients(self) -> list[tuple[str, Client]]:
        """(label, client) of each server that per-shard writes go to (``topology.servers``): every shard of the
        local cluster set up in this state directory, one server per shard of a real cluster, else the configured
        server alone (label "")."""
        from metrics_platform.stack import topology

        return [(label, clickhouse.client(s.clickhouse)) for label, s in topology.servers(Settings.from_env())]


class KafkaResource(dg.ConfigurableResource):
    """Kafka clients; SASL/TLS properties come from METRICS_PLATFORM_KAFKA_PROP_* variables."""

    def admin(self) -> AdminClient:
        return kafka_clients.admin(Settings.from_env().kafka)

    def producer(self, **extra: object) -> Producer:
        return kafka_clients.producer(Settings.from_env().kafka, **extra)

    def consumer(self, group_id: str, **extra: object) -> Consumer:
        return kafka_clients.consumer(Settings.from_env().kafka, group_id, **extra)


class AlertsResource(dg.ConfigurableResource):
    """Slack-compatible webhook alerts; without a URL they go to the log."""

    webhook_url: str = ""

    def send(self, alert: alerts.Alert, log: dg.DagsterLogManager | None = None) -> bool:
        posted = alerts.send(alert, self.webhook_url or None)
        if log is not None:
            log.warning(f"{alert.kind.upper()}: {alert.title}: {alert.text} ({'posted' if posted else 'log only'})")
        return posted


def resources() -> dict[str, dg.ConfigurableResource]:
    import os

    webhook = "METRICS_PLATFORM_ALERT_WEBHOOK_URL"
    return {
        "platform": PlatformSettings(),
        "clickhouse": ClickHouseResource(),
        "kafka": KafkaResource(),
        # EnvVar keeps the URL (often a secret) out of the UI; it is optional, hence the check.
        "alerts": AlertsResource(webhook_url=dg.EnvVar(webhook) if os.environ.get(webhook) else ""),
    }
