"""Dashboards as code: definitions in deploy/superset/dashboards/*.yaml, provisioned into Superset."""
