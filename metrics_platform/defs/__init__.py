"""Dagster objects only: assets, checks, jobs, schedules, sensors and their resources.

Each submodule exposes ``defs``; ``metrics_platform.definitions`` merges them. Nothing here has
side effects at import time.
"""
