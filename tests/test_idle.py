"""The idle-footprint levers that can be checked without timing a whole stack (bench/idle.py measures that)."""

from __future__ import annotations

import json
import subprocess
import sys

from metrics_platform.stack import kafka_broker

# A fresh interpreter: the test session itself may have imported pandas already.
_INSERT_THEN_LIST_MODULES = """
import datetime, json, sys
from metrics_platform import clickhouse
from metrics_platform.settings import Settings

ch = clickhouse.client(Settings.from_env().clickhouse)
now = datetime.datetime.now(datetime.UTC)
columns = ["ts", "metric", "label", "value"]
ch.insert("pipeline_health_samples", [[now, "test_idle_probe", "lists", 1.0]], column_names=columns)
rows = ch.query("SELECT count() FROM pipeline_health_samples WHERE metric = 'test_idle_probe'").result_rows
print(json.dumps({"rows": rows[0][0], "loaded": sorted(m for m in ("pandas", "numpy", "pyarrow") if m in sys.modules)}))
"""


def test_inserting_lists_does_not_load_pandas(stack):
    """A long-lived process that inserts rows (the Dagster code server's sensors) stays without pandas, numpy and
    pyarrow (~80 MB), and the rows are stored."""
    result = subprocess.run([sys.executable, "-c", _INSERT_THEN_LIST_MODULES], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["loaded"] == []
    assert outcome["rows"] >= 1


def test_embedded_server_runs_with_the_idle_settings(stack, ch):
    """The running embedded server took the settings that keep its idle work slow."""
    if not stack.clickhouse.embedded:
        return
    values = dict(
        ch.query(
            "SELECT name, value FROM system.server_settings "
            "WHERE name IN ('memory_worker_period_ms', 'asynchronous_metrics_update_period_s')"
        ).result_rows
    )
    assert values == {"memory_worker_period_ms": "1000", "asynchronous_metrics_update_period_s": "60"}


def test_broker_runs_with_small_thread_pools(stack):
    """The running broker took the idle overrides (one network thread, two request handlers)."""
    from confluent_kafka.admin import ConfigResource

    from metrics_platform.kafka_clients import admin

    if not stack.kafka.embedded:
        return
    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    client = admin(stack.kafka)  # kept alive until the future resolves
    config = client.describe_configs([resource])[resource].result(timeout=10)
    for name in ("num.network.threads", "num.io.threads", "background.threads"):
        assert config[name].value == kafka_broker.IDLE_OVERRIDES[name], name
