"""Superset settings for the Compose pilot (mounted at /app/pythonpath/superset_config.py).

Everything secret or host-specific comes from the environment (.env via docker-compose.yml). The
platform's alerts run in Dagster, so there is no Celery worker or Redis: caches are per process.
"""

import os
from urllib.parse import quote


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(f"{name} must be set (see deploy/compose/.env.example)")
    return value


SECRET_KEY = _required("SUPERSET_SECRET_KEY")
SQLALCHEMY_DATABASE_URI = "postgresql+psycopg2://{user}:{password}@{host}:{port}/{db}".format(
    user=quote(os.environ.get("SUPERSET_PG_USER", "superset"), safe=""),
    password=quote(_required("SUPERSET_PG_PASSWORD"), safe=""),
    host=os.environ.get("SUPERSET_PG_HOST", "postgres"),
    port=os.environ.get("SUPERSET_PG_PORT", "5432"),
    db=os.environ.get("SUPERSET_PG_DB", "superset"),
)

# No Redis in the pilot: a per-process cache is enough for a few analysts.
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 300}
DATA_CACHE_CONFIG = CACHE_CONFIG

# Behind the authenticating reverse proxy (docs/runbook.md), trust its X-Forwarded-* headers.
ENABLE_PROXY_FIX = True
SESSION_COOKIE_SECURE = os.environ.get("SUPERSET_COOKIE_SECURE", "false") == "true"  # true once served over HTTPS
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
