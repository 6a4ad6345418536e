"""Alert rules as code: the rules file, burn rates, anomaly scores, alert state and notifications.

rules.py reads and checks the rules file; burn.py, anomaly.py, evaluate.py and state.py are pure
decisions over plain data; gather.py asks ClickHouse and Kafka for that data; notify.py delivers
transitions; store.py keeps history and status in ClickHouse. The Dagster sensor in
metrics_platform/defs/alerts.py ties them together.
"""
