"""metrics_platform: a self-hostable metrics pipeline for AI agents.

OTLP spans -> OpenTelemetry Collector -> Kafka -> ClickHouse, operated from Dagster.
"""

__version__ = "0.1.0"
